"""LARS / coupled-L2 SGD against a NumPy reference; schedules and momentum annealing."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from video_ssl import optim


def _variables():
    """Random values in variables with real Keras paths (dense/kernel, head/bias, ...)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense"),
                              keras.layers.Dense(2, name="head")])
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    return {v.path: v for v in model.trainable_variables}, rng


def _reference_step(w, g, buffer, *, lr, wd, momentum, nesterov, trust, excluded):
    """One step of the recipe's LARS (trust=None: SGD with coupled L2), in NumPy."""
    if not excluded:
        g = g + wd * w
        if trust is not None:
            g = g * trust * np.linalg.norm(w) / np.linalg.norm(g)
    buffer = momentum * buffer + g
    step = g + momentum * buffer if nesterov else buffer
    return w - lr * step, buffer


@pytest.mark.parametrize("name,nesterov", [("lars", False), ("lars", True), ("sgd", False)])
def test_two_steps_match_numpy_reference(name, nesterov):
    variables, rng = _variables()
    kwargs = dict(learning_rate=0.5, momentum=0.9, nesterov=nesterov, weight_decay=0.01,
                  exclude_patterns=("head/",))
    optimizer = (optim.LARS(trust_coefficient=0.001, **kwargs) if name == "lars"
                 else optim.SGD(exclude_vectors=False, **kwargs))
    var_list = list(variables.values())
    expected = {p: (v.numpy(), np.zeros(v.shape)) for p, v in variables.items()}
    for _ in range(2):
        grads = {p: rng.normal(size=v.shape).astype(np.float32) for p, v in variables.items()}
        optimizer.apply([tf.constant(grads[p]) for p in variables], var_list)
        for p in variables:
            excluded = "head/" in p or (name == "lars" and p.endswith("bias"))
            expected[p] = _reference_step(
                *expected[p][:1], grads[p], expected[p][1], lr=0.5, wd=0.01, momentum=0.9,
                nesterov=nesterov, trust=0.001 if name == "lars" else None, excluded=excluded)
    for p, v in variables.items():
        np.testing.assert_allclose(v.numpy(), expected[p][0], rtol=1e-5, atol=1e-6, err_msg=p)


def test_optimizer_config_round_trips():
    optimizer = optim.LARS(learning_rate=0.3, weight_decay=1e-6, nesterov=True,
                           exclude_patterns=("prototypes",))
    clone = optim.LARS.from_config(optimizer.get_config())
    assert (clone.coupled_weight_decay, clone.nesterov, clone.exclude_patterns,
            clone.trust_coefficient, clone.exclude_vectors) == (1e-6, True, ("prototypes",),
                                                                0.001, True)


def test_warmup_cosine_values():
    schedule = optim.WarmupCosine(2.0, total_steps=100, warmup_steps=10,
                                  warmup_start_learning_rate=0.1)
    cosine_at_10 = 2.0 * 0.5 * (1 + math.cos(math.pi * 10 / 100))
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 150)]
    np.testing.assert_allclose(values, [0.1, 0.1 + (cosine_at_10 - 0.1) / 2, cosine_at_10,
                                        2.0 * 0.5 * (1 + math.cos(math.pi * 0.55)), 0.0, 0.0],
                               atol=1e-6)
    no_warmup = optim.WarmupCosine(2.0, total_steps=100)
    np.testing.assert_allclose([float(no_warmup(0)), float(no_warmup(50))], [2.0, 1.0], atol=1e-6)


def test_warmup_cosine_serializes():
    schedule = optim.WarmupCosine(1.5, total_steps=40, warmup_steps=4)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, optim.WarmupCosine)
    assert float(restored(3)) == pytest.approx(float(schedule(3)))


def test_warmup_cosine_rejects_bad_lengths():
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.WarmupCosine(1.0, total_steps=10, warmup_steps=20)


def test_momentum_annealing_endpoints():
    values = [float(optim.annealed_momentum(k, 100, 0.994)) for k in (0, 50, 100, 200)]
    np.testing.assert_allclose(values, [0.994, 0.997, 1.0, 1.0], atol=1e-6)


def test_build_optimizer_scales_learning_rate_linearly():
    optimizer = optim.build_optimizer("lars", base_learning_rate=4.8, global_batch_size=1024,
                                      total_steps=100, warmup_steps=0, weight_decay=1e-6)
    assert isinstance(optimizer, optim.LARS) and optimizer.exclude_vectors
    assert float(optimizer.learning_rate) == pytest.approx(9.6)
    sgd = optim.build_optimizer("sgd", base_learning_rate=0.4, global_batch_size=256,
                                total_steps=10, weight_decay=1e-4)
    assert type(sgd) is optim.SGD and not sgd.exclude_vectors
    assert float(sgd.learning_rate) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="build_optimizer.name"):
        optim.build_optimizer("adam", base_learning_rate=1, global_batch_size=1, total_steps=1)
