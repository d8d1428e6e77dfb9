"""The method contract: what the trainer, export, evaluation and the kNN monitor know of
any self-supervised method.

A method is a `keras.Model` whose `train_step` implements one objective. It is built
in plain Python from what it is handed, and declares itself once:

- `views`: {name: `ViewSpec`}, the input views it trains on, handed to it (gin builds
  them in one factory per family, from the `train_input` bindings: `rho_views`,
  `pair_views`, `brave_views`); the method checks they have the structure it needs and
  reads its own (ρ, modalities, broad views) from them. The trainer passes them to the
  input pipeline and hands each batch over as {"views": {name: {modality: ...}}, "label",
  "video_id"} (video_id: the source video of each element, for same-video positives).
- `encoders`: {name: `Encoder(attribute, view, modality)`}, the networks users keep: the
  attribute holding the `keras.Model`, the view and modality feeding it; the first is
  the primary encoder, which users evaluate by default.

It owns its augmentation (a view with deferred augmentation arrives as uint8 crops and
`view_inputs` finishes it in the step), has a schedule hook (`configure`), and can
initialize named encoders from other runs (`init_checkpoints={"flow": DIR}`).

Everything a resumed run needs is a variable the model tracks, so
`tf.train.Checkpoint(model=method)` saves it; the step counter is the optimizer's
`iterations`. Written for `tf.distribute`: `train_step` runs once per replica; raw-op
losses are divided by the number of replicas and multiplied by the optimizer's loss
scale in `scaled_for_gradients`. Under a mixed-precision policy the methods cast
embeddings to float32 before their losses.

Concrete subclasses (no abstract method left) are registered with gin under their class
name by `video_ssl.config`, without touching the class: `MoCo(...)` in Python reads no
gin, `train.method = @MoCo` in a gin file does.
"""
from __future__ import annotations

import abc
import dataclasses
import inspect
import json
import os
import sys
from typing import Mapping

import keras
import tensorflow as tf

from video_ssl.data import augment, input_spec
from video_ssl.data.views import ViewSpec
from video_ssl.distribute import has_accelerator, nonfinite_on_all_if_on_any, num_replicas
from video_ssl.methods.momentum import ema_update

INPUT_SPEC_FILE = "input_spec.json"


@dataclasses.dataclass(frozen=True)
class Encoder:
    """One of a method's encoders: the attribute holding its `keras.Model`, and the view
    and modality feeding it."""
    attribute: str
    view: str
    modality: str


def training_view(values: Mapping | None = None, **structure) -> ViewSpec:
    """A training `ViewSpec` from `train_input` values (the bound ones when None) and the
    structure its family decides (`num_clips`, `same_window`, `modalities`). Deferred
    augmentation defaults to on when the replicas run on an accelerator: on the CPU the
    pipeline's per-clip path is cheaper (benchmarks/RESULTS.md)."""
    values = dict(input_spec.train_input() if values is None else values)
    if values.get("defer_augmentation") is None:
        values["defer_augmentation"] = has_accelerator() and "rgb" in structure.get(
            "modalities", ("rgb",))
    return input_spec.view_from_input(values, **structure)


def all_concrete_methods() -> list[type]:
    """Every concrete `Method` subclass defined so far (importing a module defines its),
    as its module names it (not subclasses made on the fly, such as gin's wrappers)."""
    found, pending = [], list(Method.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending += cls.__subclasses__()
        defined = getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is cls
        if defined and not inspect.isabstract(cls) and cls not in found:
            found.append(cls)
    return found


class Method(keras.Model, metaclass=abc.ABCMeta):
    """Base of every method.

    Args:
      views: {name: ViewSpec}, the input views (see the module docstring).
      encoders: {name: Encoder}, declared by the subclass; the first is the primary one.
      init_checkpoints: encoder name -> a training model_dir (or checkpoint prefix) of
        another run whose primary encoder initializes it; "DIR:NAME" picks that run's
        encoder NAME. Applied by the trainer on a fresh start (`initialize_encoders`).
      total_steps: the run's length in optimizer steps (the trainer sets it through
        `configure`; schedules inside the step read it).
    """

    def __init__(self, views: Mapping[str, ViewSpec], encoders: Mapping[str, Encoder], *,
                 init_checkpoints: Mapping[str, str] | None = None, total_steps: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        if not isinstance(views, Mapping) or not all(
                isinstance(v, ViewSpec) for v in views.values()):
            raise ValueError(f"{owner}.views: expected {{name: ViewSpec}}, got {views!r}")
        for name, encoder in encoders.items():
            view = views.get(encoder.view)
            if view is None or encoder.modality not in view.modalities:
                raise ValueError(f"{owner}: encoder {name!r} reads {encoder.modality!r} from "
                                 f"view {encoder.view!r}; the views are {_describe_views(views)}")
        self._views = dict(views)
        self._encoders = dict(encoders)
        self.init_checkpoints = dict(init_checkpoints or {})
        self.total_steps = self.add_weight(
            name="total_steps", shape=(), dtype="int64", trainable=False,
            initializer=keras.initializers.Constant(total_steps),
            aggregation="only_first_replica")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @abc.abstractmethod
    def train_step(self, data):
        """One optimizer step on a batch {"views": {name: {modality: ...}}, "label",
        "video_id"}."""

    # ----------------------------------------------------------- what others read
    @property
    def views(self) -> dict[str, ViewSpec]:
        return dict(self._views)

    @property
    def encoders(self) -> dict[str, Encoder]:
        return dict(self._encoders)

    @property
    def primary_encoder(self) -> str:
        return next(iter(self._encoders))

    def encoder_model(self, name: str) -> keras.Model:
        """The `keras.Model` of encoder `name`: clips (B, ...) -> features (B, D)."""
        return getattr(self, self._encoders[name].attribute)

    def input_spec(self) -> dict:
        """The JSON a run writes as `input_spec.json`: views, encoders and their inputs."""
        return {"method": type(self).__name__, "primary_encoder": self.primary_encoder,
                "views": {n: input_spec.view_to_json(v) for n, v in self._views.items()},
                "encoders": {n: dataclasses.asdict(e) for n, e in self._encoders.items()}}

    # ------------------------------------------------------------------ schedule
    def configure(self, *, total_steps: int, steps_per_epoch: int) -> None:
        """Tells the method the run's length before training."""
        del steps_per_epoch
        self.total_steps.assign(total_steps)

    @property
    def step(self) -> tf.Variable:
        return self.optimizer.iterations

    # ------------------------------------------------------------ initialization
    def initialize_encoders(self) -> list[str]:
        """Restores each `init_checkpoints` encoder (with `init_parts`) from the other
        run's checkpoint, then calls `after_initialization`; returns one line per
        encoder saying where it came from."""
        lines = []
        unknown = set(self.init_checkpoints) - set(self._encoders)
        if unknown:
            raise ValueError(f"{type(self).__name__}.init_checkpoints: unknown encoders "
                             f"{sorted(unknown)}; expected some of {sorted(self._encoders)}")
        for name, source in self.init_checkpoints.items():
            binding = f"{type(self).__name__}.init_checkpoints[{name!r}]"
            directory, _, source_encoder = source.partition(":")
            path, attribute = encoder_checkpoint(directory, source_encoder or None, binding)
            parts = self.init_parts(name, attribute, binding)
            holder = tf.Module()
            for source_attribute, module in parts.items():
                setattr(holder, source_attribute, module)
            try:
                tf.train.Checkpoint(model=holder).restore(path).expect_partial() \
                    .assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as error:
                raise ValueError(f"{binding}: {path} does not hold matching {sorted(parts)}: "
                                 f"{str(error).strip().splitlines()[0][:200]}") from None
            lines.append(f"{name} encoder ({', '.join(parts)}) initialized from {path}")
        if lines:
            self.after_initialization()
        return lines

    def init_parts(self, name: str, source_attribute: str, binding: str) -> dict:
        """The modules restored for encoder `name`, keyed by their attribute in the source
        run's method (`source_attribute` holds its encoder): the encoder alone here."""
        del binding
        return {source_attribute: self.encoder_model(name)}

    def after_initialization(self) -> None:
        """Hook after `init_checkpoints` were restored (momentum methods copy the new
        weights into their momentum encoders)."""

    # --------------------------------------------------------------- the batch
    def view_inputs(self, data, view: str) -> dict:
        """The tensors of one view of a batch; a view with deferred augmentation
        (uint8 crops, "rgb_size", "augment_seed", "augment_photometric" where the
        pipeline decided the clips' photometric gates) is resized, flipped and augmented
        here, on the device, with the pipeline's per-clip draws."""
        if not isinstance(data, Mapping) or view not in data.get("views", {}):
            raise ValueError(f"{type(self).__name__}.train_step: expected a batch "
                             f"{{'views': {{{view!r}: ...}}, 'label': ...}}, got "
                             f"{_describe(data)}")
        values = dict(data["views"][view])
        if "augment_seed" in values:
            values["rgb"] = augment.augment_batch(
                values["rgb"], values.pop("augment_seed"), values.pop("rgb_size", None),
                self._views[view].augmentation, values.pop("augment_photometric", None))
        return values

    def view_clips(self, data, view: str, modality: str) -> tf.Tensor:
        """(B, K, ...) clips of one view's modality, checked against the view's clip
        count K."""
        clips = self.view_inputs(data, view).get(modality)
        clips = None if clips is None else tf.convert_to_tensor(clips)
        expected = self._views[view].num_clips
        if clips is None or clips.shape.rank is None or clips.shape.rank < 3 \
                or clips.shape[1] != expected:
            raise ValueError(
                f"batch['views'][{view!r}][{modality!r}]: expected shape (batch, {expected} "
                f"clips, ...), got {None if clips is None else tuple(clips.shape)}")
        return clips

    @property
    def metrics(self):
        return [self.loss_tracker]

    def scaled_for_gradients(self, loss: tf.Tensor) -> tf.Tensor:
        """What to differentiate for this replica's `loss`: divided by the number of
        replicas (the optimizer sums their gradients) and multiplied by the optimizer's
        loss scale (a `LossScaleOptimizer`'s dynamic scale under mixed_float16, else 1),
        which the optimizer's `apply` divides out again."""
        self._scales_its_loss = True  # seen while the step is traced
        return self.optimizer.scale_loss(loss / num_replicas())

    def apply_and_track(self, loss: tf.Tensor, gradients, variables, *,
                        keep: tf.Tensor | None = None) -> None:
        """Applies `gradients` and records the (per-replica, unscaled) loss. With `keep`
        (a scalar bool), a step where it is False counts (the optimizer's iterations
        advance) but changes no variable and no optimizer slot: they are put back (a
        tf.cond around the step cannot hold the optimizer's cross-replica sync)."""
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            if not getattr(self, "_scales_its_loss", False):
                raise ValueError(
                    f"{type(self).__name__}.train_step differentiates a loss that "
                    f"Method.scaled_for_gradients did not scale; under "
                    f"train.precision='mixed_float16' its gradients would be divided by the "
                    f"loss scale")
            # It skips the step when a replica's own gradients overflow: all must skip.
            gradients = nonfinite_on_all_if_on_any(gradients)
        if keep is None:
            self.optimizer.apply(gradients, variables)
        else:
            # Float state only (a LossScaleOptimizer's step counter is an integer).
            state = variables + [v for v in self.optimizer.variables
                                 if v is not self.optimizer.iterations
                                 and "float" in str(v.dtype)]
            before = [tf.identity(v) for v in state]
            with tf.control_dependencies(before):
                self.optimizer.apply(gradients, variables)
            # An EMA with m in {0, 1}: 1 keeps the new values, 0 puts the old ones back.
            ema_update(state, before, tf.cast(keep, tf.float32))
        self.loss_tracker.update_state(loss)


def _describe(data) -> str:
    if isinstance(data, Mapping):
        return "a dict with keys " + str(sorted(data))
    return type(data).__name__


def _describe_views(views: Mapping[str, ViewSpec]) -> str:
    return str({name: tuple(view.modalities) for name, view in views.items()})


def read_input_spec(model_dir: str) -> dict:
    """A run's `input_spec.json`, or a ValueError naming the file."""
    path = os.path.join(model_dir, INPUT_SPEC_FILE)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path}: no such file (video_ssl.train writes it before the "
                         "first step; expected a training model_dir)")
    with tf.io.gfile.GFile(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None


def encoder_checkpoint(source: str, encoder: str | None, binding: str) -> tuple[str, str]:
    """(checkpoint prefix, attribute of the encoder in that run's method)."""
    model_dir = source
    if not tf.io.gfile.isdir(source):
        model_dir = os.path.dirname(os.path.dirname(source))  # DIR/checkpoints/ckpt-N
    spec = read_input_spec(model_dir)
    name = encoder or spec["primary_encoder"]
    if name not in spec["encoders"]:
        raise ValueError(f"{binding}: {model_dir} has no encoder {name!r}; it has "
                         f"{sorted(spec['encoders'])}")
    path = source
    if tf.io.gfile.isdir(source):
        path = tf.train.latest_checkpoint(os.path.join(source, "checkpoints"))
        if path is None:
            raise ValueError(f"{binding}: {source}/checkpoints holds no checkpoint")
    return path, spec["encoders"][name]["attribute"]
