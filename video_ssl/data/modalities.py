"""The modality table: for each input modality a view may ask for ("rgb", "flow",
"audio"), how a record stores it, what an encoder takes, and what training does to it.

Every module that needs the list of modalities or a fact about one reads it here
(`MODALITIES[name].channels`, `channels(name)`, `get(name)`), so adding a modality
starts with one entry below, then the code that reads and cuts it: the parser
(`schema.parse_sequence_example`), the clips (`clips`) and, for RGB-like input, the
augmentation (`augment`). The record keys each modality adds to the schema are
defined here and re-exported by `schema`, which holds the shared ones (label,
filename, frame rate). Pure Python: importing it loads nothing else.
"""
from __future__ import annotations

import dataclasses

# Each modality's record keys (schema.py re-exports them beside the shared ones).
FRAMES = "image/encoded"  # feature list: one RGB JPEG per frame
HEIGHT = "image/height"
WIDTH = "image/width"
WAVEFORM = "WAVEFORM/feature/floats"  # feature list: ONE feature, the whole mono waveform
SAMPLE_RATE = "WAVEFORM/feature/sample_rate"
FLOW = "FORWARD_FLOW/image/encoded"  # feature list: one (dx, dy, 128) JPEG per frame pair
FLOW_BOUND = "FORWARD_FLOW/flow_bound"


@dataclasses.dataclass(frozen=True)
class Modality:
    """One input modality.

    channels: the last axis of its clips and of its encoder's input; input_rank: the
    rank of that input, batch axis included ((B, T, H, W, C) = 5, log-mel
    (B, frames, mel_bins, 1) = 4).
    feature_list / context: the record's feature list holding it and the context keys
    read with it; parsed: the key `schema.parse_sequence_example` returns the feature
    list under. frames: stored as one JPEG per frame, decoded inside each clip's crop
    box into (T, H, W, C) clips; else a waveform, cut under each clip and made log-mel
    (`AudioSpec`).
    augmentations: what training does to a clip after cutting it ("crop": the view's
    crop box, "flip": the clip's horizontal flip, "photometric": the rest of
    `AugmentSpec`). normalization: how its values reach the encoder.
    """
    name: str
    channels: int
    input_rank: int
    feature_list: str
    context: tuple[str, ...]
    parsed: str
    frames: bool
    augmentations: tuple[str, ...]
    normalization: str


MODALITIES = {m.name: m for m in (
    Modality("rgb", channels=3, input_rank=5, feature_list=FRAMES, context=(HEIGHT, WIDTH),
             parsed="frames", frames=True, augmentations=("crop", "flip", "photometric"),
             normalization="(x / 255 - mean) / std, `AugmentSpec`'s normalize, mean and std"),
    # The flip mirrors the clip and negates dx, so the flow stays the mirrored motion.
    # `AugmentSpec.flow_photometric` / `flow_flip_negates_dx` give CoCLR's official
    # variant (colour ops on the flow JPEG's values, dx kept on a flip).
    Modality("flow", channels=2, input_rank=5, feature_list=FLOW, context=(FLOW_BOUND,),
             parsed="flow", frames=True, augmentations=("crop", "flip"),
             normalization="none: (dx, dy) in pixels within +-flow_bound"),
    Modality("audio", channels=1, input_rank=4, feature_list=WAVEFORM, context=(SAMPLE_RATE,),
             parsed="waveform", frames=False, augmentations=(),
             normalization="log(log_scale * mel + log_offset), `AudioSpec`'s settings"),
)}
# The modalities, in the order a view's outputs and a record's parse list them.
NAMES = tuple(MODALITIES)


def get(name: str) -> Modality:
    """The table's entry for `name`, or a ValueError naming the known ones."""
    if name not in MODALITIES:
        raise ValueError(f"modality {name!r}: expected one of {NAMES}")
    return MODALITIES[name]


def channels(name: str) -> int:
    """The channels of `name`'s clips (its encoder's `input_channels`)."""
    return get(name).channels
