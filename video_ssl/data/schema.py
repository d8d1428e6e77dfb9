"""The TFRecord schema (DMVR / Model Garden compatible): key names, writer and parser.

One `tf.train.SequenceExample` per video. This module is where the key names are
read from: the shared ones are defined here, each modality's own in its entry of the
modality table (`modalities`), re-exported here; the converter, the demo generator,
the flow tool and the reader all go through it. The parser asks only for the keys a
caller needs, so files written by DMVR's or the Model Garden's tools (which lack
some of our optional keys) parse too.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from video_ssl.data import modalities as modalities_lib
# Each modality's own keys: the context keys it reads and its feature list.
from video_ssl.data.modalities import (  # noqa: F401 (re-exported)
    FLOW, FLOW_BOUND, FRAMES, HEIGHT, SAMPLE_RATE, WAVEFORM, WIDTH)

# The shared context keys.
LABEL_INDEX = "clip/label/index"
LABEL_TEXT = "clip/label/text"
FILENAME = "video/filename"
# The source video a clip was cut from (UCF101's `<Class>_g<GG>`, a Kinetics YouTube id):
# records sharing it are clips of one video. Optional; absent, a record is its own video.
SOURCE_ID = "video/source_id"
FRAME_RATE = "image/frame_rate"

# Defaults for keys that other writers may leave out. DMVR's converter stores no
# frame rate (it resamples to a fixed fps, 10 by default, configurable); callers can
# override these through `parse_sequence_example(..., defaults=...)`.
DEFAULT_FRAME_RATE = 25.0
DEFAULT_SAMPLE_RATE = 48000.0
DEFAULT_FLOW_BOUND = 20.0  # pixels; CoCLR's TV-L1 clipping bound


def make_sequence_example(
    frames: Sequence[bytes],
    *,
    label: int | Sequence[int] | None = None,
    label_text: str | None = None,
    filename: str | None = None,
    source_id: str | None = None,
    frame_rate: float | None = None,
    height: int | None = None,
    width: int | None = None,
    waveform: np.ndarray | None = None,
    sample_rate: float | None = None,
    flow_frames: Sequence[bytes] | None = None,
    flow_bound: float | None = None,
) -> tf.train.SequenceExample:
    """Builds one video's SequenceExample.

    frames: one encoded JPEG per frame (none for an audio-only record, e.g. ESC-50:
    no `image/encoded` then). waveform: mono float samples in [-1, 1],
    stored as ONE feature holding the whole waveform (DMVR layout). flow_frames: one
    JPEG per frame pair holding (dx, dy, 128), scaled from +-flow_bound to 0-255.
    source_id: the video the clip was cut from (`video/source_id`); None or "" writes
    no key.
    """
    if not frames and waveform is None:
        raise ValueError(f"{filename or 'video'}: no frames or waveform to write")
    ex = tf.train.SequenceExample()
    ctx = ex.context.feature
    if label is not None:
        labels = [label] if isinstance(label, (int, np.integer)) else list(label)
        ctx[LABEL_INDEX].int64_list.value.extend(int(v) for v in labels)
    if label_text is not None:
        ctx[LABEL_TEXT].bytes_list.value.append(label_text.encode())
    if filename is not None:
        ctx[FILENAME].bytes_list.value.append(filename.encode())
    if source_id:
        ctx[SOURCE_ID].bytes_list.value.append(source_id.encode())
    if frame_rate is not None:
        ctx[FRAME_RATE].float_list.value.append(float(frame_rate))
    if height is not None:
        ctx[HEIGHT].int64_list.value.append(int(height))
    if width is not None:
        ctx[WIDTH].int64_list.value.append(int(width))
    lists = ex.feature_lists.feature_list
    if frames:
        _append_bytes(lists[FRAMES], frames)
    if waveform is not None:
        waveform = np.asarray(waveform, np.float32).reshape(-1)
        if sample_rate is None:
            raise ValueError(f"{filename or 'video'}: waveform given without sample_rate")
        ctx[SAMPLE_RATE].float_list.value.append(float(sample_rate))
        lists[WAVEFORM].feature.add().float_list.value.extend(waveform.tolist())
    if flow_frames is not None:
        ctx[FLOW_BOUND].float_list.value.append(float(flow_bound or DEFAULT_FLOW_BOUND))
        _append_bytes(lists[FLOW], flow_frames)
    return ex


def _append_bytes(feature_list, values: Iterable[bytes]) -> None:
    for v in values:
        feature_list.feature.add().bytes_list.value.append(v)


def parse_sequence_example(
    serialized: tf.Tensor,
    modalities: Sequence[str] = ("rgb",),
    defaults: dict | None = None,
) -> dict[str, tf.Tensor]:
    """Parses one serialized SequenceExample into a dict of still-encoded tensors.

    Always returns: "label" int32 (first `clip/label/index`, -1 when absent),
    "label_text", "filename", "source_id" (empty when absent), "frame_rate" float32.
    Per modality asked for: "rgb" -> "frames" string (N,), "height", "width" int32
    (-1 when absent); "audio" -> "waveform" float32 (S,), "sample_rate";
    "flow" -> "flow" string (N-1,), "flow_bound". A modality whose feature list is
    absent comes back empty; the caller decides whether that is an error (it knows
    the shard's name).
    """
    unknown = set(modalities) - set(modalities_lib.NAMES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; expected a subset of "
                         f"{modalities_lib.NAMES}")
    d = {"frame_rate": DEFAULT_FRAME_RATE, "sample_rate": DEFAULT_SAMPLE_RATE,
         "flow_bound": DEFAULT_FLOW_BOUND, **(defaults or {})}
    context = {
        LABEL_INDEX: tf.io.VarLenFeature(tf.int64),
        LABEL_TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
        FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
        SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        FRAME_RATE: tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
    }
    sequence = {}
    if "rgb" in modalities:
        context[HEIGHT] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
        context[WIDTH] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
        sequence[FRAMES] = tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
    if "audio" in modalities:
        context[SAMPLE_RATE] = tf.io.FixedLenFeature([], tf.float32, default_value=-1.0)
        sequence[WAVEFORM] = tf.io.VarLenFeature(tf.float32)
    if "flow" in modalities:
        context[FLOW_BOUND] = tf.io.FixedLenFeature([], tf.float32, default_value=-1.0)
        sequence[FLOW] = tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
    ctx, seq = tf.io.parse_single_sequence_example(
        serialized, context_features=context, sequence_features=sequence)

    labels = ctx[LABEL_INDEX].values
    out = {
        "label": tf.cond(tf.size(labels) > 0, lambda: tf.cast(labels[0], tf.int32),
                         lambda: tf.constant(-1, tf.int32)),
        "label_text": ctx[LABEL_TEXT],
        "filename": ctx[FILENAME],
        "source_id": ctx[SOURCE_ID],
        "frame_rate": _positive_or(ctx[FRAME_RATE], d["frame_rate"]),
    }
    if "rgb" in modalities:
        out["frames"] = seq[FRAMES]
        out["height"] = tf.cast(ctx[HEIGHT], tf.int32)
        out["width"] = tf.cast(ctx[WIDTH], tf.int32)
    if "audio" in modalities:
        # Values of all steps concatenated: one step in our and DMVR's files.
        out["waveform"] = seq[WAVEFORM].values
        out["sample_rate"] = _positive_or(ctx[SAMPLE_RATE], d["sample_rate"])
    if "flow" in modalities:
        out["flow"] = seq[FLOW]
        out["flow_bound"] = _positive_or(ctx[FLOW_BOUND], d["flow_bound"])
    return out


def _positive_or(value: tf.Tensor, default: float) -> tf.Tensor:
    return tf.where(value > 0, value, tf.constant(default, value.dtype))


def shard_names(prefix: str, num_shards: int) -> list[str]:
    """`PREFIX-00000-of-000NN.tfrecord` names (contract)."""
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
