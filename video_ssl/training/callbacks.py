"""Keras callbacks for pre-training: step checkpoints, non-finite loss guard,
metrics.json, TensorBoard scalars, the operative gin config, the learning rate."""
from __future__ import annotations

import json
import math
import os
import time

import gin
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from video_ssl import atomic


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or Inf loss."""


def _as_float(value) -> float:
    return float(np.asarray(value))


class TerminateOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` (naming the step and the value) as soon as a batch
    reports a NaN or Inf loss. Place it before the checkpoint callback: the exception
    stops the callbacks after it, so the diverged weights are never saved."""

    def on_train_batch_end(self, batch, logs=None):
        loss = _as_float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            raise NonFiniteLossError(
                f"loss is {loss} at step {step}; training stopped, the last good checkpoint "
                "is kept (lower the learning rate or check the input data)")


def checkpoint_step(path: str | None) -> int | None:
    """The step number a `StepCheckpoint` path ends with (None for no checkpoint)."""
    return None if path is None else int(path.rsplit("-", 1)[1])


def _remove_partial_checkpoint(directory: str, step: int) -> None:
    """What a failed save of step `step` left (a full disk): TensorFlow's temporary
    folder `ckpt-N_temp/` and any of `ckpt-N`'s files. The checkpoint state file
    names a checkpoint only once it is complete, so the older ones stay in use."""
    for path in tf.io.gfile.glob(os.path.join(directory, f"*-{step}_temp*")):
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    for path in tf.io.gfile.glob(os.path.join(directory, f"*-{step}.*")):
        tf.io.gfile.remove(path)


class StepCheckpoint(keras.callbacks.Callback):
    """Saves `manager`'s checkpoint every `every_steps` optimizer steps and at the end,
    numbered by the optimizer step so that a restart can find its place.

    An epoch's last step is saved at the epoch's end rather than after its batch, so
    that the callbacks before this one (metrics.json) have written the epoch's entry
    first: a run killed between the two resumes inside the epoch and writes it again."""

    def __init__(self, manager: tf.train.CheckpointManager, every_steps: int,
                 saved_step: int | None = None):
        super().__init__()
        if every_steps < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got {every_steps}")
        self.manager = manager
        self.every_steps = every_steps
        # The step of the run's newest checkpoint. Every worker of a multi-worker run
        # passes the chief's (the one they all restored), so that all of them skip and
        # save at the same steps: a save reads cross-replica variables, which every
        # worker must do together.
        self._saved_step = (checkpoint_step(manager.latest_checkpoint) if saved_step is None
                            else saved_step)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def save(self) -> None:
        step = self._step()
        if step == self._saved_step:
            return
        # The loss of step k is computed before update k, so a diverging update shows in
        # the weights first; such weights must never replace the last good checkpoint.
        if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in self.model.trainable_variables):
            raise NonFiniteLossError(
                f"weights became NaN or Inf at step {step}; training stopped, the last good "
                "checkpoint is kept (lower the learning rate or check the input data)")
        try:
            self.manager.save(checkpoint_number=step)
        except BaseException:
            _remove_partial_checkpoint(self.manager.directory, step)
            raise
        self._saved_step = step

    def on_train_batch_end(self, batch, logs=None):
        last_of_epoch = batch + 1 == self.params.get("steps")
        if not last_of_epoch and self._step() % self.every_steps == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self._step() % self.every_steps == 0:
            self.save()

    def on_train_end(self, logs=None):
        self.save()


class WriteOperativeConfig(keras.callbacks.Callback):
    """Writes gin's operative config (the bindings actually used) after the first
    step, when every configurable has been called."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._written = False

    def on_train_batch_end(self, batch, logs=None):
        if not self._written:
            atomic.write_text(self.path, gin.operative_config_str())
            self._written = True


class MetricsJSON(keras.callbacks.Callback):
    """Keeps `metrics.json`: one entry per finished epoch (all logged values, the
    step and the cumulative training wall time) plus a `final` summary. Entries of
    earlier runs in the same model_dir are kept, so a resumed run continues the list.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.epochs: list[dict] = []
        self.final: dict = {}
        self._previous_seconds = 0.0
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                saved = json.load(f)
            self.epochs = saved.get("epochs", [])
            self._previous_seconds = saved.get("final", {}).get("wall_time_s", 0.0)
        self._start = time.time()

    def wall_time(self) -> float:
        return self._previous_seconds + time.time() - self._start

    def record(self, epoch: int, values: dict) -> None:
        """Adds (or replaces) the entry of 1-based `epoch` (0 = before training)."""
        entry = {"epoch": epoch, **{k: _jsonable(v) for k, v in values.items()},
                 "wall_time_s": round(self.wall_time(), 3)}
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [entry]
        self.epochs.sort(key=lambda e: e["epoch"])
        self.write()

    def finish(self, values: dict) -> None:
        self.final = {**{k: _jsonable(v) for k, v in values.items()},
                      "wall_time_s": round(self.wall_time(), 3)}
        self.write()

    def write(self) -> None:
        atomic.write_text(self.path, json.dumps(
            {"epochs": self.epochs, "final": self.final or {"wall_time_s": self.wall_time()}},
            indent=2))

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.record(epoch + 1, {"step": step, **(logs or {})})


def _jsonable(value):
    if isinstance(value, (int, str)):
        return value
    return _as_float(value)


class LogLearningRate(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs (metrics.json)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _as_float(self.model.optimizer.learning_rate)


# Marks a summary as a TensorBoard scalar (what `tf.summary.scalar` adds; that op lives
# in the tensorboard package, which training does not need).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


class TensorBoardScalars(keras.callbacks.Callback):
    """Writes the logged values as TensorBoard scalars against the optimizer step:
    `batch/<name>` every `every_steps` steps and `epoch/<name>` at each epoch end."""

    def __init__(self, log_dir: str, every_steps: int):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.every_steps = every_steps

    def write(self, prefix: str, values: dict, step: int) -> None:
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.write(f"{prefix}/{name}", tf.constant(_as_float(value)), step=step,
                                 metadata=_SCALAR_METADATA)
        self.writer.flush()

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        if logs and self._step() % self.every_steps == 0:
            self.write("batch", logs, self._step())

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            self.write("epoch", logs, self._step())
