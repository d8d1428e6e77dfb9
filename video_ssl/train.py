"""Self-supervised pre-training: `python -m video_ssl.train --gin_file=F ... --model_dir=D`.

This module only wires things together: flags, gin, and the `train.*` bindings into
the phases of `video_ssl.training.runner` (strategy, data, method, restore, callbacks,
run, export). It knows no method: a method (`video_ssl.methods`) names its encoders
and declares its input views; the runner builds the views' datasets, trains with
`loop.fit` (the method's step under the strategy, driving the callbacks as
`model.fit` does, for every strategy including multi-worker), monitors every encoder
with the kNN monitor on its own modality (`knn_monitors`) and exports every encoder.

`model_dir` receives `checkpoints/` (every `train.checkpoint_every_steps` steps and
at the end; re-running the same command resumes from the newest), `tensorboard/`,
`input_spec.json` (the method's views and encoders, before the first step),
`operative_config.gin` (after the first step), `metrics.json` (per epoch and final)
and `export/` (the primary encoder as a SavedModel, and `export/<encoder>/` for every
other encoder, see `video_ssl.serving`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from video_ssl import console  # no TensorFlow: --help and the quiet start come first


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = console.ArgumentParser(
        "video_ssl.train", description="Self-supervised video pre-training.")
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="gin config file; repeat to compose (later files override earlier)")
    parser.add_argument("--gin_param", action="append", default=[],
                        help="one gin binding, e.g. train.epochs=10; applied after the files")
    parser.add_argument("--model_dir", required=True,
                        help="checkpoints, logs, metrics.json and export/ go here")
    parser.add_argument("--extend_finished_stages", action="store_true",
                        help="a schedule (run_schedule.stages): train finished stages whose "
                             "settings differ from this run's on under these (e.g. to more "
                             "epochs) instead of refusing to run")
    return parser.parse_args(argv)


if __name__ == "__main__":
    console.start(parse_flags(sys.argv[1:]))  # before TensorFlow loads

# The imports below load TensorFlow.
import tokenize
from typing import Callable

import gin
import keras
import tensorflow as tf

from video_ssl import user_bindings
from video_ssl.config import parse_gin
from video_ssl.data import input_spec, pipeline
from video_ssl.evaluation.knn import KNNMonitor
from video_ssl.methods.base import INPUT_SPEC_FILE, Method
from video_ssl.training import bindings, runner, stages


@gin.configurable(denylist=["model_dir", "check_config", "build_only"])
def train(model_dir: str, *,
          method: Callable[[], keras.Model] = gin.REQUIRED,
          optimizer: Callable[..., keras.optimizers.Optimizer] = gin.REQUIRED,
          train_files: str | Sequence[str] | None = None,
          global_batch_size: int = 512,
          epochs: int = 200,
          steps_per_epoch: int | None = None,
          warmup_epochs: float = 0.0,
          strategy: str | tf.distribute.Strategy = "default",
          checkpoint_every_steps: int = 1000,
          knn_bank_files: str | Sequence[str] | None = None,
          knn_query_files: str | Sequence[str] | None = None,
          knn_every_epochs: int = 1,
          knn_batch_size: int = 32,
          knn_k: int = 20,
          knn_temperature: float = 0.07,
          tensorboard_every_steps: int = 100,
          seed: int = 0,
          verbose: str | int = "auto",
          jit_compile: bool = False,
          precision: str = "float32",
          extra_callbacks: Sequence[keras.callbacks.Callback] = (),
          check_config: Callable[[], None] | None = None,
          build_only: bool = False) -> dict:
    """Pre-trains `method` on `train_files` and returns the final metrics, in the phases
    of `video_ssl.training.runner`.

    method: gin reference to a method class (e.g. `@MoCo`), called with no
    arguments inside the strategy scope. optimizer: gin reference to
    `build_optimizer`, called with `global_batch_size`, `total_steps` and
    `warmup_steps`. steps_per_epoch: counted from the train shards when None (an
    error when they hold fewer records than one global batch). strategy: a
    `make_strategy` name or a Strategy. knn_bank_files / knn_query_files: labeled
    splits for the online kNN monitor (memory bank and queries); off when unset.
    knn_k: neighbours that vote. 20 suits banks from a few hundred videos up; the
    200 of Wu et al. / PySlowFast is for Kinetics-size banks (hundreds of videos per
    class): with a bank of a few hundred videos it outvotes the near neighbours with
    the class prior, and the curve then says less than it should.
    verbose: Keras progress output: 1 a progress bar per epoch, 2 one line per epoch,
    0 none; "auto" (default) is 1 on a terminal and 2 when stdout is a file or pipe
    (a bar's control characters would fill it).
    jit_compile: XLA-compile the training step (each method's step compiles: static
    shapes, no host-side Python inside it).
    precision: one of `runner.PRECISIONS`: "float32"; "mixed_bfloat16" (TPUs, recent
    GPUs) or "mixed_float16" (GPUs; the optimizer is wrapped in a
    `keras.optimizers.LossScaleOptimizer`, and the methods scale their losses with it).

    Every binding's type is checked before anything runs, and model_dir is created
    (and locked, see `run_lock`) only once the method is built.
    check_config (not a binding): called once the method and its optimizer are built
    (every configurable of the run called), before model_dir is created; the CLI checks
    the user's bindings there (`video_ssl.user_bindings`). build_only (not a binding):
    return {} there, writing nothing.
    """
    arguments = dict(locals())  # the bindings, by name
    bindings.check_types(train, arguments, "train")
    bindings.check_minimums(arguments, MINIMUMS, "train")
    return runner.Runner(**{**arguments, "method": lambda: _video_ssl_method(method)},
                         monitors=knn_monitors, input_spec_file=INPUT_SPEC_FILE).run()


# What a run needs at least of its counts (warm-up may be 0).
MINIMUMS = {"global_batch_size": 1, "epochs": 1, "steps_per_epoch": 1, "warmup_epochs": 0,
            "checkpoint_every_steps": 1, "knn_every_epochs": 1, "knn_batch_size": 1,
            "knn_k": 1, "tensorboard_every_steps": 1}


def _video_ssl_method(method: Callable[[], keras.Model]) -> Method:
    """`method()`, refused unless it is a video_ssl method."""
    model = method()
    if not isinstance(model, Method):
        raise ValueError(f"train.method: expected a video_ssl method class, got "
                         f"{type(model).__name__}")
    return model


def knn_monitors(model: Method, bank_files: Sequence[str], query_files: Sequence[str], *,
                 batch_size: int, every_n_epochs: int, k: int,
                 temperature: float) -> list[KNNMonitor]:
    """One online kNN monitor per encoder, on one centre clip per video shaped like
    that encoder's training clips, in its own modality. The primary encoder logs
    `knn_top1` and its health (`embedding_std`, `effective_rank`, `alignment`,
    `uniformity`), the others the same names followed by `_<encoder>`."""
    views, monitors = model.views, []
    for name, source in model.encoders.items():
        view = views[source.view]
        clip, normalization = input_spec.clip_settings(view)

        def split(files, view=view, clip=clip, normalization=normalization, source=source):
            return lambda: pipeline.make_dataset(
                files, training=False, batch_size=batch_size, modalities=(source.modality,),
                audio=view.audio, **clip, **normalization)
        suffix = "" if name == model.primary_encoder else f"_{name}"
        monitors.append(KNNMonitor(split(bank_files), split(query_files), suffix=suffix,
                                   modality=source.modality, every_n_epochs=every_n_epochs,
                                   k=k, temperature=temperature, encoder_name=name,
                                   encoder=lambda m, name=name: m.encoder_model(name)))
    return monitors


def main(argv: Sequence[str] | None = None) -> int:
    """Any failure is one line `video_ssl.train: error: ...` and exit code 1 (see
    `console.run`)."""
    return console.run("video_ssl.train", _main,
                       parse_flags(sys.argv[1:] if argv is None else argv))


def _main(args: argparse.Namespace) -> int:
    try:
        try:
            parse_gin(args.gin_file, args.gin_param)
        except (SyntaxError, ValueError, tokenize.TokenError) as error:
            raise console.gin_error(error, args.gin_file, args.gin_param) from error
        # What the user adds must do something (user_bindings): checked once built.
        added = user_bindings.user_bindings(args.gin_file, args.gin_param)
        user_bindings.check_types(added)
        user_bindings.check_written(added)
        if stages.scheduled():  # several stages, each a training run (stages.py)
            stages.run_schedule(args.model_dir, train,
                                extend_finished=args.extend_finished_stages,
                                check=user_bindings.ScheduleCheck(added))
        elif args.extend_finished_stages:
            raise ValueError(f"{stages.EXTEND_FLAG}: applies to schedules, and this config "
                             "binds no run_schedule.stages")
        else:
            train(args.model_dir, check_config=lambda: user_bindings.check_reached(
                added, [user_bindings.usage()]))
    finally:
        gin.clear_config()  # the parsed config is locked; a next call parses its own
    return 0


if __name__ == "__main__":
    sys.exit(main())
