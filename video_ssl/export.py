"""SavedModel export: `python -m video_ssl.export --model_dir=D --output=OUT [--encoder=NAME]`.

`model_dir` is either a training run's directory (an encoder of its newest
checkpoint, or of `--checkpoint`: the primary one unless `--encoder` names another,
with its training clip shape and normalization) or the `eval_NAME/` directory of a
`video_ssl.evaluate` linear probe or fine-tuning run (its `model.keras`: backbone +
classifier, with the test clips recorded in `eval_NAME.json` beside it). The
SavedModel and its signatures are `video_ssl.serving`'s; an existing OUT is replaced
only with `--overwrite`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from video_ssl import console  # no TensorFlow: --help and the quiet start come first


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = console.ArgumentParser(
        "video_ssl.export",
        description="Export a trained backbone (and classifier) as a SavedModel.")
    parser.add_argument("--model_dir", required=True,
                        help="a training model_dir, or an evaluation directory with model.keras")
    parser.add_argument("--output", required=True, help="SavedModel directory to write")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint prefix in a training model_dir (default: the newest)")
    parser.add_argument("--encoder", default=None,
                        help="encoder of a training run to export (default: its primary one)")
    parser.add_argument("--num_clips", type=int, default=1,
                        help="uniformly spaced clips per video in serve_sequence_examples")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if args.num_clips < 1:
        parser.error(f"--num_clips={args.num_clips}: expected at least 1")
    return args


if __name__ == "__main__":
    console.start(parse_flags(sys.argv[1:]))  # before TensorFlow loads

# The imports below load TensorFlow.
import importlib
import json
import os
import pkgutil

import keras
import tensorflow as tf

from video_ssl import serving
from video_ssl.models import backbones as backbones_package
from video_ssl.pretrained import load_encoder
from video_ssl.serving import CLIP_KEYS, NORMALIZATION_KEYS, ExportError

CLASSIFIER_FILE = "model.keras"  # what video_ssl.evaluate saves: backbone + classifier


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
            "modality": report.get("modality", "rgb"),  # flow and audio encoders serve alone
            "clip": {k: v for k, v in test.items() if k in CLIP_KEYS},
            "normalization": {k: v for k, v in test.items() if k in NORMALIZATION_KEYS},
            "source": {"model": path, "checkpoint": report.get("checkpoint"),
                       "method": report.get("method"), "protocol": report.get("protocol")}}


def export_model_dir(model_dir: str, output: str, *, checkpoint: str | None = None,
                     encoder: str | None = None, num_clips: int = 1,
                     overwrite: bool = False) -> str:
    """Exports an encoder of a training run (its newest checkpoint, or `checkpoint`;
    the primary encoder, or `encoder`) or an evaluation directory holding
    `model.keras` (backbone + classifier) to `output`."""
    if not tf.io.gfile.isdir(model_dir):
        raise ExportError(f"--model_dir={model_dir}: no such directory")
    serving.check_output(output, overwrite)  # before loading anything
    if tf.io.gfile.exists(os.path.join(model_dir, CLASSIFIER_FILE)):
        if checkpoint or encoder:
            raise ExportError(f"--checkpoint and --encoder apply to training runs; "
                              f"{model_dir} holds {CLASSIFIER_FILE}")
        arguments = _load_evaluation(model_dir)
    elif tf.io.gfile.exists(os.path.join(model_dir, "operative_config.gin")):
        pretrained = load_encoder(model_dir, checkpoint, encoder=encoder)
        arguments = {"backbone": pretrained.backbone, "clip": pretrained.clip,
                     "normalization": pretrained.normalization,
                     "modality": pretrained.modality, "audio": pretrained.audio,
                     "flow": pretrained.flow,
                     "source": {"model_dir": model_dir, "checkpoint": pretrained.checkpoint_path,
                                "method": pretrained.method_name,
                                "encoder": pretrained.encoder}}
    else:
        raise ExportError(f"--model_dir={model_dir}: neither a training run (no "
                          f"operative_config.gin) nor an evaluation directory (no "
                          f"{CLASSIFIER_FILE})")
    return serving.export_saved_model(output=output, num_clips=num_clips, overwrite=overwrite,
                                      **arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """Any failure is one line `video_ssl.export: error: ...` and exit code 1 (see
    `console.run`)."""
    return console.run("video_ssl.export", _main,
                       parse_flags(sys.argv[1:] if argv is None else argv))


def _main(args: argparse.Namespace) -> int:
    print(f"Exporting {args.model_dir} to {args.output} ...")
    path = export_model_dir(args.model_dir, args.output, checkpoint=args.checkpoint,
                            encoder=args.encoder, num_clips=args.num_clips,
                            overwrite=args.overwrite)
    print(f"Exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
