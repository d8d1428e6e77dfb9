"""torchvision's Kinetics-400 video models (`torchvision.models.video`), as their
released weights are: a plain `state_dict` saved with `torch.save` (`.pth`).

Architectures (the keys tell, `--encoder` may name one): `r2plus1d_18` -> our
`r2plus1d_18(mid_channels_rule="torchvision")`, `s3d` -> our `s3d(bn_epsilon=1e-3)`
(torchvision's BatchNorm: eps 1e-3; ours, CoCLR's, 1e-5). Other torchvision video
models (r3d_18, mc3_18, MViT, Swin3D) have no backbone here.
The 400-way classifier (`fc`, `classifier.1`) is left out: no method's head has its
structure; evaluations train their own. Pooled features: global average of the last
map, which is the input of torchvision's r2plus1d_18 classifier; torchvision's S3D
averages 2x7x7 windows with stride 1 before its classifier and then the window logits,
which equals the global average only for a 2x7x7 map (16 frames at 224x224).

The run: an InfoNCE run (`infonce_rgb.gin`: a single-encoder RGB method whose recipe
takes the backbone from its BACKBONE macros) with the encoder "rgb"; its projection
head starts random (the file has none). The input, from torchvision's reference recipe
(references/video_classification/README.md) and the weights' `transforms` (`_presets.
VideoClassification`): frames at 15 fps, values in [0, 1] normalized with the Kinetics
mean and std below; r2plus1d_18: 16 frames, resized to 128x171, 112x112 crops; s3d: 64
frames in training (128 for torchvision's accuracy figure), resized to 256x256,
224x224 crops. Our evaluation resizes the short side (aspect kept) to `short_side`.
"""
from __future__ import annotations

import functools

import numpy as np

from video_ssl.importing import s3d_layout, torch_file
from video_ssl.importing.run import Converted
from video_ssl.importing.torch_layers import (BATCHES_TRACKED, BATCHES_TRACKED_REASON,
                                              KerasWeights, is_tensor, keras_shapes)
from video_ssl.importing.weights import ImportFailure, SourceTensors

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# Backbone kwargs and input of each architecture (see the module).
ARCHITECTURES = {
    "r2plus1d_18": {"kwargs": {"mid_channels_rule": "torchvision"}, "num_frames": 16,
                    "crop_size": 112, "short_side": 128},
    "s3d": {"kwargs": {"bn_epsilon": 1e-3}, "num_frames": 64, "crop_size": 224,
            "short_side": 256},
}
# A key only each architecture's state_dict has.
SIGNATURES = {"r2plus1d_18": "stem.3.weight", "s3d": "features.15.branch0.0.weight"}
CLASSIFIER_REASON = "the Kinetics-400 classifier: no method's head has its structure"

# Our S3D block -> index in torchvision's `S3D.features`.
_S3D_FEATURES = {"conv1a": 0, "conv2b": 2, "conv2c": 3, "mixed3b": 5, "mixed3c": 6,
                 "mixed4b": 8, "mixed4c": 9, "mixed4d": 10, "mixed4e": 11, "mixed4f": 12,
                 "mixed5b": 14, "mixed5c": 15}
# A unit's Conv3dNormActivation under its block (its .0 the conv, .1 the BatchNorm):
# TemporalSeparableConv's .0 (spatial) and .1 (temporal), the block itself (conv2b),
# the SepInceptionBlock3D branches.
_S3D_PARTS = {"spatial": ".0", "temporal": ".1", None: "", "b0": ".branch0",
              "b1a": ".branch1.0", "b1b_spatial": ".branch1.1.0", "b1b_temporal": ".branch1.1.1",
              "b2a": ".branch2.0", "b2b_spatial": ".branch2.1.0", "b2b_temporal": ".branch2.1.1",
              "b3b": ".branch3.1"}


def convert(path: str, *, encoder: str | None = None) -> Converted:
    """The run of `path` (see the module); `encoder`: the architecture ("r2plus1d_18" or
    "s3d"; default: the one the keys show)."""
    state = torch_file.load(path)
    if not isinstance(state, dict) or not state or not all(map(is_tensor, state.values())):
        raise ImportFailure(f"{path}: not a torchvision state_dict (expected a dict of "
                            "tensors, as torch.save(model.state_dict()) writes)")
    architecture = _architecture(path, state, encoder)
    source = SourceTensors(path, state)
    shapes = _shapes(architecture)
    weights = (_r2plus1d if architecture == "r2plus1d_18" else _s3d)(source, shapes)
    source.drop(r"^(fc|classifier)\.", CLASSIFIER_REASON)
    source.drop(rf"\.{BATCHES_TRACKED}$", BATCHES_TRACKED_REASON)
    spec = ARCHITECTURES[architecture]
    bindings = [f"BACKBONE = '{architecture}'", f"BACKBONE_KWARGS = {spec['kwargs']}",
                f"train_input.num_frames = {spec['num_frames']}", "train_input.frame_stride = 1",
                "train_input.target_fps = 15.0", f"train_input.crop_size = {spec['crop_size']}",
                f"train_input.short_side = {spec['short_side']}",
                f"train_input.mean = {KINETICS_MEAN}", f"train_input.std = {KINETICS_STD}"]
    return Converted(format="torchvision", source=source, method="InfoNCE",
                     gin_files=["gin_configs/infonce_rgb.gin"], bindings=bindings,
                     encoders={"rgb": weights},
                     description=f"torchvision's {architecture} (Kinetics-400 classifier "
                                 "left out)")


def _architecture(path: str, state: dict, encoder: str | None) -> str:
    found = [name for name, key in SIGNATURES.items() if key in state]
    if encoder is not None:
        if encoder not in ARCHITECTURES:
            raise ImportFailure(f"--encoder={encoder}: expected a torchvision architecture, "
                                f"one of {sorted(ARCHITECTURES)}")
        if found and found != [encoder]:
            raise ImportFailure(f"{path}: --encoder={encoder}, but the file holds "
                                f"{found[0]}'s tensors")
        return encoder
    if len(found) != 1:
        raise ImportFailure(f"{path}: an architecture with no backbone here (keys "
                            f"{sorted(state)[:3]} ...); expected torchvision's "
                            f"{' or '.join(sorted(ARCHITECTURES))} (r3d_18, mc3_18, MViT and "
                            "Swin3D are not supported)")
    return found[0]


@functools.cache
def _shapes(architecture: str) -> dict[str, tuple]:
    from video_ssl.models import build_backbone
    return keras_shapes(build_backbone(architecture, **ARCHITECTURES[architecture]["kwargs"]))


def _s3d(source: SourceTensors, shapes) -> dict[str, np.ndarray]:
    weights = KerasWeights(source, shapes)
    for layer, block, part in s3d_layout.units():
        module = f"features.{_S3D_FEATURES[block]}{_S3D_PARTS[part]}"
        weights.conv(f"{module}.0.weight", layer)
        weights.batch_norm(f"{module}.1", f"{layer}_bn")
    return weights.weights


def _r2plus1d(source: SourceTensors, shapes) -> dict[str, np.ndarray]:
    """torchvision's VideoResNet with R2Plus1dStem and Conv2Plus1D basic blocks: stem
    (conv, BN, ReLU, conv, BN, ReLU); layer1..4 = our res2..res5; in a block, convN.0 is
    the Conv2Plus1D (0 spatial conv, 1 its BN, 3 temporal conv), convN.1 the block's BN;
    downsample (conv, BN) the shortcut."""
    weights = KerasWeights(source, shapes)
    for index, layer in ((0, "conv1_spatial"), (3, "conv1_temporal")):
        weights.conv(f"stem.{index}.weight", layer)
        weights.batch_norm(f"stem.{index + 1}", f"{layer}_bn")
    for stage in range(2, 6):
        for block in range(2):
            module, layer = f"layer{stage - 1}.{block}", f"res{stage}_{block}"
            for conv in ("conv1", "conv2"):
                weights.conv(f"{module}.{conv}.0.0.weight", f"{layer}_{conv}_spatial")
                weights.batch_norm(f"{module}.{conv}.0.1", f"{layer}_{conv}_spatial_bn")
                weights.conv(f"{module}.{conv}.0.3.weight", f"{layer}_{conv}_temporal")
                weights.batch_norm(f"{module}.{conv}.1", f"{layer}_{conv}_bn")
            if f"{layer}_shortcut/kernel" in shapes:
                weights.conv(f"{module}.downsample.0.weight", f"{layer}_shortcut")
                weights.batch_norm(f"{module}.downsample.1", f"{layer}_shortcut_bn")
    return weights.weights
