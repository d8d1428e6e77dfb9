"""SavedModels of trained encoders, the library behind `python -m video_ssl.export`
and the trainer's `model_dir/export/`.

An RGB encoder's SavedModel serves alone (`tf.saved_model.load`) with three
signatures:

| signature | input | preprocessing inside |
|---|---|---|
| `serving_default` = `serve` | `frames` (B, T, H, W, 3) float32, clips cut and normalized as in training | none |
| `serve_uint8` | `frames` (B, T, H, W, 3) uint8, any H, W | resize the short side, centre crop to the trained crop size, scale to [0, 1], normalize with the trained mean/std |
| `serve_sequence_examples` | `serialized` (B,) string SequenceExamples | parse, sample `num_clips` uniformly spaced clips of the trained num_frames x frame_stride, decode only their JPEGs, centre crop, normalize |

A flow or audio encoder gets `serve` alone (its input as in training: flow clips
(B, T, H, W, 2) in pixels, log-mel (B, frames, bins, 1)).

Each returns `features` (B, D) and, with a classifier, `logits` (B, K) and
`probabilities` (B, K). Over several clips (`num_clips`) features and logits are
averaged, and probabilities are the mean of the per-clip softmaxes. The preprocessing
is the evaluation input pipeline's own (`video_ssl.data`), and
`assets.extra/video_ssl.json` records its settings. The output is written under a
temporary name and renamed when complete (`video_ssl.atomic`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import keras
import tensorflow as tf

from video_ssl import atomic
from video_ssl.data import clips as clips_lib, modalities, reader, views as views_lib

SIGNATURES = ("serve", "serve_uint8", "serve_sequence_examples")
# `make_dataset` arguments that shape the clips a model was trained on (and the
# evaluation crop's short side)...
CLIP_KEYS = ("num_frames", "frame_stride", "crop_size", "target_fps", "short_side")
# ... and that normalize them (`AugmentSpec` fields).
NORMALIZATION_KEYS = ("normalize", "mean", "std")
METADATA = os.path.join("assets.extra", "video_ssl.json")


class ExportError(ValueError):
    """A bad model directory or output path."""


def eval_view(clip: Mapping | None = None, normalization: Mapping | None = None, *,
              num_clips: int = 1) -> views_lib.ViewSpec:
    """The evaluation view (uniform clips, one centre crop) of the trained clip."""
    unknown = set(clip or {}) - set(CLIP_KEYS)
    unknown_norm = set(normalization or {}) - set(NORMALIZATION_KEYS)
    if unknown or unknown_norm:
        raise ExportError(f"unknown clip/normalization settings {sorted(unknown | unknown_norm)}; "
                          f"expected {CLIP_KEYS} and {NORMALIZATION_KEYS}")
    return views_lib.ViewSpec(num_clips=num_clips,
                              augmentation=views_lib.AugmentSpec(**(normalization or {})),
                              **(clip or {}))


def build_archive(backbone: keras.Model, view: views_lib.ViewSpec,
                  classifier: keras.Model | None = None, *,
                  modality: str = "rgb") -> keras.export.ExportArchive:
    """An ExportArchive with the signatures of the module docstring: all three for an
    RGB encoder, `serve` alone for flow and audio encoders."""
    if modality not in modalities.NAMES:
        raise ExportError(f"modality={modality!r}: expected one of {modalities.NAMES}")
    rgb = modality == "rgb"
    if rgb and (len(backbone.input_shape) != 5 or backbone.input_shape[-1] != 3):
        raise ExportError(f"backbone {backbone.name!r} takes {backbone.input_shape}; an RGB "
                          "encoder takes (B, T, H, W, 3)")
    single = dataclasses.replace(view, num_clips=1)

    def outputs(clips):
        """(B, N, ...) normalized clips -> outputs averaged over the N clips."""
        shape = tf.shape(clips)
        features = backbone(tf.reshape(clips, tf.concat([[-1], shape[2:]], 0)), training=False)

        def per_video(x):
            x = tf.reshape(x, tf.concat([shape[:2], tf.shape(x)[-1:]], 0))
            return tf.reduce_mean(x, axis=1)

        out = {"features": per_video(features)}
        if classifier is not None:
            logits = classifier(features, training=False)
            out["logits"] = per_video(logits)
            out["probabilities"] = per_video(tf.nn.softmax(logits))
        return out

    def serve(frames):
        return outputs(frames[:, None])

    def serve_uint8(frames):
        shape = tf.shape(frames)
        flat = tf.reshape(frames, tf.concat([[-1], shape[2:]], 0))
        crops = clips_lib.eval_rgb_crops(single, tf.cast(flat, tf.float32) / 255.0, shape[0])
        return outputs(crops[:, None])

    def serve_sequence_examples(serialized):
        def clips(example):
            features = reader.parse_example(example, "serve_sequence_examples input", ("rgb",))
            # Evaluation sampling is deterministic: the seed is unused.
            views = clips_lib.sample_and_decode(features, tf.zeros([2], tf.int64), [view],
                                                training=False)
            return views[0]["rgb"]

        size = view.crop_size
        spec = tf.TensorSpec([view.num_clips, view.num_frames, size, size, 3], tf.float32)
        return outputs(tf.map_fn(clips, serialized, fn_output_signature=spec))

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    if classifier is not None:
        archive.track(classifier)
    shape = [None] * (len(backbone.input_shape) - 1) + [backbone.input_shape[-1]]
    archive.add_endpoint("serve", serve, [tf.TensorSpec(shape, tf.float32, name="frames")])
    if not rgb:
        return archive
    video = [None, None, None, None, 3]
    archive.add_endpoint("serve_uint8", serve_uint8,
                         [tf.TensorSpec(video, tf.uint8, name="frames")])
    archive.add_endpoint("serve_sequence_examples", serve_sequence_examples,
                         [tf.TensorSpec([None], tf.string, name="serialized")])
    return archive


def export_saved_model(backbone: keras.Model, output: str, *, clip: Mapping | None = None,
                       normalization: Mapping | None = None,
                       classifier: keras.Model | None = None, num_clips: int = 1,
                       overwrite: bool = False, source: Mapping | None = None,
                       modality: str = "rgb", audio: views_lib.AudioSpec | None = None,
                       flow: Mapping | None = None) -> str:
    """Writes the SavedModel of `backbone` (and `classifier`, features -> logits) to
    `output` and returns its path. clip: `CLIP_KEYS` as trained; normalization:
    `NORMALIZATION_KEYS`; missing keys take the input pipeline's defaults. source:
    facts recorded in the metadata (e.g. the checkpoint). modality: what the encoder
    takes ("rgb", "flow", "audio"); audio: an audio encoder's log-mel settings, flow: a
    flow encoder's flow settings (`optical_flow.SETTINGS_KEYS`), recorded so that
    features can be extracted from video files (`video_ssl.extract`)."""
    check_output(output, overwrite)  # before the slow tracing
    view = eval_view(clip, normalization, num_clips=num_clips)
    archive = build_archive(backbone, view, classifier, modality=modality)
    metadata = {
        "signatures": list(SIGNATURES if modality == "rgb" else SIGNATURES[:1]),
        "modality": modality,
        "outputs": ["features"] + (["logits", "probabilities"] if classifier else []),
        "clip": {k: getattr(view, k) for k in CLIP_KEYS},
        "normalization": {k: getattr(view.augmentation, k) for k in NORMALIZATION_KEYS},
        "num_clips": num_clips,
        **({"audio": dataclasses.asdict(audio)} if audio else {}),
        **({"flow": dict(flow)} if flow else {}),
        **({"source": dict(source)} if source else {}),
    }

    def write(directory):
        archive.write_out(directory, verbose=False)
        tf.io.gfile.makedirs(os.path.dirname(os.path.join(directory, METADATA)))
        with tf.io.gfile.GFile(os.path.join(directory, METADATA), "w") as f:
            json.dump(metadata, f, indent=1, default=str)

    atomic.write_directory(output, write, overwrite=overwrite)
    return output


def check_output(output: str, overwrite: bool) -> None:
    if tf.io.gfile.exists(output) and not overwrite:
        raise ExportError(f"--output={output} already exists; pass --overwrite to replace it")
