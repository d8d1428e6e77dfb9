"""Evaluation of a pre-trained backbone:

    python -m video_ssl.evaluate --gin_file=gin_configs/eval/<protocol>.gin \\
        [--gin_file=F2 ...] [--gin_param=P ...] --checkpoint=MODEL_DIR \\
        [--encoder=NAME] [--random_init] [--output_dir=DIR]

MODEL_DIR is a `video_ssl.train` model_dir: its operative config says how to build the
encoder (the method's primary one, or `--encoder=NAME`), its newest checkpoint gives
the weights (`--random_init`: none, the baseline). The gin files pick the protocol
(`evaluate.protocol`: @linear_probe,
@finetune, @retrieval, @linear_svm from `video_ssl.evaluation`), its settings, the
labeled splits (`evaluate.train_files`, `evaluate.test_files`) and the clips
(`eval_input`, scoped `train/` for augmented training clips, `test/` for test views,
`gallery/` for the retrieval gallery; the clip shape defaults to the training one).

This module only wires things together. Output, in --output_dir (default MODEL_DIR),
with NAME = `evaluate.name` (+ "_random_init" for the baseline):
  eval_NAME.json        metrics, settings, checkpoint path and step (written atomically)
  eval_NAME/confusion.png    classification protocols: row-normalized confusion matrix
  eval_NAME/test_scores.npz  classification protocols: per-video test scores ("scores",
                             videos x classes) and "labels", e.g. for two-stream fusion
                             (`video_ssl.evaluation.multiview.fuse`)
  eval_NAME/model.keras      linear probe and fine-tuning: backbone + classifier
  eval_NAME/neighbours.png   retrieval: example queries and their nearest train videos
  eval_NAME/retrieval_features.npz  retrieval: query/gallery features and labels and the
                             test x train similarity, for two-stream fusion
                             (`video_ssl.evaluation.retrieval.fused_recall`)
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from video_ssl import console  # no TensorFlow: --help and the quiet start come first


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = console.ArgumentParser(
        "video_ssl.evaluate",
        description="Evaluate a pre-trained backbone (linear probe, fine-tuning, retrieval, "
                    "linear SVM).")
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="gin config, e.g. gin_configs/eval/linear_ucf101.gin; repeat to "
                             "compose (later files override earlier)")
    parser.add_argument("--gin_param", action="append", default=[],
                        help="one gin binding, e.g. linear_probe.epochs=10; after the files")
    parser.add_argument("--checkpoint", required=True,
                        help="the training model_dir (operative_config.gin + checkpoints/)")
    parser.add_argument("--encoder", default=None,
                        help="which of the run's encoders to evaluate (default: its primary one)")
    parser.add_argument("--random_init", action="store_true",
                        help="evaluate the same backbone at random initialization (baseline)")
    parser.add_argument("--output_dir", default=None,
                        help="where eval_<name>.json and eval_<name>/ go (default: --checkpoint)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    console.start(parse_flags(sys.argv[1:]))  # before TensorFlow loads

# The imports below load TensorFlow.
import json
import os
import time
import tokenize
from typing import Callable

import gin
import keras
import numpy as np
import tensorflow as tf

from video_ssl import atomic
from video_ssl.config import parse_gin
from video_ssl.data.reader import locate_damaged_record, match_files
from video_ssl.evaluation import figures
from video_ssl.evaluation import finetune, linear, retrieval, svm  # noqa: F401  (gin)
from video_ssl.evaluation.protocol import EvalData, Result, check_protocol_bindings, require
from video_ssl.data.input_spec import eval_input
from video_ssl.pretrained import Pretrained, load_encoder

SPLITS = ("train", "test", "gallery")
THUMBNAIL_SIZE = 112


def split_inputs(pretrained: Pretrained) -> dict[str, dict]:
    """Per split, the training run's clip shape and normalization overridden by the
    `eval_input` bindings of that split's scope."""
    base = {**pretrained.clip, **pretrained.normalization}
    inputs = {}
    for split in SPLITS:
        with gin.config_scope(split):
            inputs[split] = {**base, **eval_input()}
    return inputs


def write_outputs(result: Result, data: EvalData, directory: str, title: str) -> dict:
    """Writes the result's figures, scores and model under `directory`; returns
    {what: file name}."""
    tf.io.gfile.makedirs(directory)
    written = {}

    def out(name):
        written[os.path.splitext(name)[0]] = name
        return os.path.join(directory, name)

    if result.confusion is not None:
        names = data.class_names(len(result.confusion))  # axis labels, when known
        atomic.write_file(out("confusion.png"),
                lambda p: figures.save_confusion_png(p, result.confusion, title, names))
    if result.scores is not None:
        atomic.write_file(out("test_scores.npz"),
                lambda p: np.savez(p, scores=result.scores, labels=result.labels))
    for stem, arrays in result.arrays.items():  # e.g. retrieval_features.npz
        atomic.write_file(out(f"{stem}.npz"), lambda p, arrays=arrays: np.savez(p, **arrays))
    if result.model is not None:
        atomic.write_file(out("model.keras"), result.model.save)
    if result.neighbours:
        queries = data.first_frames("test", [e["query"] for e in result.neighbours],
                                    THUMBNAIL_SIZE)
        gallery = data.first_frames("train", [i for e in result.neighbours
                                              for i in e["neighbours"]], THUMBNAIL_SIZE)
        atomic.write_file(out("neighbours.png"),
                lambda p: figures.save_retrieval_png(p, result.neighbours, queries, gallery))
    return written


@gin.configurable(denylist=["pretrained", "output_dir"])
def evaluate(pretrained: Pretrained, output_dir: str, *, name: str | None = None,
             protocol: Callable[..., Result] | None = None, train_files: str | None = None,
             test_files: str | None = None, batch_size: int = 32, eval_batch_size: int = 4,
             seed: int = 0) -> dict:
    """Runs `protocol` (a gin reference such as @linear_probe) on `pretrained`'s
    backbone and writes its outputs (see the module docstring); returns the report.

    train_files / test_files: labeled shards (file patterns). batch_size: training
    clips per step (linear probe, fine-tuning, SVM features); eval_batch_size: videos
    per evaluation batch (each with all its views).
    """
    name = require(name, "evaluate.name")
    protocol = require(protocol, "evaluate.protocol")
    key = pretrained.modality
    if key == "audio":
        raise ValueError("evaluate: audio backbones are not supported by the evaluation "
                         "protocols yet")
    inputs = split_inputs(pretrained)
    data = EvalData(
        train_files=match_files(train_files, "evaluate.train_files"),
        test_files=match_files(test_files, "evaluate.test_files"),
        train_input=inputs["train"], test_input=inputs["test"],
        gallery_input=inputs["gallery"], key=key, batch_size=batch_size,
        eval_batch_size=eval_batch_size, seed=seed,
        # No quotes: TensorFlow escapes them in the checks' messages.
        train_source=f"evaluate.train_files={train_files}",
        test_source=f"evaluate.test_files={test_files}")
    keras.utils.set_random_seed(seed)
    start = time.time()
    result = protocol(pretrained.backbone, data)
    random_init = pretrained.checkpoint_path is None
    tag = f"{name}_random_init" if random_init else name
    headline = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items()
                         if k in ("top1", "recall@1"))
    written = write_outputs(result, data, os.path.join(output_dir, f"eval_{tag}"),
                            title=f"{tag} ({pretrained.method_name}, step "
                                  f"{pretrained.step}): {headline}")
    report = {
        "protocol": name, "method": pretrained.method_name, "encoder": pretrained.encoder,
        "checkpoint": pretrained.checkpoint_path, "step": pretrained.step,
        "random_init": random_init, "metrics": result.metrics,
        "settings": {"protocol": result.settings, "inputs": inputs, "batch_size": batch_size,
                     "eval_batch_size": eval_batch_size, "seed": seed},
        "train_files": train_files, "test_files": test_files,
        "num_train_videos": data.num_train_videos, "num_test_videos": data.num_test_videos,
        "outputs": {k: os.path.join(f"eval_{tag}", v) for k, v in written.items()},
        "wall_time_s": time.time() - start, "gin_config": gin.operative_config_str()}
    if result.neighbours:
        report["examples"] = result.neighbours
    atomic.write_text(os.path.join(output_dir, f"eval_{tag}.json"),
                          json.dumps(report, indent=2, default=str) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Any failure is one line `video_ssl.evaluate: error: ...` and exit code 1 (see
    `console.run`)."""
    return console.run("video_ssl.evaluate", _main,
                       parse_flags(sys.argv[1:] if argv is None else argv))


def _main(args: argparse.Namespace) -> int:
    try:
        for path in args.gin_file:  # before the (slower) model loading
            if not tf.io.gfile.exists(path):
                raise ValueError(f"--gin_file={path}: no such file")
        keras.utils.set_random_seed(0)  # the random-init baseline is reproducible
        pretrained = load_encoder(args.checkpoint, encoder=args.encoder,
                                  random_init=args.random_init)
        try:
            parse_gin(args.gin_file, args.gin_param)
        except (SyntaxError, ValueError, tokenize.TokenError) as error:
            raise console.gin_error(error, args.gin_file, args.gin_param) from error
        check_protocol_bindings(args.gin_param)  # another protocol's binding does nothing
        try:
            report = evaluate(pretrained, args.output_dir or args.checkpoint)
        except tf.errors.OpError as error:
            # TensorFlow names no file for a damaged record: find it.
            damaged = locate_damaged_record(_bound_files(), error.message)
            if damaged is None:
                raise
            raise ValueError(damaged) from error
    finally:
        gin.clear_config()
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in report["metrics"].items()
                        if isinstance(v, float))
    print(f"{report['protocol']}: {metrics}")
    return 0


def _bound_files() -> list[str]:
    """The files of the bound evaluation splits (patterns only: a gin reference such
    as the demo data's is skipped)."""
    files = []
    for binding in ("evaluate.train_files", "evaluate.test_files"):
        try:
            pattern = gin.query_parameter(binding)
        except ValueError:
            continue
        if isinstance(pattern, str):
            files += tf.io.gfile.glob(pattern)
    return files


if __name__ == "__main__":
    sys.exit(main())
