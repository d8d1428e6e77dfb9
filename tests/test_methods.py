"""ρMoCo/ρBYOL/ρSimCLR/ρSwAV train on tiny shapes, single-device and mirrored."""
import zlib

import gin
import numpy as np
import pytest
import tensorflow as tf

from tiny_methods import (BATCH, METHODS, SMALL, TOTAL_STEPS, fit_one_step, make_batch,
                          make_method, tiny_backbone)
from video_ssl import config as config_lib, optim
from video_ssl.methods.losses import sinkhorn
from video_ssl.methods.moco import MoCo
from video_ssl.methods.rho import rho_views
from video_ssl.methods.simclr import SimCLR
from video_ssl.methods.swav import SwAV
from video_ssl.models.heads import Prototypes, mlp_head


def _values(variables):
    return [v.numpy().copy() for v in variables]


def _check_trains(name, rho, strategy=None, eager=False):
    """Two steps: loss finite, weights change, EMA and queue behave as specified."""
    method = make_method(name, rho, strategy, eager)
    assert method.num_clips == max(rho, 2)
    batch = make_batch(method.num_clips)
    initial = _values(method.backbone.trainable_weights)
    losses = [fit_one_step(method, batch)]
    after_first = _values(method.backbone.trainable_weights)
    losses.append(fit_one_step(method, batch))
    assert np.all(np.isfinite(losses)), losses
    assert any(not np.allclose(a, b) for a, b in zip(initial, after_first))
    if name in ("moco", "byol"):
        # EMA happens before each step's update: step 0 averages equal weights; step 1
        # averages the initial momentum weights with the online weights after step 0.
        m = float(optim.annealed_momentum(1, TOTAL_STEPS, method.momentum.base_momentum))
        online = [w for w in method.backbone.weights if w.trainable]
        momentum = [t for t, o in zip(method.momentum["backbone"].weights, method.backbone.weights)
                    if o.trainable]
        assert len(momentum) == len(online) == len(initial)
        for target, start, first in zip(momentum, initial, after_first):
            np.testing.assert_allclose(target.numpy(), m * start + (1 - m) * first,
                                       rtol=1e-5, atol=1e-6)
    if name == "moco":
        per_step = BATCH * method.num_clips
        assert int(method.queue.pointer.numpy()) == 2 * per_step
        assert method.queue.filled.numpy().sum() == 2 * per_step
        if strategy is None:  # single device: keys are reproducible without shuffle-BN
            keys = tf.concat([tf.math.l2_normalize(method.momentum["projector"](
                method.momentum["backbone"](clip, training=True), training=True), -1)
                for clip in method.split_clips(batch)], axis=0)
            np.testing.assert_allclose(method.queue["keys"].numpy()[per_step:2 * per_step],
                                       keys.numpy(), rtol=1e-4, atol=1e-5)
    if name == "swav":
        kernel = method.prototypes.kernel.numpy()
        np.testing.assert_allclose(np.linalg.norm(kernel, axis=1), 1.0, rtol=1e-4)
    return method


@pytest.mark.parametrize("rho", [1, 2, 3])
@pytest.mark.parametrize("name", list(METHODS))
def test_trains_single_device(name, rho):
    # rho=1 and 2 run the same computation (two clips); graph mode is exercised at rho=3
    # and by the mirrored tests, eager mode keeps the other cases cheap.
    _check_trains(name, rho, eager=rho < 3)


def test_sinkhorn_uses_global_batch_statistics_across_replicas(mirrored):
    """Sinkhorn inside a replica context normalizes over the global batch."""
    scores = tf.random.normal((8, 5))
    expected = sinkhorn(scores).numpy()
    halves = mirrored.experimental_distribute_values_from_function(
        lambda context: scores[4 * context.replica_id_in_sync_group:][:4])
    result = mirrored.run(tf.function(sinkhorn), args=(halves,))
    got = np.concatenate([t.numpy() for t in mirrored.experimental_local_results(result)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rho", [1, pytest.param(2, marks=pytest.mark.slow),
                                 pytest.param(3, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["moco", "byol"])
def test_trains_mirrored(name, rho, mirrored):
    _check_trains(name, rho, mirrored)


@pytest.mark.parametrize("rho", [3, pytest.param(1, marks=pytest.mark.slow),
                                 pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["simclr", "swav"])
def test_mirrored_matches_single_device(name, rho, mirrored):
    """The same global batch gives the same loss and the same update (gradients flow
    back through the cross-replica gather; Sinkhorn and SyncBN see the global batch)."""
    single = make_method(name, rho, eager=True)
    replicated = make_method(name, rho, mirrored)
    replicated.set_weights(single.get_weights())
    batch = make_batch(single.num_clips)
    np.testing.assert_allclose(fit_one_step(replicated, batch), fit_one_step(single, batch),
                               rtol=1e-4)
    for a, b in zip(single.trainable_weights, replicated.trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-5, err_msg=a.path)


def test_swav_prototypes_frozen_during_first_steps():
    method = make_method("swav", 2, eager=True)  # freeze_prototypes_steps=1
    before = method.prototypes.kernel.numpy().copy()
    batch = make_batch(2)
    fit_one_step(method, batch)
    frozen = method.prototypes.kernel.numpy()
    # Weight decay only shrinks the rows; their directions are kept.
    np.testing.assert_allclose(frozen / np.linalg.norm(frozen, axis=1, keepdims=True), before,
                               rtol=1e-5, atol=1e-6)
    fit_one_step(method, batch)
    assert not np.allclose(method.prototypes.kernel.numpy(), before, atol=1e-6)


def test_checkpoint_restores_queue_and_momentum_encoder(tmp_path):
    method = make_method("moco", 2, eager=True)
    fit_one_step(method, make_batch(2))
    path = tf.train.Checkpoint(model=method).write(str(tmp_path / "ckpt"))
    restored = make_method("moco", 2, eager=True)
    status = tf.train.Checkpoint(model=restored).read(path)
    status.assert_existing_objects_matched().expect_partial()  # optimizer not built yet
    for a, b in [(method.queue["keys"], restored.queue["keys"]),
                 (method.queue.pointer, restored.queue.pointer),
                 (method.queue.filled, restored.queue.filled),
                 (method.total_steps, restored.total_steps)]:
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
    assert int(restored.queue.pointer.numpy()) > 0
    for a, b in zip(method.momentum.weights, restored.momentum.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)


def _simclr_numpy(embeddings, temperature, clip_pairs):
    """Eq. (1) over all clips of all videos, self excluded, per clip subset, averaged."""
    results = []
    for clips in clip_pairs:
        z = embeddings[clips].reshape(-1, embeddings.shape[-1])  # clip-major rows
        video = np.tile(np.arange(embeddings.shape[1]), len(clips))
        similarity = np.exp(z @ z.T / temperature)
        np.fill_diagonal(similarity, 0.0)
        positive = (video[:, None] == video[None, :]) & ~np.eye(len(z), dtype=bool)
        results.append(np.mean(-np.log((similarity * positive).sum(1) / similarity.sum(1))))
    return np.mean(results)


@pytest.mark.parametrize("positives,pairs", [("all", [[0, 1, 2]]),
                                             ("consecutive", [[0, 1], [1, 2]])])
def test_simclr_loss_matches_numpy(positives, pairs):
    method = SimCLR(rho_views(3), tiny_backbone(), positives=positives, **SMALL)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(3, 5, 8))
    embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True)
    tensor = tf.constant(embeddings, tf.float32)
    got = (method.contrastive_loss(tensor) if positives == "all" else
           np.mean([method.contrastive_loss(tensor[i:i + 2]) for i in range(2)]))
    np.testing.assert_allclose(float(got), _simclr_numpy(embeddings, 0.1, pairs), rtol=1e-5)


def test_bad_batch_names_key_and_expected_shape():
    method = SimCLR(rho_views(3), tiny_backbone(), **SMALL)
    with pytest.raises(ValueError, match=r"batch\['views'\]\['clips'\]\['rgb'\].*3 clips"):
        method.split_clips(make_batch(2))
    with pytest.raises(ValueError, match="'views'.*'clips'"):
        method.split_clips(make_batch(3)["views"]["clips"]["rgb"])
    with pytest.raises(ValueError, match="rho"):
        rho_views(0)


def test_methods_are_gin_configurable():
    config_lib.register_configurables()
    with gin.unlock_config():
        gin.parse_config(["MoCo.queue_size = 32", "MoCo.temperature = 0.2",
                          "MoCo.views = @rho_views()", "rho_views.rho = 3"])
    try:
        method = config_lib.method_configurable("MoCo")(backbone=tiny_backbone(), **SMALL)
        plain = MoCo(rho_views(2), tiny_backbone(), **SMALL)  # Python alone reads no gin
    finally:
        gin.clear_config()
    assert (method.queue.size, method.temperature, method.num_clips) == (32, 0.2, 3)
    assert (plain.queue.size, plain.temperature, plain.num_clips) == (65536, 0.1, 2)


def test_heads_follow_the_recipes():
    byol = mlp_head(6, hidden_dim=12, output_dim=4, num_layers=2, batch_norm=True, name="p")
    assert [type(layer).__name__ for layer in byol.layers] == [
        "Dense", "BatchNormalization", "ReLU", "Dense"]
    assert not byol.layers[0].use_bias and byol.output_shape == (None, 4)
    moco = mlp_head(6, hidden_dim=12, output_dim=4, num_layers=3, batch_norm=False)
    assert [type(layer).__name__ for layer in moco.layers].count("Dense") == 3
    assert "BatchNormalization" not in [type(layer).__name__ for layer in moco.layers]
    prototypes = Prototypes(5)
    prototypes.build((None, 3))
    prototypes.kernel.assign(prototypes.kernel * 3.0)
    prototypes.normalize()
    np.testing.assert_allclose(np.linalg.norm(prototypes.kernel.numpy(), axis=1), 1.0, rtol=1e-6)


@pytest.mark.slow
def test_registry_backbone_trains():
    method = SwAV(rho_views(2), "slow_r18", backbone_kwargs=dict(width_multiplier=1 / 8),
                  num_prototypes=10, total_steps=TOTAL_STEPS, **SMALL)
    method.compile(optimizer=optim.LARS(0.1), jit_compile=False)
    assert np.isfinite(fit_one_step(method, make_batch(2)))


# Recorded with the method code before the generic method layer (commit 608b18b), on
# the weights `_pinned_weights` sets and `make_batch(num_clips, seed=3)`: both steps'
# losses and the L1 size of the backbone + projector update. The rewrite must keep them.
PINNED = {
    ("moco", 1): ([0.22897052764892578, 2.2255702018737793], 0.06819726788671687),
    ("moco", 3): ([0.12077697366476059, 1.964015841484069], 0.03735692985355854),
    ("byol", 1): ([2.3737576007843018, 2.371070623397827], 0.014825992926489562),
    ("byol", 3): ([2.3727426528930664, 2.3705105781555176], 0.012812975444830954),
    ("simclr", 1): ([5.391260147094727, 5.268726348876953], 0.36996100115356967),
    ("simclr", 3): ([3.408400297164917, 3.316742181777954], 0.31872651021694764),
    ("swav", 1): ([5.4468092918396, 5.418776988983154], 0.16653831410803832),
    ("swav", 3): ([4.540081977844238, 4.509296417236328], 0.15067105149501003),
}


def _pinned_weights(method):
    """Deterministic weights by module role and position (independent of variable
    paths); momentum encoders start as copies; MoCo's queue from a fixed draw."""
    roles = [("backbone", method.backbone), ("projector", method.projector)] + [
        (role, getattr(method, role)) for role in ("predictor", "prototypes")
        if hasattr(method, role)]
    for role, module in roles:
        for i, variable in enumerate(module.weights):
            rng = np.random.default_rng(zlib.crc32(f"{role}/{i}".encode()))
            if variable.name in ("moving_variance", "gamma"):
                variable.assign(1.0 + 0.1 * rng.random(variable.shape).astype("float32"))
            else:
                variable.assign(0.2 * rng.standard_normal(variable.shape).astype("float32"))
    if hasattr(method, "momentum"):
        for name, online in method.online_modules().items():
            for target, source in zip(method.momentum[name].weights, online.weights):
                target.assign(source)
    if hasattr(method, "queue"):
        keys = np.random.default_rng(7).standard_normal(method.queue["keys"].shape)
        method.queue["keys"].assign((keys / np.linalg.norm(keys, axis=1, keepdims=True))
                                    .astype("float32"))


@pytest.mark.parametrize("name,rho", list(PINNED))
def test_losses_and_updates_match_the_pinned_values(name, rho):
    method = make_method(name, rho)
    _pinned_weights(method)
    trained = method.backbone.trainable_weights + method.projector.trainable_weights
    before = _values(trained)
    batch = make_batch(method.num_clips, seed=3)
    losses = [fit_one_step(method, batch) for _ in range(2)]
    delta = sum(float(np.abs(v.numpy() - b).sum()) for v, b in zip(trained, before))
    expected_losses, expected_delta = PINNED[name, rho]
    np.testing.assert_allclose(losses, expected_losses, rtol=2e-5)
    np.testing.assert_allclose(delta, expected_delta, rtol=1e-3)
