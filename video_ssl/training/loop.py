"""The training loop: a method's `train_step` under `strategy.run` in a `tf.function`,
driving Keras callbacks exactly where `model.fit` calls them.

Why not `model.fit`: Keras 3's fit cannot feed a MultiWorkerMirroredStrategy
(keras-team/keras#20585: its data adapter hands the step a dict of PerReplica values
to convert to one tensor). This loop serves every strategy (default, mirrored,
multi_worker, tpu), so each behaviour stays one Keras callback (checkpoints,
metrics.json, TensorBoard, the NaN stop, the kNN monitor, the learning-rate log, a
plateau schedule) whichever strategy runs, and the path multi-worker runs take is the
one every single-process test takes.

What it keeps of fit: a `keras.callbacks.CallbackList` with the progress bar and
History (`verbose` as in fit), `on_train_begin`, `on_epoch_begin` (after the metrics
are reset), `on_train_batch_begin/end(batch, logs)`, `on_epoch_end(epoch, logs)` with
the last step's logs, `on_train_end`, `model.stop_training`, and the step's returned
values averaged over the replicas (fit's reduction for training). What it does
differently: one input iterator for the whole run (fit makes one per call), and after a
restart mid-epoch the batch numbers continue the epoch's (`batch + 1 == steps` is the
epoch's last step, as StepCheckpoint needs).

On one device the two train identically: the same method, batches and seed give
bit-identical weights, optimizer state and per-step logs after N steps across epochs
(tests/test_loop.py). Both run the method's `train_step`, and every random draw in a
step is stateless, seeded by the batch or the step, not by a graph-level RNG stream.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def make_train_function(model: keras.Model, strategy: tf.distribute.Strategy, *,
                        jit_compile: bool = False):
    """`train_function(iterator) -> logs`: one step on the next distributed batch.

    `jit_compile`: with one replica, XLA compiles the step on a batch (its `train_step`
    and logs) as Keras' own trainer does; taking the batch from the iterator stays
    outside. With several replicas on GPUs it compiles each replica's `train_step`
    (TensorFlow's path for XLA under MirroredStrategy on GPUs, where the cross-replica
    updates need no merge_call; untested: this was written on a machine without GPUs);
    on CPUs TensorFlow cannot compile a replica's step on a device other than the
    first ("Trying to access resource ... located in device CPU:1"), so that is
    refused. TPUStrategy compiles everything with XLA anyway.
    """
    outer, per_replica = jit_placement(strategy, jit_compile)
    replica_step = model.train_step
    if per_replica:
        replica_step = tf.function(model.train_step, jit_compile=True, autograph=False)
    several = strategy.num_replicas_in_sync > 1

    def reduce(value):
        # Under MultiWorkerMirroredStrategy a worker with one device gets plain tensors
        # from `run`; `reduce` still averages them over the workers.
        if several:
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
        return value

    @tf.function(jit_compile=outer, autograph=False, reduce_retracing=True)
    def one_step(data):
        outputs = strategy.run(replica_step, args=(data,))
        return {name: reduce(value) for name, value in outputs.items()}

    @tf.function(autograph=False)
    def train_function(iterator):
        return one_step(next(iterator))

    return train_function


def jit_placement(strategy: tf.distribute.Strategy, jit_compile: bool) -> tuple[bool, bool]:
    """(compile the whole step, compile each replica's step) for `jit_compile` (see
    `make_train_function`); a ValueError for several replicas on CPUs."""
    if not jit_compile or isinstance(strategy, tf.distribute.TPUStrategy):
        return False, False  # TPUs: XLA anyway
    if strategy.num_replicas_in_sync == 1:
        return True, False
    devices = strategy.extended.worker_devices
    if not all("GPU" in device.upper() for device in devices):
        raise ValueError(
            f"train.jit_compile=True with {strategy.num_replicas_in_sync} replicas on "
            f"{', '.join(devices)}: XLA compiles several replicas' steps on GPUs or TPUs "
            f"only; on CPUs use one replica (train.strategy='default')")
    return False, True


def fit(model: keras.Model, dataset, callbacks, *, strategy: tf.distribute.Strategy,
        start_step: int, epochs: int, steps_per_epoch: int, verbose: int = 1,
        jit_compile: bool = False) -> keras.callbacks.History:
    """Trains from optimizer step `start_step` to `epochs * steps_per_epoch` on the
    distributed `dataset`: first the rest of a partly trained epoch, then whole epochs,
    so epoch boundaries stay where an uninterrupted run puts them."""
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch, model=model)
    train_function = make_train_function(model, strategy, jit_compile=jit_compile)
    iterator = iter(dataset)
    first_epoch, done = divmod(start_step, steps_per_epoch)
    model.stop_training = False
    callback_list.on_train_begin()
    logs, epoch_logs = {}, None
    for epoch in range(first_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for batch in range(done if epoch == first_epoch else 0, steps_per_epoch):
            callback_list.on_train_batch_begin(batch)
            logs = train_function(iterator)
            callback_list.on_train_batch_end(batch, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=epoch_logs)
    return model.history
