"""train.precision and train.jit_compile: under a mixed policy the layers compute in
bfloat16/float16 while the embeddings reaching the losses, Sinkhorn, the queue and the
EMA stay float32; a LossScaleOptimizer's scaled step equals the plain step; the
replicas agree to skip an overflowing step; both bindings through the trainer."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import cli
from tiny_methods import METHODS, fit_one_step, make_batch, make_method, tiny_backbone
from video_ssl import config as config_lib, distribute, train as train_lib
from video_ssl.methods.moco import MoCo
from video_ssl.methods.rho import rho_views
from video_ssl.methods.simclr import SimCLR
from video_ssl.training import runner


@pytest.fixture(autouse=True)
def _float32_afterwards():
    yield
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks to other tests


def build(name, precision="float32", optimizer=None, eager=False):
    """A tiny method; `eager` skips graph tracing, which dominates the cost at this size."""
    with runner.dtype_policy(precision):
        method = METHODS[name](views=rho_views(2), backbone=tiny_backbone(), total_steps=10)
    method.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), jit_compile=False,
                   run_eagerly=eager)
    return method


def float_dtypes(variables):
    return {str(v.dtype) for v in variables if "float" in str(v.dtype)}


@pytest.mark.parametrize("name", ["moco", "swav"])
def test_bfloat16_layers_with_float32_losses_queue_and_ema(name):
    method = build(name, "mixed_bfloat16")
    assert method.backbone.layers[1].compute_dtype == "bfloat16"  # the policy took hold
    assert float_dtypes(method.weights) == {"float32"}
    clip = make_batch(2)["views"]["clips"]["rgb"][:, 0]
    head = lambda x: method.projector(method.backbone(x, training=True), training=True)
    assert head(clip).dtype == tf.bfloat16 and method.grouped(head, clip).dtype == tf.float32
    if name == "swav":
        assert method.embed(clip).dtype == tf.float32  # the scores Sinkhorn sees
    queue_before = method.queue["keys"].numpy().copy() if name == "moco" else None
    kernel = method.momentum["backbone"].layers[1].kernel if name == "moco" else None
    kernel_before = kernel.numpy().copy() if name == "moco" else None
    losses = [fit_one_step(method, make_batch(2)) for _ in range(2)]
    assert np.isfinite(losses).all()
    if name == "moco":
        assert method.queue["keys"].dtype == "float32"
        assert not np.allclose(queue_before, method.queue["keys"].numpy())  # enqueued
        assert float_dtypes(method.momentum["backbone"].weights) == {"float32"}
        # Step 2's EMA (step 1's averaged equal weights) moved the momentum kernel.
        assert kernel.dtype == "float32" and not np.allclose(kernel.numpy(), kernel_before)


@pytest.mark.parametrize("name", ["moco", "simclr"])
def test_loss_scaled_step_equals_the_plain_step(name):
    """float32 layers, a fixed loss scale of 2^10 (no overflow at this size): the method
    scales its loss, the LossScaleOptimizer divides the gradients back, and the update
    is the plain optimizer's."""
    plain = build(name, optimizer=keras.optimizers.SGD(0.5, momentum=0.9), eager=True)
    scaled = build(name, optimizer=keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.5, momentum=0.9), initial_scale=2.0**10), eager=True)
    initial = plain.get_weights()
    scaled.set_weights(initial)
    batch = make_batch(2, seed=3)
    np.testing.assert_allclose(fit_one_step(scaled, batch), fit_one_step(plain, batch),
                               rtol=1e-6)
    assert float(scaled.optimizer.dynamic_scale.numpy()) == 2.0**10  # the step was finite
    for a, b in zip(plain.trainable_weights, scaled.trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)
    assert any(not np.allclose(a, b) for a, b in zip(initial, scaled.get_weights()))  # it trained


def test_replicas_agree_to_skip_an_overflowing_step(mirrored):
    """Replica 1's gradient overflows: both replicas hand NaN to the optimizer, so both
    skip; when all are finite nothing changes."""
    @tf.function(autograph=False)  # as the training step is traced
    def run(overflow):
        def replica():
            index = tf.distribute.get_replica_context().replica_id_in_sync_group
            bad = tf.logical_and(overflow, tf.equal(index, 1))
            gradient = tf.where(bad, float("inf"), 1.0) * tf.ones([3])
            return distribute.nonfinite_on_all_if_on_any([gradient, None])[0]
        return mirrored.experimental_local_results(mirrored.run(replica))
    assert all(np.isnan(g.numpy()).all() for g in run(tf.constant(True)))
    assert all((g.numpy() == 1.0).all() for g in run(tf.constant(False)))
    assert distribute.nonfinite_on_all_if_on_any([None]) == [None]  # one replica: as is


class Capture(keras.callbacks.Callback):
    """What the trainer built, seen from a callback: the model and each step's logs."""

    def on_train_batch_end(self, batch, logs=None):
        self.logs = dict(logs)


def _train(tmp_path, shards, *params, **arguments):
    argv = cli(tmp_path, shards, tmp_path / "run", "train.epochs=1",
               "train.steps_per_epoch=1", *params)
    args = train_lib.parse_flags(argv)
    config_lib.parse_gin(args.gin_file, args.gin_param)
    capture = Capture()
    final = train_lib.train(str(tmp_path / "run"), extra_callbacks=[capture], **arguments)
    return capture.model, capture.logs, final


@pytest.mark.slow
def test_trainer_mixed_float16_wraps_the_optimizer_in_loss_scaling(tmp_path, shards):
    """The recipe's MoCo on the tiny backbone: TensorFlow's CPU kernels have no float16
    MaxPool3D, which the registry's ResNets start with (mixed_float16 is for GPUs)."""
    model, logs, final = _train(tmp_path, shards, "train.precision='mixed_float16'",
                                method=lambda: MoCo(rho_views(2), tiny_backbone()))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.backbone.layers[1].compute_dtype == "float16"
    assert float_dtypes(model.weights) == {"float32"} and model.queue["keys"].dtype == "float32"
    assert np.isfinite(logs["loss"]) and final["step"] in (0, 1)  # 0: an overflow skipped it
    exported = tf.saved_model.load(str(tmp_path / "run" / "export"))
    features = exported.serve(tf.random.uniform([2, 4, 32, 32, 3]))["features"]
    assert features.dtype == tf.float32 and np.isfinite(features.numpy()).all()


@pytest.mark.slow
def test_trainer_jit_compile_trains_a_step_with_xla(tmp_path, shards):
    """The tiny backbone: XLA takes ~40 s to compile the registry's Slow R-18 on a CPU.
    Then a resume under another precision."""
    model, logs, final = _train(tmp_path, shards, "train.jit_compile=True",
                                method=lambda: MoCo(rho_views(2), tiny_backbone()))
    assert model.jit_compile is True
    assert np.isfinite(logs["loss"]) and final["step"] == 1
    # Resuming that float32 run under mixed_float16 (a loss scale in the optimizer's
    # checkpoint) is one line naming the checkpoint.
    gin.clear_config()
    with pytest.raises(ValueError, match=r"ckpt-1: does not match this run's method and "
                                         r"optimizer \(.*\); resume with the bindings"):
        _train(tmp_path, shards, "train.epochs=2", "train.precision='mixed_float16'",
               method=lambda: MoCo(rho_views(2), tiny_backbone()))


def test_unknown_precision_is_one_line(tmp_path, shards, capsys):
    code = train_lib.main(cli(tmp_path, shards, tmp_path / "run", "train.precision='fp16'"))
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "video_ssl.train: error: train.precision: expected one of ('float32', "
        "'mixed_bfloat16', 'mixed_float16'), got 'fp16'")
    assert not (tmp_path / "run").exists()


def test_jit_with_several_cpu_replicas_is_refused(mirrored):
    from video_ssl.training import loop
    method = make_method("simclr", 2, mirrored, eager=True)
    with pytest.raises(ValueError, match=r"train.jit_compile=True with 2 replicas on "
                                         r".*CPU:0, .*CPU:1: XLA compiles several"):
        loop.make_train_function(method, mirrored, jit_compile=True)
    loop.make_train_function(method, mirrored, jit_compile=False)  # fine


def test_a_step_that_does_not_scale_its_loss_is_refused():
    """A method differentiating its loss without `scaled_for_gradients` would have its
    gradients divided by the loss scale: named at the first step."""
    class Unscaled(SimCLR):
        def train_step(self, data):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(self.backbone(self.split_clips(data)[0]) ** 2)
            self.apply_and_track(loss, tape.gradient(loss, self.trainable_variables),
                                 self.trainable_variables)
            return {"loss": self.loss_tracker.result()}
    method = Unscaled(rho_views(2), tiny_backbone(), hidden_dim=16, embedding_dim=8)
    method.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)),
                   run_eagerly=True)
    with pytest.raises(ValueError, match="Unscaled.train_step differentiates a loss that "
                                         "Method.scaled_for_gradients did not scale"):
        fit_one_step(method, make_batch(2))
