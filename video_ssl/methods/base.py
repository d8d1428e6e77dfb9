"""The generic method: what the trainer, export, evaluation and the kNN monitor know
of any self-supervised method.

A method is a `keras.Model` whose `train_step` implements one objective. It

- names its encoders (`ENCODERS`: encoder name -> attribute; the first is the
  primary one, which users evaluate by default) and says which view and modality
  feeds each (`encoder_inputs`);
- declares its input views (`views()`: name -> `ViewSpec`, built from the
  `train_input` bindings in `__init__`); the trainer passes them to the input
  pipeline and hands each batch over as {"views": {name: {modality: ...}}, "label"};
- owns its augmentation: a view with deferred augmentation arrives as decoded uint8
  crops, and `view_inputs` applies the rest of the view's augmentation in the step;
- has a schedule hook, `configure(total_steps=, steps_per_epoch=)`, called by the
  trainer before training (and after restoring a checkpoint);
- can initialize named encoders from other runs (`init_checkpoints={"flow": DIR}`),
  without touching gin (CoCLR's second stage runs while gin holds its own config).

Everything a resumed run needs is a variable the model tracks, so
`tf.train.Checkpoint(model=method)` saves it; the step counter is the optimizer's
`iterations`. Written for `tf.distribute`: `train_step` runs once per replica;
raw-op losses are divided by the number of replicas before differentiation, and scaled
by the optimizer's loss scale (mixed_float16), both in `scaled_for_gradients`. Under a
mixed-precision policy the methods cast embeddings to float32 before their losses.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
from typing import Mapping

import gin
import keras
import tensorflow as tf

from video_ssl.data import augment, input_spec
from video_ssl.data.views import ViewSpec
from video_ssl.distribute import has_accelerator, nonfinite_on_all_if_on_any, num_replicas

INPUT_SPEC_FILE = "input_spec.json"


def configurable(cls):
    """`gin.configurable` for a Keras model class.

    Keras inspects `__init__` with `inspect.getfullargspec` when instantiating, which
    does not see through gin's wrapper; the original signature is put back on it.
    """
    signature = inspect.signature(cls.__init__)
    cls = gin.configurable(cls)
    cls.__init__.__signature__ = signature
    return cls


@dataclasses.dataclass(frozen=True)
class EncoderInput:
    """What feeds an encoder: the name of one of the method's views and a modality."""
    view: str
    modality: str


def training_view(values: Mapping | None = None, **method_fields) -> ViewSpec:
    """A training `ViewSpec` from `train_input` bindings (the bound ones when
    `values` is None) and the fields the method decides. Deferred augmentation
    defaults to on when the replicas run on an accelerator (`has_accelerator`):
    on the CPU the pipeline's per-clip path is cheaper (benchmarks/RESULTS.md)."""
    values = dict(input_spec.train_input() if values is None else values)
    if values.get("defer_augmentation") is None:
        values["defer_augmentation"] = has_accelerator() and "rgb" in method_fields.get(
            "modalities", ("rgb",))
    return input_spec.view_from_input(values, **method_fields)


class Method(keras.Model):
    """Base of every method. Subclasses set `ENCODERS`, build their views in
    `__init__` (`self._views`) and implement `encoder_inputs` and `train_step`.

    Args:
      init_checkpoints: encoder name -> a training model_dir (or checkpoint prefix) of
        another run whose primary encoder initializes it; "DIR:NAME" picks that run's
        encoder NAME. Applied by the trainer on a fresh start (`initialize_encoders`).
      total_steps: the run's length in optimizer steps (the trainer sets it through
        `configure`; schedules inside the step read it).
    """

    # Encoder name -> attribute holding it; the first is the primary encoder.
    ENCODERS: Mapping[str, str] = {}

    def __init__(self, *, init_checkpoints: Mapping[str, str] | None = None,
                 total_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.init_checkpoints = dict(init_checkpoints or {})
        self._views: dict[str, ViewSpec] = {}
        self.total_steps = self.add_weight(
            name="total_steps", shape=(), dtype="int64", trainable=False,
            initializer=keras.initializers.Constant(total_steps),
            aggregation="only_first_replica")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    # ----------------------------------------------------------- what others read
    def encoder_attributes(self) -> dict[str, str]:
        """Encoder name -> attribute; `ENCODERS` unless the method's config decides."""
        return dict(self.ENCODERS)

    def encoders(self) -> dict[str, keras.Model]:
        return {name: getattr(self, attr) for name, attr in self.encoder_attributes().items()}

    @property
    def primary_encoder(self) -> str:
        return next(iter(self.encoder_attributes()))

    def views(self) -> dict[str, ViewSpec]:
        return dict(self._views)

    def encoder_inputs(self) -> dict[str, EncoderInput]:
        raise NotImplementedError

    def input_spec(self) -> dict:
        """The JSON a run writes as `input_spec.json`: views, encoders and their inputs."""
        inputs, attributes = self.encoder_inputs(), self.encoder_attributes()
        return {"method": type(self).__name__, "primary_encoder": self.primary_encoder,
                "views": {n: input_spec.view_to_json(v) for n, v in self._views.items()},
                "encoders": {n: {"attribute": a, "view": inputs[n].view,
                                 "modality": inputs[n].modality} for n, a in attributes.items()}}

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
        lines, encoders = [], self.encoders()
        unknown = set(self.init_checkpoints) - set(encoders)
        if unknown:
            raise ValueError(f"{type(self).__name__}.init_checkpoints: unknown encoders "
                             f"{sorted(unknown)}; expected some of {sorted(encoders)}")
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
        return {source_attribute: self.encoders()[name]}

    def after_initialization(self) -> None:
        """Hook after `init_checkpoints` were restored (momentum methods copy the new
        weights into their momentum encoders)."""

    # --------------------------------------------------------------- the batch
    def view_inputs(self, data, view: str) -> dict:
        """The tensors of one view of a batch; a view with deferred augmentation
        (uint8 crops, "rgb_size", "augment_seed") is resized, flipped and augmented
        here, on the device, with the pipeline's per-clip draws."""
        if not isinstance(data, Mapping) or view not in data.get("views", {}):
            raise ValueError(f"{type(self).__name__}.train_step: expected a batch "
                             f"{{'views': {{{view!r}: ...}}, 'label': ...}}, got "
                             f"{_describe(data)}")
        values = dict(data["views"][view])
        if "augment_seed" in values:
            values["rgb"] = augment.augment_batch(values["rgb"], values.pop("augment_seed"),
                                                  values.pop("rgb_size", None),
                                                  self._views[view].augmentation)
        return values

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

    def apply_and_track(self, loss: tf.Tensor, gradients, variables) -> None:
        """Applies `gradients` and records the (per-replica, unscaled) loss."""
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            if not getattr(self, "_scales_its_loss", False):
                raise ValueError(
                    f"{type(self).__name__}.train_step differentiates a loss that "
                    f"Method.scaled_for_gradients did not scale; under "
                    f"train.precision='mixed_float16' its gradients would be divided by the "
                    f"loss scale")
            # It skips the step when a replica's own gradients overflow: all must skip.
            gradients = nonfinite_on_all_if_on_any(gradients)
        self.optimizer.apply(gradients, variables)
        self.loss_tracker.update_state(loss)


def _describe(data) -> str:
    if isinstance(data, Mapping):
        return "a dict with keys " + str(sorted(data))
    return type(data).__name__


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
