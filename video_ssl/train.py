"""Self-supervised pre-training: `python -m video_ssl.train --gin_file=F ... --model_dir=D`.

This module only wires things together: gin, the distribution strategy, the input
datasets and the callbacks. It knows no method: a method (`video_ssl.methods`) names
its encoders and declares its input views; the trainer builds the views' datasets,
trains with `loop.fit` (the method's step under the strategy, driving the
callbacks as `model.fit` does, for every strategy including multi-worker), monitors
every encoder with the kNN monitor on its own modality and exports every encoder.

`model_dir` receives `checkpoints/` (every `train.checkpoint_every_steps` steps and
at the end; re-running the same command resumes from the newest), `tensorboard/`,
`input_spec.json` (the method's views and encoders, before the first step),
`operative_config.gin` (after the first step), `metrics.json` (per epoch and final)
and `export/` (the primary encoder as a SavedModel, and `export/<encoder>/` for every
encoder, see `video_ssl.serving`).
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
    return parser.parse_args(argv)


if __name__ == "__main__":
    console.start(parse_flags(sys.argv[1:]))  # before TensorFlow loads

# The imports below load TensorFlow.
import contextlib
import json
import os
import shutil
import tempfile
import tokenize
from typing import Callable

import gin
import keras
import tensorflow as tf

from video_ssl import atomic
from video_ssl.training import bindings
from video_ssl.training import callbacks as cb
from video_ssl.training import loop
from video_ssl import optim
from video_ssl.training import stages
from video_ssl import serving
from video_ssl.config import parse_gin
from video_ssl.data import input_spec, pipeline, preflight
from video_ssl.data.reader import count_records, locate_damaged_record, match_files
from video_ssl.distribute import (ClusterError, all_agree, is_chief, lost_workers,
                                  make_strategy)
from video_ssl.evaluation.knn import KNNMonitor
from video_ssl.methods.base import INPUT_SPEC_FILE, Method
from video_ssl.training.run_lock import hold as hold_run_lock


# train.precision: Keras dtype policies (float32 variables; the layers compute in the
# policy's dtype). The losses, Sinkhorn, queues and EMA stay float32 (the methods cast
# embeddings before their losses); mixed_float16 adds dynamic loss scaling.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy `name` while the method is built (layers keep the
    policy they were built with), the previous one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def view_dataset(files: Sequence[str], views: dict, *, global_batch_size: int, seed: int,
                 input_context=None) -> tf.data.Dataset:
    """Training batches {"views": {name: {modality: ...}}, "label"} of a method's views."""
    names = list(views)
    ds = pipeline.make_view_dataset(
        files, [views[n] for n in names], training=True, batch_size=global_batch_size,
        input_context=input_context, seed=seed,
        **input_spec.dataset_options(input_spec.train_input()))
    return ds.map(lambda b: {"views": dict(zip(names, b["views"])), "label": b["label"]})


def knn_monitors(model: Method, bank_files: Sequence[str], query_files: Sequence[str], *,
                 batch_size: int, every_n_epochs: int, k: int,
                 temperature: float) -> list[KNNMonitor]:
    """One online kNN monitor per encoder, on one centre clip per video shaped like
    that encoder's training clips, in its own modality. The primary encoder logs
    `knn_top1`, the others `knn_top1_<encoder>`."""
    views, monitors = model.views, []
    for name, source in model.encoders.items():
        view = views[source.view]
        clip, normalization = input_spec.clip_settings(view)

        def split(files, view=view, clip=clip, normalization=normalization, source=source):
            return lambda: pipeline.make_dataset(
                files, training=False, batch_size=batch_size, modalities=(source.modality,),
                audio=view.audio, **clip, **normalization)
        key = "knn_top1" if name == model.primary_encoder else f"knn_top1_{name}"
        monitors.append(KNNMonitor(split(bank_files), split(query_files), key=key,
                                   modality=source.modality, every_n_epochs=every_n_epochs,
                                   k=k, temperature=temperature,
                                   encoder=lambda m, name=name: m.encoder_model(name)))
    return monitors


def final_metrics(epochs_logged: Sequence[dict], **facts) -> dict:
    """The latest value of every logged quantity, the run's facts, and the kNN
    accuracies at random initialization (the epoch-0 entry) when there are any."""
    final = {k: v for entry in epochs_logged for k, v in entry.items()
             if k not in ("epoch", "wall_time_s")}
    final.update(facts)
    if epochs_logged and epochs_logged[0]["epoch"] == 0:
        for key, value in epochs_logged[0].items():
            if key.startswith("knn_top1"):
                final[f"{key}_random_init"] = value
    return final


def export_encoders(model: Method, export_dir: str) -> None:
    """The primary encoder at `export_dir` itself (where single-encoder runs have always
    put it), then `export_dir/<encoder>/` for every encoder. An encoder trained under a
    mixed policy computes in it there too, and returns float32 features."""
    views = model.views
    primary = model.encoders[model.primary_encoder]
    clip, normalization = input_spec.clip_settings(views[primary.view])
    serving.export_saved_model(float32_outputs(model.encoder_model(model.primary_encoder)),
                               export_dir, clip=clip, normalization=normalization,
                               modality=primary.modality, overwrite=True)
    for name, source in model.encoders.items():
        clip, normalization = input_spec.clip_settings(views[source.view])
        serving.export_saved_model(float32_outputs(model.encoder_model(name)),
                                   os.path.join(export_dir, name), clip=clip,
                                   normalization=normalization, modality=source.modality,
                                   overwrite=True)


def float32_outputs(encoder: keras.Model) -> keras.Model:
    """`encoder`, or a model around it casting its features to float32 when its layers
    compute in another dtype (train.precision)."""
    if keras.backend.standardize_dtype(encoder.compute_dtype) == "float32":
        return encoder
    inputs = keras.Input(encoder.input_shape[1:])
    features = keras.layers.Activation("linear", dtype="float32", name="float32_features")(
        encoder(inputs))
    return keras.Model(inputs, features, name=encoder.name)


def _steps_per_epoch(files: Sequence[str], global_batch_size: int) -> int:
    records = count_records(files)
    if records < global_batch_size:
        raise ValueError(
            f"train.train_files: {records} records in {len(files)} file(s) "
            f"({files[0]}{', ...' if len(files) > 1 else ''}), fewer than one global batch "
            f"(train.global_batch_size={global_batch_size}); expected at least that many")
    return records // global_batch_size


@gin.configurable(denylist=["model_dir"])
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
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Pre-trains `method` on `train_files` and returns the final metrics.

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
    precision: one of `PRECISIONS`: "float32"; "mixed_bfloat16" (TPUs, recent GPUs) or
    "mixed_float16" (GPUs; the optimizer is wrapped in a
    `keras.optimizers.LossScaleOptimizer`, and the methods scale their losses with it).

    Every binding's type is checked before anything runs, and model_dir is created
    (and locked, see `run_lock`) only once the method is built.
    """
    bindings.check_types(train, locals(), "train")
    if verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"train.verbose: expected 'auto', 0, 1 or 2, got {verbose!r}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision: expected one of {PRECISIONS}, got {precision!r}")
    files = match_files(train_files, "train.train_files")
    knn_splits = None
    if knn_bank_files or knn_query_files:
        knn_splits = (match_files(knn_bank_files, "train.knn_bank_files"),
                      match_files(knn_query_files, "train.knn_query_files"))
    if steps_per_epoch is None:
        steps_per_epoch = _steps_per_epoch(files, global_batch_size)
    total_steps = epochs * steps_per_epoch
    keras.utils.set_random_seed(seed)

    distribution = make_strategy(strategy)
    chief = is_chief(distribution)
    loop.jit_placement(distribution, jit_compile)  # refused before anything is built

    with dtype_policy(precision), distribution.scope():
        model = method()
        if not isinstance(model, Method):
            raise ValueError(f"train.method: expected a video_ssl method class, got "
                             f"{type(model).__name__}")
        base_opt = optimizer(global_batch_size=global_batch_size, total_steps=total_steps,
                             warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
                             steps_per_epoch=steps_per_epoch)
        opt = (keras.optimizers.LossScaleOptimizer(base_opt) if precision == "mixed_float16"
               else base_opt)
        model.compile(optimizer=opt, jit_compile=jit_compile)
        # Slots must exist before restoring: Keras 3 variables are not restored lazily.
        opt.build(model.trainable_variables)
    preflight.check_audio_sample_rate(files, model.views)

    # The configuration holds: from here on the run owns model_dir. The chief alone
    # locks it and writes there; the other workers of a multi-worker run take part in
    # the collective checkpoint saves in a temporary folder of their own, removed at the
    # end (nothing of theirs lands in model_dir, however they stop).
    with hold_run_lock(model_dir) if chief else _worker_folder() as out_dir:
        out_dir = model_dir if chief else out_dir
        tf.io.gfile.makedirs(out_dir)
        with distribution.scope():
            checkpoint = tf.train.Checkpoint(model=model, optimizer=opt)
            manager = tf.train.CheckpointManager(
                checkpoint, os.path.join(out_dir, "checkpoints"), max_to_keep=3)
            # Every worker resumes from the chief's newest checkpoint.
            latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
            if latest:
                try:
                    checkpoint.restore(latest).assert_existing_objects_matched()
                except (AssertionError, ValueError, tf.errors.OpError) as error:
                    raise ValueError(
                        f"{latest}: does not match this run's method and optimizer "
                        f"({console.error_line(error)[:200]}); resume with the bindings the "
                        f"run started with (the method's, train.precision: mixed_float16 "
                        f"adds a loss scale to the optimizer)") from None
            else:
                for line in model.initialize_encoders():
                    print(line)
            # After restoring, so that a re-run with more epochs anneals over the new length.
            model.configure(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        start_step = int(opt.iterations.numpy())
        if not all_agree(distribution, start_step):
            raise ValueError(
                f"{model_dir}/checkpoints: the workers restored different steps (this one "
                f"{start_step}); every worker must see the chief's model_dir (a shared "
                f"file system or a gs:// bucket)")
        if start_step:
            print(f"Resuming from {latest} at step {start_step} of {total_steps}")
        if chief:
            atomic.write_text(os.path.join(model_dir, INPUT_SPEC_FILE),
                              json.dumps(model.input_spec(), indent=1))

        views = model.views
        for name, view in views.items():
            where = "the training step" if view.defer_augmentation else "the input pipeline"
            print(f"View {name!r}: the augmentation after the crop runs in {where} "
                  f"(train_input.defer_augmentation={view.defer_augmentation})")
        dataset = distribution.distribute_datasets_from_function(
            lambda ctx: view_dataset(files, views, global_batch_size=global_batch_size,
                                     seed=seed + start_step, input_context=ctx))

        metrics = cb.MetricsJSON(os.path.join(out_dir, "metrics.json"))
        callbacks = [cb.TerminateOnNonFiniteLoss(),
                     *optim.schedule_callbacks(base_opt),  # a plateau schedule's updates
                     cb.WriteOperativeConfig(os.path.join(out_dir, "operative_config.gin")),
                     cb.LogLearningRate()]
        monitors = []
        if knn_splits:
            monitors = knn_monitors(model, *knn_splits, batch_size=knn_batch_size,
                                    every_n_epochs=knn_every_epochs, k=knn_k,
                                    temperature=knn_temperature)
            for monitor in monitors:
                monitor.set_model(model)
            callbacks += monitors
        tensorboard = cb.TensorBoardScalars(os.path.join(out_dir, "tensorboard"),
                                            tensorboard_every_steps)
        # The checkpoint after metrics.json: an epoch's entry is written before the epoch's
        # last checkpoint, so a kill between the two redoes the epoch, losing nothing.
        callbacks += [metrics, tensorboard,
                      cb.StepCheckpoint(manager, checkpoint_every_steps,
                                        saved_step=cb.checkpoint_step(latest) or 0),
                      *extra_callbacks]

        if monitors and start_step == 0:
            # The random-initialization baseline, so the logs show what training added.
            print("kNN monitor: scoring the encoders at random initialization ...")
            accuracies = {monitor.key: monitor.evaluate() for monitor in monitors}
            metrics.record(0, {"step": 0, **accuracies})
            tensorboard.write("epoch", accuracies, step=0)
        if start_step < total_steps:
            # Keras prints nothing until the first step is traced and compiled (minutes
            # for a large model), nor, at verbose=2, until the first epoch ends.
            print(f"Training steps {start_step + 1}-{total_steps} ({epochs} epochs of "
                  f"{steps_per_epoch} steps); tracing the training step first ...",
                  flush=True)
            try:
                loop.fit(model, dataset, callbacks, strategy=distribution,
                                start_step=start_step, epochs=epochs,
                                steps_per_epoch=steps_per_epoch, verbose=verbose,
                                jit_compile=model.jit_compile)
            except tf.errors.OpError as error:
                lost = (lost_workers(error) if isinstance(
                    distribution, tf.distribute.MultiWorkerMirroredStrategy) else None)
                if lost:
                    raise ClusterError(
                        f"train.strategy='multi_worker': {lost} after step "
                        f"{int(opt.iterations.numpy())}; start every worker again (the same "
                        f"commands) to resume from the chief's newest checkpoint") from error
                # TensorFlow names no file for a damaged record: find it.
                knn_files = [f for split in knn_splits or () for f in split]
                damaged = locate_damaged_record([*files, *knn_files], error.message)
                if damaged is None:
                    raise
                raise ValueError(damaged) from error

        metrics.finish(final_metrics(metrics.epochs, step=int(opt.iterations.numpy()),
                                     epochs=epochs, steps_per_epoch=steps_per_epoch,
                                     global_batch_size=global_batch_size))
        if chief:
            export_dir = os.path.join(model_dir, "export")
            print(f"Exporting {', '.join(model.encoders)} to {export_dir}")
            export_encoders(model, export_dir)
        return metrics.final


@contextlib.contextmanager
def _worker_folder():
    """A non-chief worker's temporary output folder, removed on the way out."""
    folder = tempfile.mkdtemp(prefix="video_ssl-worker-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
        if stages.scheduled():  # several stages, each a training run (schedule.py)
            stages.run_schedule(args.model_dir, train)
        else:
            train(args.model_dir)
    finally:
        gin.clear_config()  # the parsed config is locked; a next call parses its own
    return 0


if __name__ == "__main__":
    sys.exit(main())
