"""Shared base of the rho-methods (Feichtenhofer et al. 2021).

A method is a `keras.Model` whose `train_step` implements one objective. It holds the
online encoder as `backbone` (what the trainer exports), the heads, and for MoCo/BYOL
a momentum encoder. Everything a resumed run needs (queue, momentum encoder, step
limits) is a variable tracked by the model, so `tf.train.Checkpoint(model=method)`
saves it; the step counter is the optimizer's `iterations`.

rho is the number of temporally distant clips per video; rho=1 is the paper's
baseline of two spatial augmentations of one clip, so the batch then holds
`num_clips = 2` clips (the input pipeline must crop the same temporal window twice)
and the method computes exactly what it computes for rho=2.

Written for `tf.distribute`: `train_step` runs once per replica; raw-op losses are
divided by the number of replicas before differentiation (the optimizer sums
gradients over replicas); cross-replica gathers use the replica context.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import gin
import keras
import tensorflow as tf

from video_ssl import optim
from video_ssl.data import augment
from video_ssl.models import build_backbone
from video_ssl.models.heads import mlp_head


def configurable(cls):
    """`gin.configurable` for a Keras model class.

    Keras inspects `__init__` with `inspect.getfullargspec` when instantiating, which
    does not see through gin's wrapper; the original signature is put back on it.
    """
    signature = inspect.signature(cls.__init__)
    cls = gin.configurable(cls)
    cls.__init__.__signature__ = signature
    return cls


def num_replicas() -> int:
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def replica_id() -> tf.Tensor:
    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.constant(0, tf.int32)
    return tf.cast(context.replica_id_in_sync_group, tf.int32)


def all_gather(value: tf.Tensor) -> tf.Tensor:
    """Concatenation along axis 0 of `value` from all replicas, in replica order;
    gradients flow back to each replica's part."""
    if num_replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_gather(value, axis=0)


def ema_update(targets: Sequence, sources: Sequence, momentum: tf.Tensor) -> None:
    """`target <- momentum * target + (1 - momentum) * source` for each pair.

    Runs as a cross-replica update (like an optimizer step), so it works for any
    strategy whatever the targets' `aggregation`.
    """
    def update(strategy, momentum):
        for target, source in zip(targets, sources):
            strategy.extended.update(
                target.value, lambda t, s, m: t.assign(m * t + (1.0 - m) * s),
                args=(source.value, momentum), group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(
        update, tf.distribute.get_strategy(), momentum)


def momentum_copy(model: keras.Model) -> keras.Model:
    """A clone of `model` with equal weights whose variables the optimizer ignores.

    Only the variables are marked non-trainable (not the layers), so its BatchNorm still
    normalizes with batch statistics in training mode and keeps its own running
    statistics, as in the references (EMA over parameters only).
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for variable in copy.weights:
        variable.trainable = False
    return copy


class RhoMethod(keras.Model):
    """Base of the rho-methods: online `backbone`, `num_clips` bookkeeping, the loss
    tracker and the distributed helpers. Subclasses implement `train_step`.

    Args:
      backbone: a registry name for `build_backbone` or a built `keras.Model` from
        (B, T, H, W, C) to (B, D).
      rho: clips per video (1 = two augmentations of one clip).
      backbone_kwargs: extra `build_backbone` arguments (e.g. `width_multiplier`).
      synchronized_bn: SyncBN in the backbone (when built here) and in the heads.
      total_steps: the run's length in optimizer steps (the trainer sets it before
        `fit`; used by schedules inside the step such as momentum annealing).
    """

    def __init__(self, backbone: str | keras.Model = "slow_r50", *, rho: int = 2,
                 backbone_kwargs: dict | None = None, synchronized_bn: bool = False,
                 total_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(rho) < 1:
            raise ValueError(f"{type(self).__name__}.rho: expected an integer >= 1, got {rho!r}")
        self.rho = int(rho)
        self.num_clips = max(self.rho, 2)
        self.synchronized_bn = synchronized_bn
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, synchronized_bn=synchronized_bn,
                                      **(backbone_kwargs or {}))
        self.backbone = backbone
        self.feature_dim = int(backbone.output_shape[-1])
        self.total_steps = self.add_weight(
            name="total_steps", shape=(), dtype="int64", trainable=False,
            initializer=keras.initializers.Constant(total_steps),
            aggregation="only_first_replica")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # `augment.augment_batch` keywords when the input pipeline defers the
        # augmentation after the crop to the step (set by the trainer; None otherwise).
        self.device_augmentation: dict | None = None
        # All layers are built eagerly (the heads from their input size), so Keras
        # need not trace `call` with a training batch to build the model.
        self.built = True

    def mlp(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
            batch_norm: bool, name: str) -> keras.Sequential:
        return mlp_head(input_dim, hidden_dim=hidden_dim, output_dim=output_dim,
                        num_layers=num_layers, batch_norm=batch_norm,
                        synchronized_bn=self.synchronized_bn, name=name)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, clips, training=False):
        """Backbone features (B, D) of clips (B, T, H, W, C)."""
        return self.backbone(clips, training=training)

    def embed(self, rgb: tf.Tensor) -> tf.Tensor:
        """Backbone features of (B, T, H, W, C) clips, or the mean over clips of
        (B, num_clips, T, H, W, C) (for the online kNN monitor)."""
        if rgb.shape.rank == 5:
            return self.backbone(rgb, training=False)
        batch, clips = tf.shape(rgb)[0], tf.shape(rgb)[1]
        features = self.backbone(tf.reshape(rgb, tf.concat([[-1], tf.shape(rgb)[2:]], 0)),
                                 training=False)
        return tf.reduce_mean(tf.reshape(features, [batch, clips, -1]), axis=1)

    def split_clips(self, data) -> list[tf.Tensor]:
        """The batch's `num_clips` clip-batches, each (B, T, H, W, C). A batch from a
        pipeline with `defer_augmentation=True` (uint8 crops, "rgb_size" and
        "augment_seed") is resized, flipped and augmented here, on the device."""
        if not isinstance(data, dict) or "rgb" not in data:
            raise ValueError(f"{type(self).__name__}.train_step: expected a dict batch with "
                             f"key 'rgb', got {type(data).__name__}")
        rgb = data["rgb"]
        if rgb.shape.rank != 6 or rgb.shape[1] != self.num_clips:
            raise ValueError(
                f"batch['rgb']: expected shape (batch, {self.num_clips} clips, T, H, W, C) "
                f"for rho={self.rho}, got {tuple(rgb.shape)}")
        if "augment_seed" in data:
            if self.device_augmentation is None:
                raise ValueError(f"{type(self).__name__}: the batch has deferred "
                                 "augmentation but device_augmentation is not set")
            rgb = augment.augment_batch(rgb, data["augment_seed"], data.get("rgb_size"),
                                        **self.device_augmentation)
        return tf.unstack(rgb, axis=1)

    @property
    def step(self) -> tf.Variable:
        return self.optimizer.iterations

    def apply_and_track(self, loss: tf.Tensor, gradients, variables) -> None:
        """Applies `gradients` and records the (per-replica, unscaled) loss."""
        self.optimizer.apply(gradients, variables)
        self.loss_tracker.update_state(loss)


class MomentumRhoMethod(RhoMethod):
    """Base of ρMoCo and ρBYOL: online backbone + projector (+ predictor) and a momentum
    encoder (EMA of backbone + projector) giving one target per clip.

    Each step: anneal the momentum (`optim.annealed_momentum` from `base_momentum` at
    step 0 to 1 at `total_steps`), EMA-update the momentum encoder, compute the targets
    one clip-batch at a time (so BatchNorm never sees two clips of one video together),
    then treat each clip in turn as the query against the targets of the other clips,
    in its own forward/backward pass (memory of one clip), accumulating gradients.
    `gradient_aggregation="mean"` (default) gives the gradient of the reported loss,
    the mean of the rho sub-losses; "sum" sums them as the official code does.
    """

    def __init__(self, backbone="slow_r50", *, base_momentum: float,
                 gradient_aggregation: str = "mean", **kwargs):
        super().__init__(backbone, **kwargs)
        if gradient_aggregation not in ("mean", "sum"):
            raise ValueError(f"{type(self).__name__}.gradient_aggregation: expected 'mean' or "
                             f"'sum', got {gradient_aggregation!r}")
        self.base_momentum = float(base_momentum)
        self.gradient_aggregation = gradient_aggregation

    def build_momentum_encoder(self) -> None:
        """Clones backbone + projector; call once the projector exists."""
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)

    @property
    def encoder_pairs(self):
        """(momentum variable, online variable) pairs updated by EMA."""
        online = self.backbone.weights + self.projector.weights
        momentum = self.momentum_backbone.weights + self.momentum_projector.weights
        return [(m, o) for m, o in zip(momentum, online) if o.trainable]

    def current_momentum(self) -> tf.Tensor:
        tf.debugging.assert_positive(
            self.total_steps, message=f"{type(self).__name__}.total_steps must be set "
                                      "(> 0) before training; it drives momentum annealing")
        return optim.annealed_momentum(self.step, self.total_steps, self.base_momentum)

    def momentum_target(self, clip: tf.Tensor, clip_index: int) -> tf.Tensor:
        """The momentum encoder's target for one clip-batch."""
        return self.momentum_projector(self.momentum_backbone(clip, training=True),
                                       training=True)

    def query_loss(self, clip: tf.Tensor, other_targets: list[tf.Tensor]) -> tf.Tensor:
        """The loss of one query clip-batch against the targets of the other clips."""
        raise NotImplementedError

    def after_step(self, targets: list[tf.Tensor]) -> None:
        """Hook after the optimizer step (MoCo enqueues the targets)."""

    def train_step(self, data):
        clips = self.split_clips(data)
        momentum = self.current_momentum()
        pairs = self.encoder_pairs
        ema_update([m for m, _ in pairs], [o for _, o in pairs], momentum)
        targets = [tf.stop_gradient(self.momentum_target(clip, index))
                   for index, clip in enumerate(clips)]
        variables = self.trainable_variables
        scale = 1.0 / num_replicas() / (len(clips) if self.gradient_aggregation == "mean" else 1)
        losses, gradients = [], None
        for index, clip in enumerate(clips):
            # Chain the queries so that only one clip's activations are alive at a time.
            with tf.control_dependencies([g for g in gradients or [] if g is not None]):
                with tf.GradientTape() as tape:
                    loss = self.query_loss(clip, targets[:index] + targets[index + 1:])
                    scaled_loss = loss * scale
                step_gradients = tape.gradient(scaled_loss, variables)
            gradients = step_gradients if gradients is None else [
                s if g is None else g if s is None else g + s
                for g, s in zip(gradients, step_gradients)]
            losses.append(loss)
        loss = tf.add_n(losses) / len(losses)
        self.apply_and_track(loss, gradients, variables)
        self.after_step(targets)
        return {"loss": self.loss_tracker.result(), "momentum": momentum}
