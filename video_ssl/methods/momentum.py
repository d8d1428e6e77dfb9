"""Momentum (EMA) copies of named modules: the key/target encoders of MoCo, BYOL and
CoCLR's trained stream.

`MomentumEncoder({"backbone": model, "projector": head})` clones each module with
equal weights; its variables are not trainable (the optimizer ignores them), but its
layers stay in training mode, so its BatchNorm normalizes with batch statistics and
keeps running statistics of its own: the EMA is over parameters only, as in the
references. It is a Keras layer, so a method holding it as an attribute checkpoints it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import tensorflow as tf


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
    """EMA copies of named modules; `self[name]` is the copy of module `name`."""

    def __init__(self, modules: Mapping[str, keras.Model], **kwargs):
        super().__init__(**kwargs)
        self.names = tuple(modules)
        for name, module in modules.items():
            setattr(self, name, momentum_copy(module))
        self.built = True

    def __getitem__(self, name: str) -> keras.Model:
        return getattr(self, name)

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
