"""One pre-training run in named phases, the runner behind `video_ssl.train.train`.

`Runner.run` calls them in this order:

  data       `read_data`: the training shards matched and counted into steps per
             epoch, the kNN splits matched, the bound dataset options read
  strategy   `distribute`: the distribution strategy (an XLA placement it cannot run
             is refused here, before anything is built)
  method     `build_method`: the method built under the precision policy and the
             strategy, compiled with its optimizer, whose slots exist before restoring;
             gin has now called every configurable of the run: `check_config` runs
             (the entry point checks the user's bindings), and `build_only` stops here
  restore    `restore`, inside `output_folder` (model_dir, created and locked by the
             chief only now that the method is built): the newest checkpoint restored
             or the encoders initialized, every worker at the same step; then the
             chief writes input_spec.json
  data       `input_batches`: the distributed batches of the method's views, seeded
             by the step the run starts from
  callbacks  `make_callbacks`: what `loop.fit` drives (checkpoints after metrics.json,
             TensorBoard, the kNN monitors, ...)
  run        `fit`: the kNN monitors at random initialization (epoch 0 of a fresh
             run), the training loop, metrics.json's final entry
  export     `export`: the chief exports every encoder (`video_ssl.serving`)

The runner knows no method class (tests/test_layering.py): the entry point hands it
the function that builds the method, the kNN monitors' factory and the name of the
input spec file. It reads the method's contract (`video_ssl.methods.base`): `views`
(method, data), `initialize_encoders()`, `configure(...)` (restore), `input_spec()`
and, to export, `encoders`, `primary_encoder` and `encoder_model(name)`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, Sequence

import keras
import tensorflow as tf

from video_ssl import atomic, console, optim, serving
from video_ssl.data import input_spec, pipeline, preflight
from video_ssl.data.reader import (count_records, locate_damaged_record, match_files,
                                   require_records)
from video_ssl.distribute import (ClusterError, all_agree, is_chief, lost_workers,
                                  make_strategy)
from video_ssl.training import callbacks as cb
from video_ssl.training import loop
from video_ssl.training.run_lock import hold as hold_run_lock

# train.precision: Keras dtype policies (float32 variables; the layers compute in the
# policy's dtype). The losses, Sinkhorn, queues and EMA stay float32 (the methods cast
# embeddings before their losses); mixed_float16 adds dynamic loss scaling.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
EXPORT_DIR = "export"


@dataclasses.dataclass(frozen=True)
class Data:
    """The data phase's facts: the matched shards and the run's length."""
    files: list[str]
    knn_splits: tuple[list[str], list[str]] | None  # (memory bank, queries)
    steps_per_epoch: int
    total_steps: int
    options: dict  # the bound `train_input` dataset options


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The method phase's result: the method compiled with `optimizer` (the base one
    wrapped in a loss scale under mixed_float16)."""
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    base_optimizer: keras.optimizers.Optimizer


@dataclasses.dataclass(frozen=True)
class Restored:
    """The restore phase's result: where the run starts from."""
    manager: tf.train.CheckpointManager
    latest: str | None  # the checkpoint restored, None for a fresh run
    start_step: int


@dataclasses.dataclass(frozen=True)
class Callbacks:
    """The callbacks phase's result: the list `loop.fit` drives, and those the run
    phase also calls itself."""
    all: list[keras.callbacks.Callback]
    metrics: cb.MetricsJSON
    tensorboard: cb.TensorBoardScalars
    monitors: list[keras.callbacks.Callback]


@dataclasses.dataclass
class Runner:
    """A run as the `train.*` bindings of the same names describe it (documented at
    `video_ssl.train.train`), and what the entry point hands in:

    method: builds the method (called with no arguments under the strategy scope and
    the precision policy). monitors: `(model, bank_files, query_files, *, batch_size,
    every_n_epochs, k, temperature)` -> the kNN monitors (Keras callbacks whose
    `evaluate()` returns their values by log name). input_spec_file: the name of the method's input spec in model_dir.
    check_config: called once the method and its optimizer are built, before anything is
    written. build_only: stop there (nothing written, the shards not counted: a
    schedule's dry pass over its stages); `run` returns {}.
    """
    model_dir: str
    method: Callable[[], keras.Model]
    optimizer: Callable[..., keras.optimizers.Optimizer]
    monitors: Callable[..., list[keras.callbacks.Callback]]
    input_spec_file: str
    train_files: str | Sequence[str] | None
    global_batch_size: int
    epochs: int
    steps_per_epoch: int | None
    warmup_epochs: float
    strategy: str | tf.distribute.Strategy
    checkpoint_every_steps: int
    knn_bank_files: str | Sequence[str] | None
    knn_query_files: str | Sequence[str] | None
    knn_every_epochs: int
    knn_batch_size: int
    knn_k: int
    knn_temperature: float
    tensorboard_every_steps: int
    seed: int
    verbose: str | int
    jit_compile: bool
    precision: str
    extra_callbacks: Sequence[keras.callbacks.Callback]
    check_config: Callable[[], None] | None = None
    build_only: bool = False

    def __post_init__(self):
        if self.verbose not in ("auto", 0, 1, 2):
            raise ValueError(f"train.verbose: expected 'auto', 0, 1 or 2, got {self.verbose!r}")
        if self.verbose == "auto":
            self.verbose = console.progress_verbosity()
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision: expected one of {PRECISIONS}, got "
                             f"{self.precision!r}")

    def run(self) -> dict:
        """The phases in order (module docstring); returns the final metrics."""
        data = self.read_data()
        keras.utils.set_random_seed(self.seed)  # before the strategy and the method
        distribution = self.distribute()
        chief = is_chief(distribution)
        compiled = self.build_method(distribution, data)
        if self.check_config is not None:
            self.check_config()
        if self.build_only:
            return {}
        with self.output_folder(chief) as out_dir:
            restored = self.restore(compiled, distribution, data, out_dir)
            if chief:
                self.write_input_spec(compiled.model, data)
            batches = self.input_batches(compiled.model, distribution, data,
                                         restored.start_step)
            callbacks = self.make_callbacks(compiled, data, restored, out_dir)
            final = self.fit(compiled, distribution, data, restored.start_step, batches,
                             callbacks)
            if chief:
                self.export(compiled.model)
        return final

    def read_data(self) -> Data:
        """The data phase: the shards matched, and the steps per epoch counted from the
        training shards when not bound."""
        files = match_files(self.train_files, "train.train_files")
        knn_splits = None
        if self.knn_bank_files or self.knn_query_files:
            knn_splits = (match_files(self.knn_bank_files, "train.knn_bank_files"),
                          match_files(self.knn_query_files, "train.knn_query_files"))
        steps_per_epoch = self.steps_per_epoch
        if steps_per_epoch is None:
            steps_per_epoch = 1 if self.build_only else _steps_per_epoch(
                files, self.global_batch_size)
        elif not self.build_only:  # not counted, but an empty input would fail in the graph
            require_records(files, f"train.train_files={self.train_files!r}",
                            f"train.steps_per_epoch={steps_per_epoch} needs batches of "
                            f"train.global_batch_size={self.global_batch_size} videos (the "
                            "input repeats: at least one video)")
        options = input_spec.dataset_options(input_spec.train_input())
        return Data(files, knn_splits, steps_per_epoch, self.epochs * steps_per_epoch, options)

    def distribute(self) -> tf.distribute.Strategy:
        """The strategy phase."""
        distribution = make_strategy(self.strategy)
        loop.jit_placement(distribution, self.jit_compile)  # refused before anything is built
        return distribution

    def build_method(self, distribution: tf.distribute.Strategy, data: Data) -> Compiled:
        """The method phase: the method and its optimizer, compiled."""
        with dtype_policy(self.precision), distribution.scope():
            model = self.method()
            base = self.optimizer(
                global_batch_size=self.global_batch_size, total_steps=data.total_steps,
                warmup_steps=int(round(self.warmup_epochs * data.steps_per_epoch)),
                steps_per_epoch=data.steps_per_epoch)
            optimizer = (keras.optimizers.LossScaleOptimizer(base)
                         if self.precision == "mixed_float16" else base)
            _check_float16_kernels(model, self.precision)
            model.compile(optimizer=optimizer, jit_compile=self.jit_compile)
            # Slots must exist before restoring: Keras 3 variables are not restored lazily.
            optimizer.build(model.trainable_variables)
        preflight.check_audio_sample_rate(data.files, model.views)
        return Compiled(model, optimizer, base)

    @contextlib.contextmanager
    def output_folder(self, chief: bool) -> Iterator[str]:
        """Where this worker writes, from now on (the configuration holds): model_dir,
        which the chief alone locks and writes to. The other workers of a multi-worker
        run take part in the collective checkpoint saves in a temporary folder of their
        own, removed at the end (nothing of theirs lands in model_dir, however they
        stop)."""
        if chief:
            with hold_run_lock(self.model_dir):
                tf.io.gfile.makedirs(self.model_dir)
                yield self.model_dir
            return
        folder = tempfile.mkdtemp(prefix="video_ssl-worker-")
        try:
            tf.io.gfile.makedirs(folder)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def restore(self, compiled: Compiled, distribution: tf.distribute.Strategy, data: Data,
                out_dir: str) -> Restored:
        """The restore phase: every worker resumes from the chief's newest checkpoint,
        or (a fresh run) initializes the method's encoders; then the method learns the
        run's length."""
        model, optimizer = compiled.model, compiled.optimizer
        with distribution.scope():
            checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
            manager = tf.train.CheckpointManager(
                checkpoint, os.path.join(out_dir, "checkpoints"), max_to_keep=3)
            latest = tf.train.latest_checkpoint(os.path.join(self.model_dir, "checkpoints"))
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
            model.configure(total_steps=data.total_steps, steps_per_epoch=data.steps_per_epoch)
        start_step = int(optimizer.iterations.numpy())
        if not all_agree(distribution, start_step):
            raise ValueError(
                f"{self.model_dir}/checkpoints: the workers restored different steps (this "
                f"one {start_step}); every worker must see the chief's model_dir (a shared "
                f"file system or a gs:// bucket)")
        if start_step:
            print(f"Resuming from {latest} at step {start_step} of {data.total_steps}")
        return Restored(manager, latest, start_step)

    def write_input_spec(self, model: keras.Model, data: Data) -> None:
        """The method's views and encoders in model_dir, before the first step
        (evaluation, export and serving read them back), and the settings of the
        shards' flow when a view takes flow (`video_ssl.extract` computes it so)."""
        spec = model.input_spec()
        if any("flow" in view.modalities for view in model.views.values()):
            from video_ssl.data import optical_flow  # OpenCV: only for runs with flow
            flow = optical_flow.shard_settings(data.files)
            if flow:
                spec["flow"] = flow
        atomic.write_text(os.path.join(self.model_dir, self.input_spec_file),
                          json.dumps(spec, indent=1))

    def input_batches(self, model: keras.Model, distribution: tf.distribute.Strategy,
                      data: Data, start_step: int) -> tf.distribute.DistributedDataset:
        """The data phase's second half: the method's views, distributed. A resumed run
        reads other clips than the start did (the seed moves with the step)."""
        views = model.views
        for name, view in views.items():
            where = "the training step" if view.defer_augmentation else "the input pipeline"
            print(f"View {name!r}: the augmentation after the crop runs in {where} "
                  f"(train_input.defer_augmentation={view.defer_augmentation})")
        return distribution.distribute_datasets_from_function(
            lambda ctx: view_dataset(data.files, views,
                                     global_batch_size=self.global_batch_size,
                                     seed=self.seed + start_step, input_context=ctx,
                                     options=data.options))

    def make_callbacks(self, compiled: Compiled, data: Data, restored: Restored,
                       out_dir: str) -> Callbacks:
        """The callbacks phase, in the order `loop.fit` calls them."""
        metrics = cb.MetricsJSON(os.path.join(out_dir, "metrics.json"))
        callbacks = [cb.TerminateOnNonFiniteLoss(),
                     *optim.schedule_callbacks(compiled.base_optimizer),  # a plateau's updates
                     cb.WriteOperativeConfig(os.path.join(out_dir, "operative_config.gin")),
                     cb.LogLearningRate()]
        monitors = []
        if data.knn_splits:
            monitors = self.monitors(compiled.model, *data.knn_splits,
                                     batch_size=self.knn_batch_size,
                                     every_n_epochs=self.knn_every_epochs, k=self.knn_k,
                                     temperature=self.knn_temperature)
            for monitor in monitors:
                monitor.set_model(compiled.model)
            callbacks += monitors
        tensorboard = cb.TensorBoardScalars(os.path.join(out_dir, "tensorboard"),
                                            self.tensorboard_every_steps)
        # The checkpoint after metrics.json: an epoch's entry is written before the epoch's
        # last checkpoint, so a kill between the two redoes the epoch, losing nothing.
        callbacks += [metrics, tensorboard,
                      cb.StepCheckpoint(restored.manager, self.checkpoint_every_steps,
                                        saved_step=cb.checkpoint_step(restored.latest) or 0),
                      *self.extra_callbacks]
        return Callbacks(callbacks, metrics, tensorboard, monitors)

    def fit(self, compiled: Compiled, distribution: tf.distribute.Strategy, data: Data,
            start_step: int, batches, callbacks: Callbacks) -> dict:
        """The run phase: trains from `start_step` to the end and returns the final
        metrics (also metrics.json's `final`)."""
        metrics = callbacks.metrics
        if callbacks.monitors and start_step == 0:
            # The random-initialization baseline, so the logs show what training added.
            print("kNN monitor: scoring the encoders at random initialization ...")
            values = {}
            for monitor in callbacks.monitors:
                values.update(monitor.evaluate())
            metrics.record(0, {"step": 0, **values})
            callbacks.tensorboard.write("epoch", values, step=0)
        if start_step < data.total_steps:
            # Keras prints nothing until the first step is traced and compiled (minutes
            # for a large model), nor, at verbose=2, until the first epoch ends.
            print(f"Training steps {start_step + 1}-{data.total_steps} ({self.epochs} epochs "
                  f"of {data.steps_per_epoch} steps); tracing the training step first ...",
                  flush=True)
            try:
                loop.fit(compiled.model, batches, callbacks.all, strategy=distribution,
                         start_step=start_step, epochs=self.epochs,
                         steps_per_epoch=data.steps_per_epoch, verbose=self.verbose,
                         jit_compile=compiled.model.jit_compile)
            except tf.errors.OpError as error:
                explained = _explained(error, distribution, compiled.optimizer, data)
                if explained is None:
                    raise
                raise explained from error
        metrics.finish(final_metrics(
            metrics.epochs, step=int(compiled.optimizer.iterations.numpy()),
            epochs=self.epochs, steps_per_epoch=data.steps_per_epoch,
            global_batch_size=self.global_batch_size))
        return metrics.final

    def export(self, model: keras.Model) -> None:
        """The export phase (`export_encoders`)."""
        export_dir = os.path.join(self.model_dir, EXPORT_DIR)
        print(f"Exporting {', '.join(model.encoders)} to {export_dir}")
        with tf.io.gfile.GFile(os.path.join(self.model_dir, self.input_spec_file)) as f:
            flow = json.load(f).get("flow")  # what write_input_spec found
        export_encoders(model, export_dir, flow=flow)


def export_encoders(model: keras.Model, export_dir: str, flow: dict | None = None) -> None:
    """One SavedModel per encoder of the method `model`, the primary one at `export_dir`
    itself (where a single-encoder run puts it), every other at `export_dir/<name>/`.
    An encoder trained under a mixed policy computes in it there too, and returns
    float32 features. Audio encoders record their log-mel settings, flow encoders
    `flow` (the shards' flow settings, when known)."""
    views, encoders, primary = model.views, model.encoders, model.primary_encoder
    # The primary first: its folder replaces export_dir as a whole.
    for name in [primary, *(name for name in encoders if name != primary)]:
        view, modality = views[encoders[name].view], encoders[name].modality
        clip, normalization = input_spec.clip_settings(view)
        serving.export_saved_model(
            float32_outputs(model.encoder_model(name)),
            export_dir if name == primary else os.path.join(export_dir, name),
            clip=clip, normalization=normalization, modality=modality,
            audio=view.audio if modality == "audio" else None,
            flow=flow if modality == "flow" else None, overwrite=True)


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
                 input_context=None, options: dict | None = None) -> tf.data.Dataset:
    """Training batches {"views": {name: {modality: ...}}, "label", "video_id"} of a
    method's views, with the dataset `options` (default: the bound `train_input` ones)."""
    if options is None:
        options = input_spec.dataset_options(input_spec.train_input())
    return pipeline.make_view_dataset(
        files, views, training=True, batch_size=global_batch_size,
        input_context=input_context, seed=seed, **options)


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


def float32_outputs(encoder: keras.Model) -> keras.Model:
    """`encoder`, or a model around it casting its features to float32 when its layers
    compute in another dtype (train.precision)."""
    if keras.backend.standardize_dtype(encoder.compute_dtype) == "float32":
        return encoder
    inputs = keras.Input(encoder.input_shape[1:])
    features = keras.layers.Activation("linear", dtype="float32", name="float32_features")(
        encoder(inputs))
    return keras.Model(inputs, features, name=encoder.name)


def _check_float16_kernels(model: keras.Model, precision: str) -> None:
    """Without a GPU, a method with 3D max pooling cannot run in float16: TensorFlow's
    CPU has no such kernel, and says so only at the first step ("No OpKernel ...
    MaxPool3D ... DT_HALF"). One line now, with what to use instead."""
    if precision != "mixed_float16" or tf.config.list_logical_devices("GPU"):
        return
    pooling = next((layer for layer in model._flatten_layers(include_self=False)
                    if isinstance(layer, keras.layers.MaxPool3D)), None)
    if pooling is not None:
        raise ValueError(
            "train.precision='mixed_float16': TensorFlow has no float16 kernel for 3D max "
            f"pooling on the CPU (layer {pooling.name}) and this run has no GPU; use "
            "train.precision='mixed_bfloat16' or 'float32' on the CPU")


def _steps_per_epoch(files: Sequence[str], global_batch_size: int) -> int:
    records = count_records(files)
    if records < global_batch_size:
        raise ValueError(
            f"train.train_files: {records} records in {len(files)} file(s) "
            f"({files[0]}{', ...' if len(files) > 1 else ''}), fewer than one global batch "
            f"(train.global_batch_size={global_batch_size}); expected at least that many")
    return records // global_batch_size


def _explained(error: tf.errors.OpError, distribution: tf.distribute.Strategy,
               optimizer: keras.optimizers.Optimizer, data: Data) -> Exception | None:
    """A training failure said in one line: a lost worker of a multi-worker run, or
    the damaged record TensorFlow names no file for; None for other failures."""
    lost = (lost_workers(error) if isinstance(
        distribution, tf.distribute.MultiWorkerMirroredStrategy) else None)
    if lost:
        return ClusterError(
            f"train.strategy='multi_worker': {lost} after step "
            f"{int(optimizer.iterations.numpy())}; start every worker again (the same "
            f"commands) to resume from the chief's newest checkpoint")
    knn_files = [f for split in data.knn_splits or () for f in split]
    damaged = locate_damaged_record([*data.files, *knn_files], error.message)
    return None if damaged is None else ValueError(damaged)
