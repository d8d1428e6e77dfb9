"""LARS / coupled-L2 SGD against a NumPy reference, coupled-L2 Adam against Keras'
Adam, learning-rate multipliers, the cosine / step / plateau schedules (the plateau
state through a checkpoint), bindings without effect, momentum annealing, and the
optimizer spec (its errors, `build_optimizer` as its gin front)."""
import math

import gin
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


def test_nesterov_lars_matches_the_official_brave_form_at_a_constant_rate():
    """BraVe's official LARS (optax.lars, deepmind/brave brave/models/brave/config.py:46-52:
    Nesterov, momentum 0.9, trust 0.001) applies the rate before the momentum trace:
    u = -lr g', t <- u + m t, step u + m t. At a constant rate that is this LARS's
    PyTorch form, by hand over three steps."""
    variables, rng = _variables()
    optimizer = optim.LARS(learning_rate=0.5, momentum=0.9, nesterov=True, weight_decay=0.01,
                           trust_coefficient=0.001)
    var_list = list(variables.values())
    weights = {p: v.numpy().astype(np.float64) for p, v in variables.items()}
    trace = {p: np.zeros(v.shape) for p, v in variables.items()}
    for _ in range(3):
        grads = {p: rng.normal(size=v.shape).astype(np.float32) for p, v in variables.items()}
        optimizer.apply([tf.constant(grads[p]) for p in variables], var_list)
        for p, w in weights.items():
            g = grads[p].astype(np.float64)
            if not p.endswith("bias"):  # 1-D: no weight decay, no trust ratio
                g = g + 0.01 * w
                g = g * 0.001 * np.linalg.norm(w) / np.linalg.norm(g)
            u = -0.5 * g
            trace[p] = u + 0.9 * trace[p]
            weights[p] = w + u + 0.9 * trace[p]
    for p, v in variables.items():
        np.testing.assert_allclose(v.numpy(), weights[p], rtol=1e-5, atol=1e-6, err_msg=p)


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
        optim.build_optimizer("rmsprop", base_learning_rate=1, global_batch_size=1,
                              total_steps=1)


def test_build_optimizer_adam_step_schedule_and_multipliers():
    optimizer = optim.build_optimizer(
        "adam", base_learning_rate=1e-3, global_batch_size=64, reference_batch_size=None,
        total_steps=100, steps_per_epoch=10, schedule="step", decay_epochs=(4, 8),
        weight_decay=1e-5, lr_multipliers={"predictor": 10.0})
    assert type(optimizer) is optim.Adam and optimizer.coupled_weight_decay == 1e-5
    assert optimizer.lr_multipliers == {"predictor": 10.0}
    schedule = optimizer._learning_rate
    assert [float(schedule(s)) for s in (39, 40, 80)] == pytest.approx([1e-3, 1e-4, 1e-5])
    restored = optim.Adam.from_config(optimizer.get_config())
    assert restored.lr_multipliers == {"predictor": 10.0}
    assert restored.coupled_weight_decay == 1e-5
    assert isinstance(restored._learning_rate, optim.StepDecay)


# ------------------------------------------------------------ per-variable rules


def _copies():
    """Two models with the same random weights: {path after the model's name: variable}
    x 2 (the second model's name is uniquified)."""
    first, _ = _variables()
    second, rng = _variables()

    def by_layer(variables):
        return {p.split("/", 1)[1]: v for p, v in variables.items()}
    return by_layer(first), by_layer(second), rng


@pytest.mark.parametrize("name", ["sgd", "lars", "adam"])
def test_lr_multipliers_reach_exactly_the_matched_variables(name):
    scaled, plain, rng = _copies()
    kernel = scaled["dense/kernel"]
    # LARS' trust ratio (0.001) makes steps small: a larger rate keeps them measurable.
    common = dict(learning_rate=10.0 if name == "lars" else 0.1, weight_decay=0.01,
                  exclude_vectors=False)
    make = {"sgd": optim.SGD, "lars": optim.LARS, "adam": optim.Adam}[name]
    # head/ x10 by path; dense/kernel x0 by variable list; dense/bias untouched.
    with_rules = make(lr_multipliers={"head/": 10.0},
                      variable_lr_multipliers=[([kernel], 0.0)], **common)
    reference = make(**common)
    start = {p: v.numpy().copy() for p, v in plain.items()}
    # One step: every optimizer's first update is linear in the learning rate.
    grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in plain.values()]
    with_rules.apply(grads, list(scaled.values()))
    reference.apply(grads, list(plain.values()))
    factors = {"dense/kernel": 0.0, "dense/bias": 1.0, "head/kernel": 10.0, "head/bias": 10.0}
    for path, factor in factors.items():
        moved = scaled[path].numpy() - start[path]
        reference_move = plain[path].numpy() - start[path]
        assert np.abs(reference_move).max() > 1e-4, path
        # Differences of float32 weights near 1: tolerance of a few ulps.
        np.testing.assert_allclose(moved, factor * reference_move, rtol=1e-3, atol=1e-6,
                                   err_msg=path)
    np.testing.assert_array_equal(scaled["dense/kernel"].numpy(), start["dense/kernel"])


def test_a_variable_matched_twice_is_an_error():
    variables, _, _ = _copies()
    optimizer = optim.SGD(lr_multipliers={"head/": 10.0},
                          variable_lr_multipliers=[([variables["head/bias"]], 0.1)])
    with pytest.raises(ValueError, match="head/bias' matches path substring 'head/' and "
                                         "variable list 0"):
        optimizer.build(list(variables.values()))


def test_coupled_l2_adam_equals_adam_on_the_decayed_gradient():
    ours, reference_vars, rng = _copies()
    adam = optim.Adam(learning_rate=0.01, weight_decay=0.1, exclude_patterns=("head/",))
    reference = keras.optimizers.Adam(learning_rate=0.01, epsilon=1e-8)
    for _ in range(3):
        grads = {p: rng.normal(size=v.shape).astype(np.float32) for p, v in ours.items()}
        decayed = [tf.constant(g if "head/" in p else g + 0.1 * reference_vars[p].numpy())
                   for p, g in grads.items()]
        adam.apply([tf.constant(g) for g in grads.values()], list(ours.values()))
        reference.apply(decayed, list(reference_vars.values()))
    for path, v in ours.items():
        np.testing.assert_allclose(v.numpy(), reference_vars[path].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=path)


# ------------------------------------------------------------------- schedules


def test_step_decay_boundaries():
    schedule = optim.StepDecay(1.0, boundaries=(60, 120), factor=0.1)
    values = [float(schedule(s)) for s in (0, 59, 60, 119, 120, 500)]
    assert values == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    by_epoch = optim.make_schedule("step", 1.0, total_steps=200, steps_per_epoch=10,
                                   decay_epochs=(6, 12))
    assert [float(by_epoch(s)) for s in (59, 60, 119, 120)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01])
    warm = optim.StepDecay(2.0, boundaries=(20,), warmup_steps=10)
    assert [float(warm(s)) for s in (0, 5, 10, 20)] == pytest.approx([0.0, 1.0, 2.0, 0.2])
    with pytest.raises(ValueError, match="decay_epochs=\\[6, 6\\]: expected increasing"):
        optim.make_schedule("step", 1.0, total_steps=1, steps_per_epoch=10,
                            decay_epochs=(6, 6))
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        optim.make_schedule("step", 1.0, total_steps=1, decay_epochs=(6,))
    assert optim.make_schedule("constant", 0.3, total_steps=5) == 0.3


def test_plateau_decays_after_patience_and_only_then():
    schedule = optim.PlateauSchedule(1.0, factor=0.1, patience=2, max_decays=2)
    # epoch:    1     2     3     4     5     6     7     8     9
    losses = [1.0, 0.9, 0.95, 0.91, 0.8, 0.85, 0.85, 0.85, 0.85]
    decayed = [schedule.update(x) for x in losses]
    # Epochs 3 and 4 do not beat 0.9: decay after 4; 0.8 improves; 6, 7: decay after 7;
    # epochs 8, 9 would be a third plateau, but max_decays is 2.
    assert decayed == [False, False, False, True, False, False, True, False, False]
    assert float(schedule(0)) == pytest.approx(0.01)
    nan_first = optim.PlateauSchedule(1.0, patience=1)
    assert nan_first.update(float("nan"))  # NaN is never an improvement


def test_plateau_drives_a_traced_optimizer_and_restores_from_a_checkpoint(tmp_path):
    schedule = optim.PlateauSchedule(0.5, factor=0.1, patience=2, monitor="val_loss")
    weight = keras.Variable([0.0])
    optimizer = optim.SGD(learning_rate=schedule, momentum=0.0)
    step = tf.function(lambda: optimizer.apply([tf.ones([1])], [weight]))
    step()
    assert weight.numpy()[0] == pytest.approx(-0.5)
    [callback] = optim.schedule_callbacks(optimizer)
    callback.on_epoch_end(0, {"val_loss": 1.0})
    callback.on_epoch_end(1, {"val_loss": 2.0})  # 1 epoch without improvement: no decay
    step()
    assert weight.numpy()[0] == pytest.approx(-1.0)
    callback.on_epoch_end(2, {"val_loss": 3.0})  # 2 epochs: x0.1
    step()  # the same traced function reads the new rate
    assert weight.numpy()[0] == pytest.approx(-1.05)
    with pytest.raises(ValueError, match="PlateauSchedule.monitor='val_loss': not in"):
        callback.on_epoch_end(3, {"loss": 1.0})
    callback.on_epoch_end(3, {"val_loss": 4.0})  # 1 epoch without improvement again
    path = tf.train.Checkpoint(optimizer=optimizer).save(str(tmp_path / "ckpt"))

    fresh_schedule = optim.PlateauSchedule(0.5, factor=0.1, patience=2, monitor="val_loss")
    fresh = optim.SGD(learning_rate=fresh_schedule, momentum=0.0)
    fresh.build([keras.Variable([0.0])])
    tf.train.Checkpoint(optimizer=fresh).restore(path).assert_existing_objects_matched()
    assert int(fresh_schedule.decays.numpy()) == 1
    assert float(fresh_schedule.best.numpy()) == 1.0
    assert int(fresh_schedule.epochs_without_improvement.numpy()) == 1
    assert float(fresh_schedule(0)) == pytest.approx(0.05)
    # The restored count continues: one more epoch without improvement decays again.
    assert fresh_schedule.update(1.5) and float(fresh_schedule(0)) == pytest.approx(0.005)


def test_a_binding_without_effect_is_an_error_naming_it():
    with pytest.raises(ValueError, match="linear_probe.decay_epochs=\\(6, 8\\) has no effect "
                                         "with linear_probe.schedule='cosine'"):
        optim.make_schedule("cosine", 1.0, total_steps=10, steps_per_epoch=1,
                            owner="linear_probe", decay_epochs=(6, 8))
    with pytest.raises(ValueError, match="build_optimizer.momentum=0.5 has no effect with "
                                         "build_optimizer.name='adam'"):
        optim.build_optimizer("adam", base_learning_rate=1, global_batch_size=1,
                              total_steps=1, momentum=0.5)
    with pytest.raises(ValueError, match="build_optimizer.warmup_steps=3 has no effect"):
        optim.build_optimizer("sgd", base_learning_rate=1, global_batch_size=1,
                              total_steps=10, warmup_steps=3, schedule="plateau")
    # Defaults are not bindings: the same call with them passes.
    optim.build_optimizer("adam", base_learning_rate=1, global_batch_size=1, total_steps=1,
                          momentum=0.9)


# ------------------------------------------------------------------- the spec

RUN = dict(global_batch_size=64, total_steps=100, steps_per_epoch=10)


def test_spec_errors_name_the_binding():
    owner = "linear_probe/OptimizerSpec"
    with pytest.raises(ValueError, match="linear_probe/OptimizerSpec.name: expected one of "
                                         "\\['sgd', 'lars', 'adam'\\], got 'rmsprop'"):
        optim.OptimizerSpec("rmsprop", 0.1).build(owner=owner, **RUN)
    with pytest.raises(ValueError, match="linear_probe/OptimizerSpec.schedule='linear': "
                                         "expected one of"):
        optim.OptimizerSpec("sgd", 0.1, schedule="linear").build(owner=owner, **RUN)
    with pytest.raises(ValueError, match="OptimizerSpec.trust_coefficient=0.01 has no effect "
                                         "with OptimizerSpec.name='sgd'"):
        optim.OptimizerSpec("sgd", 0.1, trust_coefficient=0.01).build(**RUN)
    with pytest.raises(ValueError, match="OptimizerSpec.plateau_patience=3 has no effect "
                                         "with OptimizerSpec.schedule='step'"):
        optim.OptimizerSpec("sgd", 0.1, schedule="step", plateau_patience=3).build(**RUN)
    with pytest.raises(ValueError, match="probe.warmup_epochs=2 has no effect with "
                                         "OptimizerSpec.schedule='plateau'"):
        optim.OptimizerSpec("adam", 1e-3, schedule="plateau").build(
            warmup_steps=20, warmup_binding="probe.warmup_epochs=2", **RUN)
    # Settings at their defaults are not bindings: they pass.
    optim.OptimizerSpec("adam", 1e-3, schedule="plateau", momentum=0.9,
                        decay_epochs=()).build(**RUN)


def test_spec_builds_what_build_optimizer_builds():
    settings = dict(base_learning_rate=0.4, reference_batch_size=256, schedule="step",
                    decay_epochs=[4, 8], weight_decay=1e-4, nesterov=True,
                    exclude_patterns=["bn"])
    spec = optim.OptimizerSpec("sgd", **settings)
    assert spec.decay_epochs == (4, 8) and spec.exclude_patterns == ("bn",)  # frozen: tuples
    assert spec.learning_rate_at(64) == pytest.approx(0.1)
    built = spec.build(warmup_steps=5, **RUN)
    front = optim.build_optimizer("sgd", warmup_steps=5, **settings, **RUN)
    assert type(built) is type(front) is optim.SGD
    assert built.get_config() == front.get_config()


def test_build_optimizer_bindings_are_the_spec_fields():
    gin.clear_config()
    try:
        gin.parse_config("build_optimizer.name = 'adam'\n"
                         "build_optimizer.base_learning_rate = 1e-3\n"
                         "build_optimizer.reference_batch_size = None\n")
        assert type(optim.build_optimizer(**RUN)) is optim.Adam
        with pytest.raises(ValueError, match="build_optimizer.*base_learnig_rate"):
            gin.parse_config("build_optimizer.base_learnig_rate = 1.0")
        with pytest.raises(ValueError, match="build_optimizer.*global_batch_size"):
            gin.parse_config("build_optimizer.global_batch_size = 8")  # the run's, not a setting
    finally:
        gin.clear_config()
