"""Every optimizer and learning-rate schedule of the recipes and evaluation protocols.

Optimizers (all take *coupled* L2 weight decay, PyTorch's `weight_decay`:
`g <- g + weight_decay * w`; Keras' own `weight_decay` is decoupled and never used
here; and all take per-variable learning-rate multipliers, see `PerVariableRules`):
- `SGD`: momentum SGD as in PyTorch (the MoCo recipe, the evaluation protocols).
- `LARS`: the same plus a layer-wise trust ratio (You et al. 2017), as in the
  SimCLR/BYOL/SwAV recipes.
- `Adam`: Adam with coupled L2 (CoCLR's pre-training and fine-tuning).

Schedules (functions of the optimizer step):
- `WarmupCosine`: half-period cosine with an optional linear warm-up.
- `StepDecay`: constant, times `factor` from each boundary step on, optional warm-up.
- `PlateauSchedule` + `PlateauCallback`: times `factor` when a monitored loss has not
  improved for `patience` epochs (CoCLR: "decayed by 1/10 twice when the validation
  loss plateaus"); its state is in variables, checkpointed with the optimizer.

`OptimizerSpec` names an optimizer, its schedule and their settings once, for
pre-training and the evaluation protocols alike; `OptimizerSpec.build` turns it into
the Keras optimizer of a run (linear scaling rule + schedule + optimizer; from plain
arguments, `make_schedule` and `make_optimizer`). `build_optimizer` is the recipes'
gin entry point (`train.optimizer = @build_optimizer`, `build_optimizer.<field>`); a
protocol takes a spec (`linear_probe.optimizer = @linear_probe/OptimizerSpec()`,
`linear_probe/OptimizerSpec.<field>`). `schedule_callbacks(optimizer)` gives the
callbacks a schedule needs during `fit` (the plateau one). Also
`scaled_learning_rate` and `annealed_momentum`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import gin
import keras
import tensorflow as tf

from video_ssl.training.bindings import check_types

REFERENCE_BATCH_SIZE = 512
OPTIMIZERS = ("sgd", "lars", "adam")
SCHEDULES = ("cosine", "step", "constant", "plateau")


# ------------------------------------------------------------------------ optimizers


class PerVariableRules:
    """Mixin in front of a Keras optimizer class: coupled L2 weight decay and
    learning-rate multipliers, decided per variable when the optimizer is built.

    weight_decay: `g <- g + weight_decay * w` before the optimizer's own update, except
      for excluded variables: 1-D ones (biases, BatchNorm scale/offset) when
      `exclude_vectors`, and those whose `path` contains one of `exclude_patterns`.
    lr_multipliers: {path substring: factor}; a variable whose `path` contains the
      substring is updated with learning rate x factor (e.g. BraVe's predictors x10).
      Keras 3 paths name the layer, not the enclosing model: to scale a sub-model,
      pass its variables in `variable_lr_multipliers`.
    variable_lr_multipliers: [(variables, factor)]: these variables get learning rate
      x factor (e.g. a fine-tuned backbone's `trainable_variables` at 1/10). Not part of
      `get_config` (variables do not serialize).
    A variable matched by two rules is an error naming both.
    """

    def __init__(self, *args, weight_decay: float = 0.0, exclude_vectors: bool = False,
                 exclude_patterns: Sequence[str] = (),
                 lr_multipliers: Mapping[str, float] | None = None,
                 variable_lr_multipliers: Sequence[tuple[Sequence, float]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        if weight_decay < 0:
            raise ValueError(f"optimizer weight_decay: expected >= 0, got {weight_decay!r}")
        self.coupled_weight_decay = float(weight_decay)
        self.exclude_vectors = bool(exclude_vectors)
        self.exclude_patterns = tuple(exclude_patterns)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._variable_multipliers = [
            ({id(v) for v in variables}, float(factor))
            for variables, factor in variable_lr_multipliers]
        factors = list(self.lr_multipliers.values()) + [f for _, f in self._variable_multipliers]
        if any(f < 0 for f in factors):
            raise ValueError(f"optimizer lr_multipliers: expected factors >= 0, got {factors}")

    def is_excluded(self, variable) -> bool:
        """Whether `variable` (a Keras variable) is exempt from weight decay (and, in
        LARS, from the trust ratio)."""
        return ((self.exclude_vectors and len(variable.shape) <= 1)
                or any(pattern in variable.path for pattern in self.exclude_patterns))

    def lr_multiplier(self, variable) -> float:
        """The factor on `variable`'s learning rate (1 when no rule matches)."""
        matches = [(f"path substring {pattern!r}", factor)
                   for pattern, factor in self.lr_multipliers.items() if pattern in variable.path]
        matches += [(f"variable list {i}", factor)
                    for i, (ids, factor) in enumerate(self._variable_multipliers)
                    if id(variable) in ids]
        if len(matches) > 1:
            raise ValueError(f"optimizer lr_multipliers: variable {variable.path!r} matches "
                             f"{matches[0][0]} and {matches[1][0]}; expected at most one rule")
        return matches[0][1] if matches else 1.0

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # update_step receives the backend tf.Variable, which has no Keras path, so the
        # decisions are made here, per variable index.
        self._excluded = [self.is_excluded(v) for v in variables]
        self._multipliers = [self.lr_multiplier(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        gradient = tf.cast(gradient, variable.dtype)
        if self.coupled_weight_decay and not self._excluded[index]:
            gradient = gradient + self.coupled_weight_decay * variable
        if self._multipliers[index] != 1.0:
            learning_rate = learning_rate * self._multipliers[index]
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(weight_decay=self.coupled_weight_decay,
                      exclude_vectors=self.exclude_vectors,
                      exclude_patterns=list(self.exclude_patterns),
                      lr_multipliers=dict(self.lr_multipliers))
        return config


class _MomentumSGD(keras.optimizers.Optimizer):
    """PyTorch's momentum: `buf <- momentum * buf + g`, step `lr * buf` (Nesterov:
    `lr * (g + momentum * buf)`). `_direction` lets LARS rescale `g` first."""

    def __init__(self, learning_rate=0.1, momentum: float = 0.9, nesterov: bool = False,
                 name: str = "sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer momentum: expected a float in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _direction(self, gradient, variable, index):
        return gradient

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = tf.cast(learning_rate, variable.dtype)
        gradient = self._direction(tf.cast(gradient, variable.dtype), variable, index)
        buffer = self.momentums[index]
        self.assign(buffer, self.momentum * buffer + gradient)
        step = gradient + self.momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov)
        return config


@keras.saving.register_keras_serializable(package="video_ssl")
class SGD(PerVariableRules, _MomentumSGD):
    """Momentum SGD (PyTorch's) with coupled L2 weight decay and per-variable
    learning-rate multipliers (`PerVariableRules`)."""


@keras.saving.register_keras_serializable(package="video_ssl")
class LARS(SGD):
    """LARS: SGD whose per-variable gradient (weight decay included) is rescaled by
    `trust_coefficient * ||w|| / ||g + weight_decay * w||` (no clipping), as in the
    SimCLR/BYOL reference LARS. Biases and BatchNorm parameters are excluded by default.
    The ratio is 1 when either norm is zero (e.g. zero-initialized weights).
    """

    def __init__(self, learning_rate=4.8, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 1e-6, trust_coefficient: float = 0.001,
                 exclude_vectors: bool = True, name: str = "lars", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, exclude_vectors=exclude_vectors, name=name,
                         **kwargs)
        self.trust_coefficient = float(trust_coefficient)

    def _direction(self, gradient, variable, index):
        if self._excluded[index]:
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
class Adam(PerVariableRules, keras.optimizers.Adam):
    """Adam with coupled L2 weight decay (PyTorch Adam's `weight_decay`, which CoCLR
    uses) and per-variable learning-rate multipliers. epsilon defaults to PyTorch's
    1e-8; Keras adds it to sqrt(v) before the bias correction of v, PyTorch after (a
    difference of epsilon x sqrt(1 - beta_2^t), negligible after the first steps)."""

    def __init__(self, learning_rate=1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, name: str = "adam", **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, name=name, **kwargs)


# ------------------------------------------------------------------------- schedules


def _warmup(step, warmup_steps: int, start: float, end):
    """Linear ramp from `start` at step 0 to `end` at `warmup_steps`."""
    return start + (end - start) * step / warmup_steps


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
        warmup = _warmup(step, self.warmup_steps, self.warmup_start_learning_rate,
                         self._cosine(tf.constant(float(self.warmup_steps))))
        return tf.where(step < self.warmup_steps, warmup, self._cosine(step))

    def get_config(self):
        return dict(learning_rate=self.learning_rate, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps,
                    warmup_start_learning_rate=self.warmup_start_learning_rate,
                    end_learning_rate=self.end_learning_rate)


@keras.saving.register_keras_serializable(package="video_ssl")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate x factor^i` from the i-th of `boundaries` (optimizer steps) on:
    the step at index `boundaries[0]` is the first decayed one, so boundaries at
    `epoch x steps_per_epoch` decay from that epoch's first step. No boundaries: a
    constant rate. The first `warmup_steps` ramp linearly from
    `warmup_start_learning_rate` to `learning_rate`."""

    def __init__(self, learning_rate: float, boundaries: Sequence[int] = (),
                 factor: float = 0.1, warmup_steps: int = 0,
                 warmup_start_learning_rate: float = 0.0):
        boundaries = [int(b) for b in boundaries]
        if boundaries != sorted(set(boundaries)) or any(b < 0 for b in boundaries):
            raise ValueError(f"StepDecay: expected increasing non-negative boundary steps, "
                             f"got {boundaries}")
        if not 0 <= warmup_steps or (boundaries and warmup_steps > boundaries[0]):
            raise ValueError(f"StepDecay: expected 0 <= warmup_steps <= the first boundary, "
                             f"got warmup_steps={warmup_steps}, boundaries={boundaries}")
        self.learning_rate = float(learning_rate)
        self.boundaries = boundaries
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_learning_rate = float(warmup_start_learning_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decays = tf.zeros([], tf.float32)
        for boundary in self.boundaries:
            decays += tf.cast(step >= boundary, tf.float32)
        rate = self.learning_rate * tf.pow(self.factor, decays)
        if not self.warmup_steps:
            return rate
        warmup = _warmup(step, self.warmup_steps, self.warmup_start_learning_rate,
                         self.learning_rate)
        return tf.where(step < self.warmup_steps, warmup, rate)

    def get_config(self):
        return dict(learning_rate=self.learning_rate, boundaries=list(self.boundaries),
                    factor=self.factor, warmup_steps=self.warmup_steps,
                    warmup_start_learning_rate=self.warmup_start_learning_rate)


@keras.saving.register_keras_serializable(package="video_ssl")
class PlateauSchedule(keras.optimizers.schedules.LearningRateSchedule, tf.Module):
    """`learning_rate x factor^decays`, where `decays` grows by one each time the
    monitored value has not improved (by more than `min_delta`, lower is better) for
    `patience` epochs in a row, at most `max_decays` times (None: no limit). After a
    decay the count of epochs without improvement starts again from 0.

    Call `update(value)` once per epoch (`PlateauCallback` does, from `fit`'s logs).
    The state (`decays`, `best`, `epochs_without_improvement`) lives in variables,
    tracked by the optimizer that uses the schedule, so a `tf.train.Checkpoint` of
    the optimizer saves and restores it; `monitor` names the `fit` log it follows.
    """

    def __init__(self, learning_rate: float, factor: float = 0.1, patience: int = 10,
                 max_decays: int | None = None, min_delta: float = 0.0,
                 monitor: str = "loss"):
        tf.Module.__init__(self, name="plateau_schedule")
        if patience < 1 or not 0.0 < factor < 1.0 or (max_decays is not None and max_decays < 0):
            raise ValueError(f"PlateauSchedule: expected patience >= 1, factor in (0, 1) and "
                             f"max_decays >= 0 or None, got patience={patience}, "
                             f"factor={factor}, max_decays={max_decays}")
        self.learning_rate = float(learning_rate)
        self.factor = float(factor)
        self.patience = int(patience)
        self.max_decays = None if max_decays is None else int(max_decays)
        self.min_delta = float(min_delta)
        self.monitor = str(monitor)
        state = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.decays = tf.Variable(0, dtype=tf.int64, name="decays", **state)
        self.best = tf.Variable(math.inf, dtype=tf.float64, name="best", **state)
        self.epochs_without_improvement = tf.Variable(
            0, dtype=tf.int64, name="epochs_without_improvement", **state)

    def __call__(self, step):
        del step  # the rate follows the monitored value, not the step
        return self.learning_rate * tf.pow(self.factor, tf.cast(self.decays, tf.float32))

    def update(self, value: float) -> bool:
        """Records one epoch's monitored `value`; returns whether the rate decayed.
        NaN never counts as an improvement."""
        value = float(value)
        if value < float(self.best.numpy()) - self.min_delta:
            self.best.assign(value)
            self.epochs_without_improvement.assign(0)
            return False
        self.epochs_without_improvement.assign_add(1)
        exhausted = self.max_decays is not None and int(self.decays.numpy()) >= self.max_decays
        if int(self.epochs_without_improvement.numpy()) < self.patience or exhausted:
            return False
        self.decays.assign_add(1)
        self.epochs_without_improvement.assign(0)
        return True

    def get_config(self):
        return dict(learning_rate=self.learning_rate, factor=self.factor,
                    patience=self.patience, max_decays=self.max_decays,
                    min_delta=self.min_delta, monitor=self.monitor)


class PlateauCallback(keras.callbacks.Callback):
    """Feeds `schedule` (a `PlateauSchedule`) the epoch's `schedule.monitor` log value
    at the end of every epoch and says when the rate decays."""

    def __init__(self, schedule: PlateauSchedule, verbose: bool = True):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.schedule.monitor not in logs:
            raise ValueError(f"PlateauSchedule.monitor={self.schedule.monitor!r}: not in the "
                             f"epoch's logs; expected one of {sorted(logs)}")
        if self.schedule.update(logs[self.schedule.monitor]) and self.verbose:
            print(f"Epoch {epoch + 1}: {self.schedule.monitor} has not improved for "
                  f"{self.schedule.patience} epochs: learning rate x{self.schedule.factor:g} "
                  f"-> {float(self.schedule(0)):.4g}")


def schedule_callbacks(optimizer: keras.optimizers.Optimizer) -> list[keras.callbacks.Callback]:
    """The callbacks `optimizer`'s schedule needs during `fit` (a plateau schedule's)."""
    schedule = optimizer._learning_rate  # the schedule object itself, not its value
    return [PlateauCallback(schedule)] if isinstance(schedule, PlateauSchedule) else []


# --------------------------------------------------------------------- construction


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer and its learning-rate schedule, under the one set of names that
    pre-training (`build_optimizer.<field>`) and the evaluation protocols
    (`<protocol>/OptimizerSpec.<field>` with `<protocol>.optimizer =
    @<protocol>/OptimizerSpec()`) bind. `build` makes the Keras optimizer of a run.

    name: 'sgd', 'lars' or 'adam'. base_learning_rate: the rate at
    `reference_batch_size`, scaled linearly to the run's global batch (None: used as
    given). schedule: 'cosine', 'step' (x `decay_factor` from each of `decay_epochs`
    on), 'constant' or 'plateau' (x `decay_factor` each time `plateau_monitor` has not
    improved for `plateau_patience` epochs, at most `plateau_max_decays` times); the
    warm-up is the run's (`build`). weight_decay: coupled L2, not on 1-D variables
    when `exclude_vectors` (None: True for LARS only, PyTorch decays all) nor on
    variables whose path contains one of `exclude_patterns`. lr_multipliers:
    {variable path substring: factor}. momentum, nesterov ('sgd', 'lars'),
    trust_coefficient ('lars'), beta_1, beta_2, epsilon ('adam'). A setting the chosen
    optimizer or schedule does not read, set to other than its default, is an error
    when the spec is built.
    """
    name: str
    base_learning_rate: float
    reference_batch_size: int | None = REFERENCE_BATCH_SIZE
    schedule: str = "cosine"
    decay_epochs: Sequence[float] = ()
    decay_factor: float = 0.1
    plateau_patience: int = 10
    plateau_max_decays: int | None = None
    plateau_monitor: str = "loss"
    weight_decay: float = 0.0
    exclude_vectors: bool | None = None
    exclude_patterns: Sequence[str] = ()
    lr_multipliers: Mapping[str, float] | None = None
    momentum: float = 0.9
    nesterov: bool = False
    trust_coefficient: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self):
        # gin hands over lists; the frozen spec holds tuples.
        object.__setattr__(self, "decay_epochs", tuple(self.decay_epochs))
        object.__setattr__(self, "exclude_patterns", tuple(self.exclude_patterns))

    def learning_rate_at(self, global_batch_size: int) -> float:
        """The base rate linearly scaled to `global_batch_size`: the rate the schedule
        warms up to and decays from."""
        return scaled_learning_rate(self.base_learning_rate, global_batch_size,
                                    self.reference_batch_size)

    def build(self, *, global_batch_size: int, total_steps: int, warmup_steps: int = 0,
              steps_per_epoch: int | None = None,
              variable_lr_multipliers: Sequence[tuple[Sequence, float]] = (),
              owner: str = "OptimizerSpec",
              warmup_binding: str | None = None) -> keras.optimizers.Optimizer:
        """The Keras optimizer for a run of `total_steps` optimizer steps at
        `global_batch_size`, the schedule warming up linearly from 0 over
        `warmup_steps`; `steps_per_epoch` converts `decay_epochs`.
        variable_lr_multipliers: see `PerVariableRules` (e.g. a fine-tuned backbone's
        variables at 1/10). Errors name the spec's bindings `owner`.<field> (e.g.
        'linear_probe/OptimizerSpec') and the warm-up as `warmup_binding` ('name=value';
        default `owner`.warmup_steps). A plateau schedule needs
        `schedule_callbacks(optimizer)` in `fit`."""
        # A wrong type says which binding here, not "could not convert ..." deep inside.
        check_types(OptimizerSpec, {f: getattr(self, f) for f in _FIELDS}, owner)
        labels = {"warmup_steps": warmup_binding} if warmup_binding else {}
        schedule = make_schedule(
            self.schedule, self.learning_rate_at(global_batch_size), total_steps=total_steps,
            steps_per_epoch=steps_per_epoch, owner=owner, labels=labels,
            warmup_steps=warmup_steps, decay_epochs=self.decay_epochs,
            decay_factor=self.decay_factor, plateau_patience=self.plateau_patience,
            plateau_max_decays=self.plateau_max_decays, plateau_monitor=self.plateau_monitor)
        return make_optimizer(
            self.name, schedule, weight_decay=self.weight_decay,
            exclude_vectors=self.exclude_vectors, exclude_patterns=self.exclude_patterns,
            lr_multipliers=self.lr_multipliers,
            variable_lr_multipliers=variable_lr_multipliers, owner=owner,
            momentum=self.momentum, nesterov=self.nesterov,
            trust_coefficient=self.trust_coefficient, beta_1=self.beta_1,
            beta_2=self.beta_2, epsilon=self.epsilon)


# A probe's `<protocol>.optimizer = @<protocol>/OptimizerSpec()` with
# `<protocol>/OptimizerSpec.<field>` bindings.
gin.external_configurable(OptimizerSpec, "OptimizerSpec")
_FIELDS = [f.name for f in dataclasses.fields(OptimizerSpec)]
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(OptimizerSpec)
             if f.default is not dataclasses.MISSING}

# The arguments each schedule / optimizer reads; make_schedule and make_optimizer
# refuse others that differ from their defaults (a binding with no effect).
_WARMUP = {"warmup_steps", "warmup_epochs"}
_SCHEDULE_ARGUMENTS = {
    "cosine": _WARMUP,
    "step": _WARMUP | {"decay_epochs", "decay_factor"},
    "constant": _WARMUP,
    "plateau": {"decay_factor", "plateau_patience", "plateau_max_decays", "plateau_monitor"},
}
_OPTIMIZER_ARGUMENTS = {
    "sgd": {"momentum", "nesterov"},
    "lars": {"momentum", "nesterov", "trust_coefficient"},
    "adam": {"beta_1", "beta_2", "epsilon"},
}
_SCHEDULE_DEFAULTS = dict(warmup_steps=0, warmup_epochs=0.0,
                          **{k: _DEFAULTS[k] for k in ("decay_epochs", "decay_factor",
                                                       "plateau_patience", "plateau_max_decays",
                                                       "plateau_monitor")})
_OPTIMIZER_DEFAULTS = {k: _DEFAULTS[k] for k in set().union(*_OPTIMIZER_ARGUMENTS.values())}


def check_used(owner: str, choice_binding: str, choice: str, used: set, given: Mapping,
               defaults: Mapping, labels: Mapping[str, str] | None = None) -> None:
    """Raises a ValueError naming `owner.<argument>` for an argument of `given` that
    differs from its default in `defaults` but is not in `used` (the arguments that
    `owner.<choice_binding>=choice` reads): such a binding would silently do nothing.
    labels: {argument: 'binding=value'} for arguments that another binding sets."""
    for argument, value in given.items():
        if argument in used or argument not in defaults:
            continue
        default = defaults[argument]
        same = (tuple(value) == tuple(default) if isinstance(default, tuple)
                else value == default)
        if not same:
            binding = (labels or {}).get(argument, f"{owner}.{argument}={value!r}")
            raise ValueError(f"{binding} has no effect with {owner}.{choice_binding}="
                             f"{choice!r}; remove the binding or choose a {choice_binding} "
                             "that uses it")


def make_schedule(kind: str, learning_rate: float, *, total_steps: int,
                  steps_per_epoch: int | None = None, owner: str = "build_optimizer",
                  labels: Mapping[str, str] | None = None, **arguments):
    """The learning-rate schedule `kind` ('cosine', 'step', 'constant' or 'plateau')
    at peak/base rate `learning_rate`. arguments: warmup_steps or warmup_epochs (linear
    warm-up from 0; not with 'plateau'), decay_epochs and decay_factor ('step': x
    factor from each of those epochs on; 'plateau': x factor per plateau),
    plateau_patience, plateau_max_decays, plateau_monitor. Epoch arguments need
    `steps_per_epoch`. An argument the schedule does not read, set to other than its
    default, is an error naming `owner`.<argument> (or its entry in `labels`, see
    `check_used`): a binding with no effect."""
    if kind not in _SCHEDULE_ARGUMENTS:
        raise ValueError(f"{owner}.schedule={kind!r}: expected one of {SCHEDULES}")
    unknown = set(arguments) - set(_SCHEDULE_DEFAULTS)
    if unknown:
        raise TypeError(f"make_schedule: unknown arguments {sorted(unknown)}")
    check_used(owner, "schedule", kind, _SCHEDULE_ARGUMENTS[kind], arguments,
               _SCHEDULE_DEFAULTS, labels)
    a = {**_SCHEDULE_DEFAULTS, **arguments}

    def steps(epochs, binding):
        if steps_per_epoch is None:
            raise ValueError(f"{owner}.{binding}={epochs!r} needs steps_per_epoch (the "
                             "caller passes it)")
        return int(round(epochs * steps_per_epoch))

    if a["warmup_steps"] and a["warmup_epochs"]:
        raise ValueError(f"{owner}: warmup_steps={a['warmup_steps']} and warmup_epochs="
                         f"{a['warmup_epochs']} both set; expected one")
    warmup_steps = int(a["warmup_steps"]) or (
        steps(a["warmup_epochs"], "warmup_epochs") if a["warmup_epochs"] else 0)
    if kind == "cosine":
        return WarmupCosine(learning_rate, total_steps=total_steps, warmup_steps=warmup_steps)
    if kind == "constant":
        return StepDecay(learning_rate, warmup_steps=warmup_steps) if warmup_steps \
            else learning_rate
    if kind == "plateau":
        return PlateauSchedule(learning_rate, factor=a["decay_factor"],
                               patience=a["plateau_patience"],
                               max_decays=a["plateau_max_decays"],
                               monitor=a["plateau_monitor"])
    decay_epochs = list(a["decay_epochs"])
    boundaries = [steps(e, "decay_epochs") for e in decay_epochs]
    if boundaries != sorted(set(boundaries)) or any(b < 0 for b in boundaries):
        raise ValueError(f"{owner}.decay_epochs={decay_epochs}: expected increasing epochs "
                         f"(at {steps_per_epoch} steps per epoch: steps {boundaries})")
    return StepDecay(learning_rate, boundaries, factor=a["decay_factor"],
                     warmup_steps=warmup_steps)


def make_optimizer(name: str, learning_rate, *, weight_decay: float = 0.0,
                   exclude_vectors: bool | None = None, exclude_patterns: Sequence[str] = (),
                   lr_multipliers: Mapping[str, float] | None = None,
                   variable_lr_multipliers: Sequence[tuple[Sequence, float]] = (),
                   owner: str = "build_optimizer", **arguments) -> keras.optimizers.Optimizer:
    """Optimizer `name` ('sgd', 'lars' or 'adam') with `learning_rate` (a float or a
    schedule), coupled L2 `weight_decay` and learning-rate multipliers (see
    `PerVariableRules`). exclude_vectors defaults to True for LARS, False otherwise
    (PyTorch decays all). arguments: momentum, nesterov (sgd, lars), trust_coefficient
    (lars), beta_1, beta_2, epsilon (adam); one the optimizer does not read, set to
    other than its default, is an error naming `owner`.<argument>."""
    if name not in _OPTIMIZER_ARGUMENTS:
        raise ValueError(f"{owner}.name: expected one of {list(OPTIMIZERS)}, got {name!r}")
    unknown = set(arguments) - set(_OPTIMIZER_DEFAULTS)
    if unknown:
        raise TypeError(f"make_optimizer: unknown arguments {sorted(unknown)}")
    check_used(owner, "name", name, _OPTIMIZER_ARGUMENTS[name], arguments,
               _OPTIMIZER_DEFAULTS)
    a = {**_OPTIMIZER_DEFAULTS, **arguments}
    common = dict(learning_rate=learning_rate, weight_decay=weight_decay,
                  exclude_vectors=(name == "lars") if exclude_vectors is None
                  else exclude_vectors,
                  exclude_patterns=exclude_patterns, lr_multipliers=lr_multipliers,
                  variable_lr_multipliers=variable_lr_multipliers)
    if name == "adam":
        return Adam(beta_1=a["beta_1"], beta_2=a["beta_2"], epsilon=a["epsilon"], **common)
    momentum = dict(momentum=a["momentum"], nesterov=a["nesterov"])
    if name == "lars":
        return LARS(trust_coefficient=a["trust_coefficient"], **momentum, **common)
    return SGD(**momentum, **common)


def scaled_learning_rate(base_learning_rate: float, global_batch_size: int,
                         reference_batch_size: int | None = REFERENCE_BATCH_SIZE) -> float:
    """Linear scaling rule: `base_learning_rate` is the rate at `reference_batch_size`
    (None: the rate as given, whatever the batch size)."""
    if reference_batch_size is None:
        return float(base_learning_rate)
    return base_learning_rate * global_batch_size / reference_batch_size


def annealed_momentum(step, total_steps, base_momentum: float):
    """EMA momentum `1 - (1 - base) * (cos(pi k / K) + 1) / 2`: base at k=0, 1 at k=K."""
    progress = tf.minimum(tf.cast(step, tf.float32) / tf.maximum(
        tf.cast(total_steps, tf.float32), 1.0), 1.0)
    return 1.0 - (1.0 - base_momentum) * (tf.cos(math.pi * progress) + 1.0) / 2.0


# The allowlist makes gin refuse an unknown `build_optimizer.<key>` when it parses.
@gin.configurable(allowlist=_FIELDS)
def build_optimizer(name: str = "lars", *, global_batch_size: int, total_steps: int,
                    warmup_steps: int = 0, steps_per_epoch: int | None = None,
                    **settings) -> keras.optimizers.Optimizer:
    """The pre-training optimizer (`train.optimizer = @build_optimizer`, which `train`
    calls with the run's batch, steps and warm-up): the `OptimizerSpec` of `name` and
    the `build_optimizer.<field>` bindings (`settings`), built for the run."""
    return OptimizerSpec(name, **settings).build(
        global_batch_size=global_batch_size, total_steps=total_steps,
        warmup_steps=warmup_steps, steps_per_epoch=steps_per_epoch, owner="build_optimizer")
