"""Momentum (EMA) copies of named modules: the key/target encoders of MoCo, BYOL and the
CoCLR family, a part those methods hold.

`MomentumEncoder({"backbone": model, "projector": head}, base_momentum=0.994)` clones
each module with equal weights; its variables are not trainable (the optimizer ignores
them), but its layers stay in training mode, so its BatchNorm normalizes with batch
statistics and keeps running statistics of its own: the EMA is over parameters only,
as in the references. It is a Keras layer, so a method holding it as an attribute
checkpoints it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import tensorflow as tf

from video_ssl import optim

# "cosine": annealed from base_momentum at step 0 to 1 at the run's end (ρ paper B.1);
# "constant": fixed at base_momentum (MoCo's original 0.999, CoCLR §A.3).
SCHEDULES = ("cosine", "constant")


def momentum_copy(model: keras.Model) -> keras.Model:
    """A clone of `model` with equal weights whose variables the optimizer ignores."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for variable in copy.weights:
        variable.trainable = False
    return copy


def ema_update(targets: Sequence, sources: Sequence, momentum: tf.Tensor) -> None:
    """`target <- momentum * target + (1 - momentum) * source` for each pair (sources:
    variables or tensors).

    Runs as a cross-replica update (like an optimizer step), so it works for any
    strategy whatever the targets' `aggregation`.
    """
    def update(strategy, momentum, sources):
        for target, source in zip(targets, sources):
            strategy.extended.update(
                target.value, lambda t, s, m: t.assign(m * t + (1.0 - m) * s),
                args=(source, momentum), group=False)

    # Sources pass through the merge call (not a closure), so each replica's own
    # values (variables, or tensors read in the replica) reach its copy.
    values = [s.value if isinstance(s, tf.Variable) or hasattr(s, "_value") else s
              for s in sources]
    tf.__internal__.distribute.interim.maybe_merge_call(
        update, tf.distribute.get_strategy(), momentum, values)


class MomentumEncoder(keras.layers.Layer):
    """EMA copies of named modules; `self[name]` is the copy of module `name`.

    base_momentum, schedule: the EMA's momentum m and how it moves (`SCHEDULES`).
    """

    def __init__(self, modules: Mapping[str, keras.Model], *, base_momentum: float,
                 schedule: str = "cosine", owner: str = "MomentumEncoder", **kwargs):
        super().__init__(**kwargs)
        if schedule not in SCHEDULES:
            raise ValueError(f"{owner}.momentum_schedule: expected one of {SCHEDULES}, got "
                             f"{schedule!r}")
        self.base_momentum = float(base_momentum)
        self.schedule = schedule
        self.names = tuple(modules)
        for name, module in modules.items():
            setattr(self, name, momentum_copy(module))
        self.built = True

    def __getitem__(self, name: str) -> keras.Model:
        return getattr(self, name)

    def value_at(self, step, total_steps) -> tf.Tensor:
        """The momentum m at `step` of a run of `total_steps`."""
        if self.schedule == "constant":
            return tf.constant(self.base_momentum, tf.float32)
        tf.debugging.assert_positive(
            total_steps, message="total_steps must be set (> 0) before training; it drives "
                                 "momentum annealing")
        return optim.annealed_momentum(step, total_steps, self.base_momentum)

    def update(self, online: Mapping[str, keras.Model], momentum: tf.Tensor) -> None:
        """EMA step towards the online modules (same names); only their trainable
        variables are averaged."""
        targets, sources = [], []
        for name in self.names:
            for target, source in zip(self[name].weights, online[name].weights):
                if source.trainable:
                    targets.append(target)
                    sources.append(source)
        ema_update(targets, sources, momentum)

    def copy_from(self, online: Mapping[str, keras.Model]) -> None:
        """Every weight set equal to the online modules' (MoCo: f_k = f_q at the start)."""
        for name in self.names:
            for target, source in zip(self[name].weights, online[name].weights):
                target.assign(source)
