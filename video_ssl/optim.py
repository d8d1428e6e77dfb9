"""Optimizers and schedules of the rho-method recipes.

- `SGD`: momentum SGD with *coupled* L2 weight decay (PyTorch's `weight_decay`, the
  MoCo recipe); Keras' own `weight_decay` is decoupled, so it is not used here.
- `LARS`: the same plus a layer-wise trust ratio (You et al. 2017), as in the
  SimCLR/BYOL/SwAV recipes.
- `WarmupCosine`: half-period cosine with an optional linear warm-up.
- `scaled_learning_rate`, `annealed_momentum`, `build_optimizer`.
"""
from __future__ import annotations

import math
from typing import Sequence

import gin
import keras
import tensorflow as tf

REFERENCE_BATCH_SIZE = 512


@keras.saving.register_keras_serializable(package="video_ssl")
class SGD(keras.optimizers.Optimizer):
    """Momentum SGD with coupled L2 weight decay: `g <- g + weight_decay * w`.

    Momentum follows PyTorch: `buf <- momentum * buf + g`, step `lr * buf`
    (Nesterov: `lr * (g + momentum * buf)`). Excluded variables get no weight decay
    (and, in LARS, no trust ratio): 1-D variables (biases, BatchNorm scale/offset)
    when `exclude_vectors`, and any variable whose `path` contains one of
    `exclude_patterns`.
    """

    def __init__(self, learning_rate=0.1, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, exclude_vectors: bool = False,
                 exclude_patterns: Sequence[str] = (), name: str = "sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer momentum: expected a float in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.coupled_weight_decay = float(weight_decay)
        self.exclude_vectors = bool(exclude_vectors)
        self.exclude_patterns = tuple(exclude_patterns)

    def is_excluded(self, variable) -> bool:
        """Whether `variable` (a Keras variable) is exempt from weight decay and LARS."""
        return ((self.exclude_vectors and len(variable.shape) <= 1)
                or any(pattern in variable.path for pattern in self.exclude_patterns))

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        # update_step receives the backend tf.Variable, which has no Keras path, so the
        # decision is made here, per variable index.
        self._excluded = [self.is_excluded(v) for v in variables]

    def _scaled_gradient(self, gradient, variable, excluded: bool):
        """The gradient with weight decay (and, in LARS, the trust ratio) applied."""
        if excluded or not self.coupled_weight_decay:
            return gradient
        return gradient + self.coupled_weight_decay * variable

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = tf.cast(learning_rate, variable.dtype)
        gradient = self._scaled_gradient(tf.cast(gradient, variable.dtype), variable,
                                         self._excluded[index])
        buffer = self.momentums[index]
        self.assign(buffer, self.momentum * buffer + gradient)
        step = gradient + self.momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov,
                      weight_decay=self.coupled_weight_decay,
                      exclude_vectors=self.exclude_vectors,
                      exclude_patterns=list(self.exclude_patterns))
        return config


@keras.saving.register_keras_serializable(package="video_ssl")
class LARS(SGD):
    """LARS: SGD whose per-variable gradient (weight decay included) is rescaled by
    `trust_coefficient * ||w|| / ||g + weight_decay * w||` (no clipping), as in the
    SimCLR/BYOL reference LARS. Biases and BatchNorm parameters are excluded by default.
    The ratio is 1 when either norm is zero (e.g. zero-initialized weights).
    """

    def __init__(self, learning_rate=4.8, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 1e-6, trust_coefficient: float = 0.001,
                 exclude_vectors: bool = True, exclude_patterns: Sequence[str] = (),
                 name: str = "lars", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, exclude_vectors=exclude_vectors,
                         exclude_patterns=exclude_patterns, name=name, **kwargs)
        self.trust_coefficient = float(trust_coefficient)

    def _scaled_gradient(self, gradient, variable, excluded: bool):
        gradient = super()._scaled_gradient(gradient, variable, excluded)
        if excluded:
            return gradient
        weight_norm = tf.norm(variable)
        gradient_norm = tf.norm(gradient)
        ratio = tf.where((weight_norm > 0) & (gradient_norm > 0),
                         self.trust_coefficient * weight_norm / gradient_norm,
                         tf.ones_like(weight_norm))
        return ratio * gradient

    def get_config(self):
        config = super().get_config()
        config.update(trust_coefficient=self.trust_coefficient)
        return config


@keras.saving.register_keras_serializable(package="video_ssl")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Half-period cosine from `learning_rate` at step 0 to `end_learning_rate` at
    `total_steps`; during the first `warmup_steps` a linear ramp from
    `warmup_start_learning_rate` to the cosine's value at `warmup_steps` replaces it."""

    def __init__(self, learning_rate: float, total_steps: int, warmup_steps: int = 0,
                 warmup_start_learning_rate: float = 0.0, end_learning_rate: float = 0.0):
        if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"WarmupCosine: expected 0 <= warmup_steps <= total_steps and "
                             f"total_steps > 0, got warmup_steps={warmup_steps}, "
                             f"total_steps={total_steps}")
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_learning_rate = float(warmup_start_learning_rate)
        self.end_learning_rate = float(end_learning_rate)

    def _cosine(self, step):
        progress = tf.minimum(step / self.total_steps, 1.0)
        return self.end_learning_rate + (self.learning_rate - self.end_learning_rate) * 0.5 * (
            1.0 + tf.cos(math.pi * progress))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if not self.warmup_steps:
            return self._cosine(step)
        warmup_end = self._cosine(tf.constant(float(self.warmup_steps)))
        warmup = self.warmup_start_learning_rate + (
            warmup_end - self.warmup_start_learning_rate) * step / self.warmup_steps
        return tf.where(step < self.warmup_steps, warmup, self._cosine(step))

    def get_config(self):
        return dict(learning_rate=self.learning_rate, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps,
                    warmup_start_learning_rate=self.warmup_start_learning_rate,
                    end_learning_rate=self.end_learning_rate)


def scaled_learning_rate(base_learning_rate: float, global_batch_size: int,
                         reference_batch_size: int = REFERENCE_BATCH_SIZE) -> float:
    """Linear scaling rule: `base_learning_rate` is the rate at `reference_batch_size`."""
    return base_learning_rate * global_batch_size / reference_batch_size


def annealed_momentum(step, total_steps, base_momentum: float):
    """EMA momentum `1 - (1 - base) * (cos(pi k / K) + 1) / 2`: base at k=0, 1 at k=K."""
    progress = tf.minimum(tf.cast(step, tf.float32) / tf.maximum(
        tf.cast(total_steps, tf.float32), 1.0), 1.0)
    return 1.0 - (1.0 - base_momentum) * (tf.cos(math.pi * progress) + 1.0) / 2.0


_OPTIMIZERS = {"sgd": SGD, "lars": LARS}


@gin.configurable
def build_optimizer(name: str = "lars", *, base_learning_rate: float, global_batch_size: int,
                    total_steps: int, warmup_steps: int = 0, weight_decay: float = 0.0,
                    momentum: float = 0.9, nesterov: bool = False,
                    trust_coefficient: float = 0.001, exclude_vectors: bool | None = None,
                    exclude_patterns: Sequence[str] = (),
                    reference_batch_size: int = REFERENCE_BATCH_SIZE) -> SGD:
    """The recipe optimizer: `name` 'sgd' or 'lars', learning rate linearly scaled from
    `base_learning_rate` at `reference_batch_size` and scheduled by `WarmupCosine`.
    `exclude_vectors` defaults to True for LARS, False for SGD (PyTorch decays all)."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"build_optimizer.name: expected one of {sorted(_OPTIMIZERS)}, "
                         f"got {name!r}")
    schedule = WarmupCosine(
        scaled_learning_rate(base_learning_rate, global_batch_size, reference_batch_size),
        total_steps=total_steps, warmup_steps=warmup_steps)
    kwargs = dict(learning_rate=schedule, momentum=momentum, nesterov=nesterov,
                  weight_decay=weight_decay, exclude_patterns=exclude_patterns,
                  exclude_vectors=(name == "lars") if exclude_vectors is None
                  else exclude_vectors)
    if name == "lars":
        kwargs["trust_coefficient"] = trust_coefficient
    return _OPTIMIZERS[name](**kwargs)
