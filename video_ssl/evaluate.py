"""Evaluation of a pre-trained backbone:

    python -m video_ssl.evaluate --gin_file=gin_configs/eval/<protocol>.gin \\
        [--gin_file=F2 ...] [--gin_param=P ...] --checkpoint=MODEL_DIR \\
        [--encoder=NAME] [--fuse_with=MODEL_DIR2[:NAME2]] [--random_init[=SEED]] \\
        [--output_dir=DIR]

MODEL_DIR is a `video_ssl.train` model_dir: its operative config says how to build the
encoder (the method's primary one, or `--encoder=NAME`), its newest checkpoint gives
the weights (`--random_init`: none, the baseline, drawn with Keras seed 0 or SEED).
Any encoder is accepted: RGB, flow (2-channel flow clips) or audio (log-mel clips with
its training view's `AudioSpec`).
The gin files pick the protocol (`evaluate.protocol`: @linear_probe, @finetune,
@retrieval, @linear_svm, @mlp_probe from `video_ssl.evaluation`), its settings, the
labeled splits (`evaluate.train_files`, `evaluate.test_files`) and the clips
(`eval_input`, scoped `train/` for augmented training clips, `test/` for test views,
`gallery/` for the retrieval gallery; the clip shape defaults to the training one).

Two-stream fusion (CoCLR's † rows): `--fuse_with=MODEL_DIR2[:NAME2]` evaluates a second
encoder (MODEL_DIR2's primary one, or NAME2, e.g. `runs/coclr/cycle2_flow` or
`runs/coclr/cycle2_rgb:flow`) with the same protocol, each stream on its own clips (its
run's clip shape, normalization and modality), and fuses the two
(`video_ssl.evaluation.fusion`: the mean of the per-video softmax scores for
classification, the mean of the two cosine-similarity matrices for retrieval). The
streams are named by their encoders ("rgb", "flow"; "stream1", "stream2" when the
names are equal), and a binding scoped with a stream's name applies to it alone (e.g.
`--gin_param="flow/evaluate.test_files='/data/flow/test-*'"`). Both streams must
evaluate the same videos in the same order, which is checked before anything runs;
`--random_init` applies to both.

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
With --fuse_with, each stream's files are named eval_NAME_<stream>(.json, /) and the
fusion's eval_NAME_fused(.json, /): its metrics, and confusion.png + test_scores.npz
(fused scores) or neighbours.png + retrieval_features.npz (fused similarity, labels).
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
                    "linear SVM, MLP), or two fused (--fuse_with).")
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="gin config, e.g. gin_configs/eval/linear_ucf101.gin; repeat to "
                             "compose (later files override earlier)")
    parser.add_argument("--gin_param", action="append", default=[],
                        help="one gin binding, e.g. linear_probe.epochs=10; after the files")
    parser.add_argument("--checkpoint", required=True,
                        help="the training model_dir (operative_config.gin + checkpoints/)")
    parser.add_argument("--encoder", default=None,
                        help="which of the run's encoders to evaluate (default: its primary one)")
    parser.add_argument("--fuse_with", default=None, metavar="MODEL_DIR[:ENCODER]",
                        help="two-stream fusion: also evaluate this run's primary encoder (or "
                             "ENCODER) and fuse the two (mean softmax scores / similarities)")
    parser.add_argument("--random_init", nargs="?", const=0, default=None, type=int,
                        metavar="SEED",
                        help="evaluate the same backbone(s) at random initialization "
                             "(baseline), drawn with Keras seed SEED (default 0)")
    parser.add_argument("--output_dir", default=None,
                        help="where eval_<name>.json and eval_<name>/ go (default: --checkpoint)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    console.start(parse_flags(sys.argv[1:]))  # before TensorFlow loads

# The imports below load TensorFlow.
import contextlib
import dataclasses
import json
import os
import re
import time
import tokenize
from typing import Callable

import gin
import keras
import numpy as np
import tensorflow as tf

from video_ssl import atomic, user_bindings
from video_ssl.config import parse_gin
from video_ssl.data.reader import locate_damaged_record, match_files
from video_ssl.evaluation import figures, fusion
from video_ssl.evaluation import finetune, linear, mlp, retrieval, svm  # noqa: F401  (gin)
from video_ssl.evaluation.protocol import EvalData, Result, check_protocol_bindings, require
from video_ssl.data.input_spec import eval_input
from video_ssl.pretrained import Pretrained, load_encoder

SPLITS = ("train", "test", "gallery")
THUMBNAIL_SIZE = 112


def split_inputs(pretrained: Pretrained) -> dict[str, dict]:
    """Per split, the training run's clip shape and normalization (and, for an audio
    encoder, its log-mel settings) overridden by the `eval_input` bindings of that
    split's scope."""
    base = {**pretrained.clip, **pretrained.normalization}
    if pretrained.audio is not None:
        base["audio"] = pretrained.audio
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
        queries = data.thumbnails("test", [e["query"] for e in result.neighbours],
                                  THUMBNAIL_SIZE)
        gallery = data.thumbnails("train", [i for e in result.neighbours
                                            for i in e["neighbours"]], THUMBNAIL_SIZE)
        atomic.write_file(out("neighbours.png"),
                lambda p: figures.save_retrieval_png(p, result.neighbours, queries, gallery))
    return written


@dataclasses.dataclass
class Stream:
    """One encoder's evaluation as the `evaluate.*` bindings set it up (`prepare`).
    stream: its name in a two-stream evaluation (also its gin scope), else None."""
    pretrained: Pretrained
    name: str
    protocol: Callable[..., Result]
    data: EvalData
    inputs: dict
    settings: dict
    stream: str | None = None

    @property
    def base_tag(self) -> str:
        """evaluate.name, + "_random_init" for the baseline."""
        random_init = self.pretrained.checkpoint_path is None
        return f"{self.name}_random_init" if random_init else self.name

    @property
    def tag(self) -> str:
        return f"{self.base_tag}_{self.stream}" if self.stream else self.base_tag


@gin.configurable("evaluate", denylist=["pretrained", "stream"])
def prepare(pretrained: Pretrained, stream: str | None = None, *, name: str | None = None,
            protocol: Callable[..., Result] | None = None, train_files: str | None = None,
            test_files: str | None = None, batch_size: int = 32, eval_batch_size: int = 4,
            seed: int = 0) -> Stream:
    """The evaluation of `pretrained`'s backbone that the `evaluate.*` bindings describe
    (gin name `evaluate`): `protocol` (a gin reference such as @linear_probe) named
    `name`, on the labeled shards (file patterns) train_files / test_files.
    batch_size: training clips per step (linear probe, fine-tuning, SVM and MLP
    features); eval_batch_size: videos per evaluation batch (each with all its views).
    """
    name = require(name, "evaluate.name")
    protocol = require(protocol, "evaluate.protocol")
    inputs = split_inputs(pretrained)
    # No quotes: TensorFlow escapes them in the checks' messages.
    suffix = f" (stream {stream})" if stream else ""
    data = EvalData(
        train_files=match_files(train_files, "evaluate.train_files"),
        test_files=match_files(test_files, "evaluate.test_files"),
        train_input=inputs["train"], test_input=inputs["test"],
        gallery_input=inputs["gallery"], key=pretrained.modality, batch_size=batch_size,
        eval_batch_size=eval_batch_size, seed=seed,
        train_source=f"evaluate.train_files={train_files}{suffix}",
        test_source=f"evaluate.test_files={test_files}{suffix}")
    settings = {"batch_size": batch_size, "eval_batch_size": eval_batch_size, "seed": seed,
                "train_files": train_files, "test_files": test_files}
    return Stream(pretrained, name, protocol, data, inputs, settings, stream)


def evaluate(pretrained: Pretrained, output_dir: str, *,
             fuse_with: Pretrained | None = None) -> dict:
    """Runs the bound protocol on `pretrained`'s backbone and writes its outputs (see
    the module docstring); returns the report. fuse_with: a second encoder for
    two-stream fusion (`evaluate_fused`)."""
    if fuse_with is not None:
        return evaluate_fused([pretrained, fuse_with], output_dir)
    report, _ = run_stream(prepare(pretrained), output_dir)
    return report


def run_stream(stream: Stream, output_dir: str) -> tuple[dict, Result]:
    """Runs one prepared evaluation and writes eval_<tag>.json and eval_<tag>/."""
    pretrained, data = stream.pretrained, stream.data
    keras.utils.set_random_seed(stream.settings["seed"])
    start = time.time()
    with _scope(stream.stream):
        result = stream.protocol(pretrained.backbone, data)
    written = write_outputs(result, data, os.path.join(output_dir, f"eval_{stream.tag}"),
                            title=f"{stream.tag} ({pretrained.method_name}, step "
                                  f"{pretrained.step}): {_headline(result)}")
    report = {
        "protocol": stream.name, "method": pretrained.method_name,
        "encoder": pretrained.encoder, "modality": pretrained.modality,
        "checkpoint": pretrained.checkpoint_path, "step": pretrained.step,
        "random_init": pretrained.checkpoint_path is None, "metrics": result.metrics,
        "settings": {"protocol": result.settings, "inputs": _jsonable(stream.inputs),
                     **{k: stream.settings[k] for k in ("batch_size", "eval_batch_size",
                                                        "seed")}},
        "train_files": stream.settings["train_files"],
        "test_files": stream.settings["test_files"],
        "num_train_videos": data.num_train_videos, "num_test_videos": data.num_test_videos,
        "outputs": {k: os.path.join(f"eval_{stream.tag}", v) for k, v in written.items()},
        "wall_time_s": time.time() - start, "gin_config": gin.operative_config_str()}
    if stream.stream:
        report["stream"] = stream.stream
    if result.neighbours:
        report["examples"] = result.neighbours
    atomic.write_text(os.path.join(output_dir, f"eval_{stream.tag}.json"),
                      json.dumps(report, indent=2, default=str) + "\n")
    return report, result


def stream_names(pretrained: Sequence[Pretrained]) -> list[str]:
    """The streams' names (and gin scopes): their encoders' names when distinct and
    usable as gin scopes, else stream1, stream2, ..."""
    names = [p.encoder for p in pretrained]
    if len(set(names)) == len(names) and all(re.fullmatch(r"[A-Za-z_]\w*", n) for n in names):
        return names
    return [f"stream{i + 1}" for i in range(len(pretrained))]


def evaluate_fused(pretrained: Sequence[Pretrained], output_dir: str) -> dict:
    """Two-stream fusion (module docstring): each encoder evaluated under its stream's
    gin scope, after checking that the streams run one protocol over the same videos
    in the same order; then the fused result, written as eval_<name>_fused(.json, /).
    Returns the fused report."""
    names = stream_names(pretrained)
    streams = []
    for name, encoder in zip(names, pretrained):
        with gin.config_scope(name):
            streams.append(prepare(encoder, name))
    first = streams[0]
    for other in streams[1:]:
        if (other.name, _protocol_name(other.protocol)) != (first.name,
                                                            _protocol_name(first.protocol)):
            raise ValueError(
                f"two-stream fusion: stream {other.stream!r} runs {other.name} "
                f"(@{_protocol_name(other.protocol)}), stream {first.stream!r} {first.name} "
                f"(@{_protocol_name(first.protocol)}); expected one evaluate.name and "
                "evaluate.protocol for both")
    fusion.check_same_videos([(s.stream, s.data) for s in streams])
    start = time.time()
    outcomes = [run_stream(s, output_dir) for s in streams]
    fused = fusion.fuse_results([result for _, result in outcomes], names=names)
    tag = f"{first.base_tag}_fused"
    sources = " + ".join(f"{s.stream}: {s.pretrained.method_name} step {s.pretrained.step}"
                         for s in streams)
    written = write_outputs(fused, first.data, os.path.join(output_dir, f"eval_{tag}"),
                            title=f"{tag} ({sources}): {_headline(fused)}")
    report = {
        "protocol": first.name, "fused": True,
        "random_init": first.pretrained.checkpoint_path is None, "metrics": fused.metrics,
        "streams": [{"stream": s.stream, "method": s.pretrained.method_name,
                     "encoder": s.pretrained.encoder, "modality": s.pretrained.modality,
                     "checkpoint": s.pretrained.checkpoint_path, "step": s.pretrained.step,
                     "report": f"eval_{s.tag}.json", "metrics": r["metrics"]}
                    for s, (r, _) in zip(streams, outcomes)],
        "settings": {"fusion": fused.settings},
        "train_files": [s.settings["train_files"] for s in streams],
        "test_files": [s.settings["test_files"] for s in streams],
        "num_train_videos": first.data.num_train_videos,
        "num_test_videos": first.data.num_test_videos,
        "outputs": {k: os.path.join(f"eval_{tag}", v) for k, v in written.items()},
        "wall_time_s": time.time() - start}
    if fused.neighbours:
        report["examples"] = fused.neighbours
    atomic.write_text(os.path.join(output_dir, f"eval_{tag}.json"),
                      json.dumps(report, indent=2, default=str) + "\n")
    return report


def _headline(result: Result) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items()
                     if k in ("top1", "mAP", "recall@1"))


def _protocol_name(protocol) -> str:
    return getattr(protocol, "__name__", str(protocol))


def _scope(name: str | None):
    """The stream's gin scope (none for a single evaluation)."""
    return gin.config_scope(name) if name else contextlib.nullcontext()


def _jsonable(inputs: dict) -> dict:
    """The split inputs with their `AudioSpec`s as dicts."""
    return {split: {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                    for k, v in values.items()} for split, values in inputs.items()}


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
        console.check_writable(args.output_dir or args.checkpoint)  # not after the evaluation
        random_init = args.random_init is not None
        keras.utils.set_random_seed(args.random_init or 0)  # a reproducible baseline
        pretrained = load_encoder(args.checkpoint, encoder=args.encoder,
                                  random_init=random_init)
        fuse_with = None
        if args.fuse_with:
            directory, encoder = split_source(args.fuse_with)
            fuse_with = load_encoder(directory, encoder=encoder, random_init=random_init)
        try:
            parse_gin(args.gin_file, args.gin_param)
        except (SyntaxError, ValueError, tokenize.TokenError) as error:
            raise console.gin_error(error, args.gin_file, args.gin_param) from error
        check_protocol_bindings(args.gin_param)  # another protocol's binding does nothing
        # The protocol runs as the work itself: only the checks that need no run here;
        # a file's macro may serve other protocols (as eval/demo.gin's NUM_CLASSES).
        added = user_bindings.user_bindings(args.gin_file, args.gin_param)
        user_bindings.check_types(added)
        user_bindings.check_written([b for b in added if b.where.startswith("--gin_param")
                                     or not b.is_macro])
        try:
            report = evaluate(pretrained, args.output_dir or args.checkpoint,
                              fuse_with=fuse_with)
        except tf.errors.OpError as error:
            # TensorFlow names no file for a damaged record: find it.
            streams = stream_names([p for p in (pretrained, fuse_with) if p is not None])
            damaged = locate_damaged_record(_bound_files(streams if fuse_with else ()),
                                            error.message)
            if damaged is None:
                raise
            raise ValueError(damaged) from error
    finally:
        gin.clear_config()
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in report["metrics"].items()
                        if isinstance(v, float))
    if report.get("fused"):
        for stream in report["streams"]:
            stream_metrics = ", ".join(f"{k}={v:.4g}" for k, v in stream["metrics"].items()
                                       if isinstance(v, float))
            print(f"{report['protocol']} ({stream['stream']}): {stream_metrics}")
        print(f"{report['protocol']} (fused): {metrics}")
    else:
        print(f"{report['protocol']}: {metrics}")
    return 0


def split_source(value: str) -> tuple[str, str | None]:
    """`--fuse_with` MODEL_DIR[:ENCODER] -> (MODEL_DIR, ENCODER or None)."""
    directory, colon, encoder = value.rpartition(":")
    if colon and directory and encoder and "/" not in encoder:
        return directory, encoder
    return value, None


def _bound_files(scopes: Sequence[str] = ()) -> list[str]:
    """The files of the bound evaluation splits, also those bound in the streams' scopes
    (patterns only: a gin reference such as the demo data's is skipped)."""
    files = []
    for scope in ("", *(f"{s}/" for s in scopes)):
        for binding in ("evaluate.train_files", "evaluate.test_files"):
            try:
                pattern = gin.query_parameter(scope + binding)
            except ValueError:
                continue
            if isinstance(pattern, str):
                files += tf.io.gfile.glob(pattern)
    return sorted(set(files))


if __name__ == "__main__":
    sys.exit(main())
