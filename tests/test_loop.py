"""The project's training loop (video_ssl/training/loop.py) against Keras `model.fit`: on
one device, the same method, data and seed give bit-identical weights, optimizer state
and per-step logs, so a difference in results never comes from the loop."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tiny_methods import make_batch, make_method
from video_ssl.training import loop

EPOCHS, STEPS = 2, 2


def batches():
    """EPOCHS x STEPS different batches, in order."""
    items = [make_batch(2, seed=s) for s in range(EPOCHS * STEPS)]
    return tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *t: tf.stack(t), *items))


class StepLogs(keras.callbacks.Callback):
    """Every batch's logs, as the callbacks see them."""

    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(np.asarray(v)) for k, v in logs.items()})


def state(method) -> list[np.ndarray]:
    # In creation order: the second model's variables are named with a suffix (_1).
    return [v.numpy() for v in method.weights + method.optimizer.variables]


def trained(name, train, **kwargs):
    keras.utils.set_random_seed(0)
    method = make_method(name, 2, **kwargs)
    logs = StepLogs()
    train(method, logs)
    assert int(method.optimizer.iterations.numpy()) == EPOCHS * STEPS
    return state(method), logs.logs


def with_loop(method, logs):
    loop.fit(method, batches(), [logs], strategy=tf.distribute.get_strategy(), start_step=0,
             epochs=EPOCHS, steps_per_epoch=STEPS, verbose=0)


def with_keras_fit(method, logs):
    method.fit(batches(), epochs=EPOCHS, steps_per_epoch=STEPS, callbacks=[logs], verbose=0,
               shuffle=False)


@pytest.mark.slow
def test_loop_and_keras_fit_train_identically():
    # MoCo: its queue, momentum encoder, BN statistics and a shuffle-BN permutation drawn
    # in the step, across an epoch boundary.
    kwargs = {"bn_group_size": 2, "shuffle_bn": True}
    ours, our_logs = trained("moco", with_loop, **kwargs)
    keras_state, keras_logs = trained("moco", with_keras_fit, **kwargs)
    assert len(ours) == len(keras_state) and len(our_logs) == EPOCHS * STEPS
    for i, (a, b) in enumerate(zip(ours, keras_state)):
        np.testing.assert_array_equal(a, b, err_msg=f"variable {i}")
    assert our_logs == keras_logs
    losses = [entry["loss"] for entry in our_logs]
    assert all(np.isfinite(losses)) and len(set(losses)) > 1  # four different steps
