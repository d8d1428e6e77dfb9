"""SavedModel export: `python -m video_ssl.export --model_dir=D --output=OUT`.

`model_dir` is either a training run's directory (the backbone of its newest
checkpoint, or of `--checkpoint`, with the training clip shape and normalization) or
the `eval_NAME/` directory of a `video_ssl.evaluate` linear probe or fine-tuning run
(its `model.keras`: backbone + classifier, with the test clips recorded in
`eval_NAME.json` beside it). OUT is a SavedModel that `tf.saved_model.load` serves
alone, with three signatures:

| signature | input | preprocessing inside |
|---|---|---|
| `serving_default` = `serve` | `frames` (B, T, H, W, 3) float32, clips cut and normalized as in training | none |
| `serve_uint8` | `frames` (B, T, H, W, 3) uint8, any H, W | resize the short side, centre crop to the trained crop size, scale to [0, 1], normalize with the trained mean/std |
| `serve_sequence_examples` | `serialized` (B,) string SequenceExamples | parse, sample `num_clips` uniformly spaced clips of the trained num_frames x frame_stride, decode only their JPEGs, centre crop, normalize |

Each returns `features` (B, D) and, with a classifier, `logits` (B, K) and
`probabilities` (B, K). Over several clips (`--num_clips`) features and logits are
averaged, and probabilities are the mean of the per-clip softmaxes. The preprocessing
is the evaluation input pipeline's own (`video_ssl.data.pipeline`), and
`assets.extra/video_ssl.json` records its settings. OUT is written under a temporary
name and renamed when complete; an existing OUT is replaced only with `--overwrite`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import pkgutil
import sys
from typing import Mapping, Sequence

import video_ssl  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
import keras
import tensorflow as tf

from video_ssl.data import augment, reader
from video_ssl.data import clips as clips_lib, views as views_lib
from video_ssl.models import backbones as backbones_package
from video_ssl.pretrained import load_backbone

SIGNATURES = ("serve", "serve_uint8", "serve_sequence_examples")
# `make_dataset` arguments that shape the clips a model was trained on (and the
# evaluation crop's short side)...
CLIP_KEYS = ("num_frames", "frame_stride", "crop_size", "target_fps", "short_side")
# ... and that normalize them (`augment.augment_clip` keywords).
NORMALIZATION_KEYS = ("normalize", "mean", "std")
_NORMALIZATION_DEFAULTS = {k: inspect.signature(augment.augment_clip).parameters[k].default
                           for k in NORMALIZATION_KEYS}
METADATA = os.path.join("assets.extra", "video_ssl.json")
CLASSIFIER_FILE = "model.keras"  # what video_ssl.evaluate saves: backbone + classifier


class ExportError(ValueError):
    """A bad model directory or output path."""


def preprocessing_of(input_kwargs: Mapping) -> dict:
    """`clip` and `normalization` for `export_saved_model` from training `make_dataset`
    arguments; what they leave out takes the pipeline's defaults."""
    return {"clip": {k: v for k, v in input_kwargs.items() if k in CLIP_KEYS},
            "normalization": {k: v for k, v in input_kwargs.items() if k in NORMALIZATION_KEYS}}


def eval_view(clip: Mapping | None = None, normalization: Mapping | None = None, *,
              num_clips: int = 1) -> views_lib.ViewSpec:
    """The evaluation view (uniform clips, one centre crop) of the trained clip."""
    unknown = set(clip or {}) - set(CLIP_KEYS)
    unknown_norm = set(normalization or {}) - set(NORMALIZATION_KEYS)
    if unknown or unknown_norm:
        raise ExportError(f"unknown clip/normalization settings {sorted(unknown | unknown_norm)}; "
                          f"expected {CLIP_KEYS} and {NORMALIZATION_KEYS}")
    return views_lib.ViewSpec(num_clips=num_clips,
                              augmentation={**_NORMALIZATION_DEFAULTS, **(normalization or {})},
                              **(clip or {}))


def build_archive(backbone: keras.Model, view: views_lib.ViewSpec,
                  classifier: keras.Model | None = None) -> keras.export.ExportArchive:
    """An ExportArchive with the three signatures of the module docstring."""
    if len(backbone.input_shape) != 5 or backbone.input_shape[-1] != 3:
        raise ExportError(f"backbone {backbone.name!r} takes {backbone.input_shape}; export "
                          "supports RGB video backbones taking (B, T, H, W, 3)")
    single = dataclasses.replace(view, num_clips=1)

    def outputs(clips):
        """(B, N, T, S, S, 3) normalized clips -> outputs averaged over the N clips."""
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
    video = [None, None, None, None, 3]
    archive.add_endpoint("serve", serve, [tf.TensorSpec(video, tf.float32, name="frames")])
    archive.add_endpoint("serve_uint8", serve_uint8,
                         [tf.TensorSpec(video, tf.uint8, name="frames")])
    archive.add_endpoint("serve_sequence_examples", serve_sequence_examples,
                         [tf.TensorSpec([None], tf.string, name="serialized")])
    return archive


def export_saved_model(backbone: keras.Model, output: str, *, clip: Mapping | None = None,
                       normalization: Mapping | None = None,
                       classifier: keras.Model | None = None, num_clips: int = 1,
                       overwrite: bool = False, source: Mapping | None = None) -> str:
    """Writes the SavedModel of `backbone` (and `classifier`, features -> logits) to
    `output` and returns its path. clip: `CLIP_KEYS` as trained; normalization:
    `NORMALIZATION_KEYS`; missing keys take the input pipeline's defaults. source:
    facts recorded in the metadata (e.g. the checkpoint)."""
    _check_output(output, overwrite)  # before the slow tracing
    view = eval_view(clip, normalization, num_clips=num_clips)
    archive = build_archive(backbone, view, classifier)
    metadata = {
        "signatures": list(SIGNATURES),
        "outputs": ["features"] + (["logits", "probabilities"] if classifier else []),
        "clip": {k: getattr(view, k) for k in CLIP_KEYS},
        "normalization": dict(view.augmentation),
        "num_clips": num_clips,
        **({"source": dict(source)} if source else {}),
    }

    def write(directory):
        archive.write_out(directory, verbose=False)
        tf.io.gfile.makedirs(os.path.dirname(os.path.join(directory, METADATA)))
        with tf.io.gfile.GFile(os.path.join(directory, METADATA), "w") as f:
            json.dump(metadata, f, indent=1, default=str)

    write_directory_atomically(write, output, overwrite=overwrite)
    return output


def _check_output(output: str, overwrite: bool) -> None:
    if tf.io.gfile.exists(output) and not overwrite:
        raise ExportError(f"--output={output} already exists; pass --overwrite to replace it")


def write_directory_atomically(write, directory: str, *, overwrite: bool) -> None:
    """write(tmp) then a rename, so `directory` is never half-written and a failed
    write leaves nothing behind; an existing `directory` is replaced only with
    `overwrite`, once the new one is complete."""
    directory = directory.rstrip("/")
    _check_output(directory, overwrite)
    tmp, old = f"{directory}.tmp", f"{directory}.old"
    for stale in (tmp, old):
        if tf.io.gfile.exists(stale):
            tf.io.gfile.rmtree(stale)
    parent = os.path.dirname(directory)
    if parent:
        tf.io.gfile.makedirs(parent)
    try:
        write(tmp)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    if tf.io.gfile.exists(directory):
        tf.io.gfile.rename(directory, old)
    tf.io.gfile.rename(tmp, directory)
    if tf.io.gfile.exists(old):
        tf.io.gfile.rmtree(old)


def split_classifier(model: keras.Model, path: str) -> tuple[keras.Model, keras.Model]:
    """(backbone, head) of a classifier clips -> backbone -> ... -> logits, the head
    mapping features to logits with the classifier's own layers."""
    backbones = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(backbones) != 1 or len(model.outputs) != 1:
        raise ExportError(f"{path}: expected a classifier with one backbone model and one "
                          f"logits output, found {len(backbones)} models and "
                          f"{len(model.outputs)} outputs")
    backbone = backbones[0]
    # The backbone's output tensor in the classifier's graph is where the head starts.
    features = backbone._inbound_nodes[0].output_tensors[0]
    return backbone, keras.Model(features, model.outputs[0], name=f"{model.name}_head")


def _load_evaluation(directory: str) -> dict:
    """`export_saved_model` arguments for `video_ssl.evaluate`'s `eval_NAME/` directory:
    its `model.keras`, with the test clips of `eval_NAME.json` beside it."""
    report_path = f"{directory.rstrip('/')}.json"
    if not tf.io.gfile.exists(report_path):
        raise ExportError(f"{report_path}: no such file (video_ssl.evaluate writes it beside "
                          f"{directory})")
    with tf.io.gfile.GFile(report_path) as f:
        report = json.load(f)
    test = report.get("settings", {}).get("inputs", {}).get("test")
    if not isinstance(test, dict):
        raise ExportError(f"{report_path}: no settings.inputs.test; expected a "
                          "video_ssl.evaluate report")
    # Backbone modules register their custom layers when imported.
    for module in pkgutil.iter_modules(backbones_package.__path__):
        importlib.import_module(f"{backbones_package.__name__}.{module.name}")
    path = os.path.join(directory, CLASSIFIER_FILE)
    backbone, head = split_classifier(keras.saving.load_model(path, compile=False), path)
    return {"backbone": backbone, "classifier": head,
            "clip": {k: v for k, v in test.items() if k in CLIP_KEYS},
            "normalization": {k: v for k, v in test.items() if k in NORMALIZATION_KEYS},
            "source": {"model": path, "checkpoint": report.get("checkpoint"),
                       "method": report.get("method"), "protocol": report.get("protocol")}}


def export_model_dir(model_dir: str, output: str, *, checkpoint: str | None = None,
                     num_clips: int = 1, overwrite: bool = False) -> str:
    """Exports a training run (its newest checkpoint, or `checkpoint`) or an evaluation
    directory holding `model.keras` (backbone + classifier) to `output`."""
    if not tf.io.gfile.isdir(model_dir):
        raise ExportError(f"--model_dir={model_dir}: no such directory")
    _check_output(output, overwrite)  # before loading anything
    if tf.io.gfile.exists(os.path.join(model_dir, CLASSIFIER_FILE)):
        if checkpoint:
            raise ExportError(f"--checkpoint applies to training runs; {model_dir} holds "
                              f"{CLASSIFIER_FILE}")
        arguments = _load_evaluation(model_dir)
    elif tf.io.gfile.exists(os.path.join(model_dir, "operative_config.gin")):
        pretrained = load_backbone(model_dir, checkpoint)
        arguments = {"backbone": pretrained.backbone, "clip": pretrained.clip,
                     "normalization": pretrained.normalization,
                     "source": {"model_dir": model_dir, "checkpoint": pretrained.checkpoint_path,
                                "method": pretrained.method_name}}
    else:
        raise ExportError(f"--model_dir={model_dir}: neither a training run (no "
                          f"operative_config.gin) nor an evaluation directory (no "
                          f"{CLASSIFIER_FILE})")
    return export_saved_model(output=output, num_clips=num_clips, overwrite=overwrite,
                              **arguments)


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m video_ssl.export",
        description="Export a trained backbone (and classifier) as a SavedModel.")
    parser.add_argument("--model_dir", required=True,
                        help="a training model_dir, or an evaluation directory with model.keras")
    parser.add_argument("--output", required=True, help="SavedModel directory to write")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint prefix in a training model_dir (default: the newest)")
    parser.add_argument("--num_clips", type=int, default=1,
                        help="uniformly spaced clips per video in serve_sequence_examples")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if args.num_clips < 1:
        parser.error(f"--num_clips={args.num_clips}: expected at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    try:
        path = export_model_dir(args.model_dir, args.output, checkpoint=args.checkpoint,
                                num_clips=args.num_clips, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as error:
        print(f"video_ssl.export: error: {error}", file=sys.stderr)
        return 1
    print(f"Exported {path} (signatures: {', '.join(SIGNATURES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
