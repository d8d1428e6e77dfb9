"""The ρ family (Feichtenhofer et al. 2021): ρ temporally distant clips of one video
are positives of each other.

rho = 1 is the paper's baseline of two spatial augmentations of one clip, so the
batch then holds `num_clips = 2` clips of one shared window and the method computes
exactly what it computes for rho = 2. One view, "clips", feeds the one encoder,
named after its modality ("rgb", or "flow" for a flow network).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from video_ssl import optim
from video_ssl.methods.base import EncoderInput, Method, training_view
from video_ssl.methods.momentum import MomentumEncoder
from video_ssl.models import build_backbone
from video_ssl.models.heads import mlp_head

VIEW = "clips"
MODALITY_CHANNELS = {"rgb": 3, "flow": 2}


def add_gradients(a: list, b: list) -> list:
    """Element-wise sum of two gradient lists (None where a variable got none)."""
    return [y if x is None else x if y is None else x + y for x, y in zip(a, b)]


class RhoMethod(Method):
    """Online `backbone`, the ρ clips view and the distributed helpers.

    Args:
      backbone: a registry name for `build_backbone` or a built `keras.Model` from
        (B, T, H, W, C) to (B, D).
      rho: clips per video (1 = two augmentations of one clip).
      modality: what the clips are, "rgb" or "flow" (the encoder's name too).
      backbone_kwargs: extra `build_backbone` arguments (e.g. `width_multiplier`).
      synchronized_bn: SyncBN in the backbone (when built here) and in the heads.
      bn_group_size: clips per BatchNorm group inside a replica (B.1: statistics over
        8 clips for MoCo, one GPU's batch); None = the whole per-replica batch. The
        online encoder and heads run once per group, so each group's statistics
        normalize it and update the running averages in turn.
    """

    def __init__(self, backbone: str | keras.Model = "slow_r50", *, rho: int = 2,
                 modality: str = "rgb", backbone_kwargs: dict | None = None,
                 synchronized_bn: bool = False, bn_group_size: int | None = None, **kwargs):
        if int(rho) < 1:
            raise ValueError(f"{type(self).__name__}.rho: expected an integer >= 1, got {rho!r}")
        if modality not in MODALITY_CHANNELS:
            raise ValueError(f"{type(self).__name__}.modality: expected one of "
                             f"{sorted(MODALITY_CHANNELS)}, got {modality!r}")
        if bn_group_size is not None and int(bn_group_size) < 1:
            raise ValueError(f"{type(self).__name__}.bn_group_size: expected None or >= 1, "
                             f"got {bn_group_size!r}")
        super().__init__(**kwargs)
        self.rho = int(rho)
        self.num_clips = max(self.rho, 2)
        self.modality = modality
        self.synchronized_bn = synchronized_bn
        self.bn_group_size = bn_group_size
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, synchronized_bn=synchronized_bn,
                                      input_channels=MODALITY_CHANNELS[modality],
                                      **(backbone_kwargs or {}))
        self.backbone = backbone
        self.feature_dim = int(backbone.output_shape[-1])
        self._views = {VIEW: training_view(num_clips=self.num_clips, same_window=self.rho == 1,
                                           modalities=(modality,))}
        # All layers are built eagerly (the heads from their input size), so Keras
        # need not trace `call` with a training batch to build the model.
        self.built = True

    def encoder_attributes(self):
        return {self.modality: "backbone"}

    def encoder_inputs(self):
        return {self.modality: EncoderInput(VIEW, self.modality)}

    def mlp(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
            batch_norm: bool, name: str) -> keras.Sequential:
        return mlp_head(input_dim, hidden_dim=hidden_dim, output_dim=output_dim,
                        num_layers=num_layers, batch_norm=batch_norm,
                        synchronized_bn=self.synchronized_bn, name=name)

    def call(self, clips, training=False):
        """Backbone features (B, D) of clips (B, T, H, W, C)."""
        return self.backbone(clips, training=training)

    def grouped(self, fn, clips: tf.Tensor) -> tf.Tensor:
        """`fn(clips)`, run once per `bn_group_size` clips (BatchNorm statistics per group),
        in float32 whatever the layers compute in (the losses' precision)."""
        if self.bn_group_size is None or clips.shape[0] is None \
                or clips.shape[0] <= self.bn_group_size:
            return tf.cast(fn(clips), tf.float32)
        if clips.shape[0] % self.bn_group_size:
            raise ValueError(f"{type(self).__name__}.bn_group_size={self.bn_group_size} must "
                             f"divide the per-replica batch {clips.shape[0]}")
        return tf.concat([tf.cast(fn(group), tf.float32) for group in
                          tf.split(clips, clips.shape[0] // self.bn_group_size)], axis=0)

    def parallel_loss_and_gradients(self, clips: list[tf.Tensor], embed, objective, *,
                                    gradient_caching: bool = False):
        """(loss, gradients) of `objective` over the outputs of `embed` for all clips at
        once (SimCLR, SwAV: the loss needs every clip's embedding together).

        embed: clip-batch (B, T, H, W, C) -> (B, D); objective: (clips, B, D) -> loss.
        Plain: one forward/backward over all clips (BatchNorm statistics over all of them,
        or per `bn_group_size`); memory grows with the number of clips.
        gradient_caching (Gao et al. 2021): a forward of every clip-batch without keeping
        activations, the loss and its gradient with respect to the embeddings, then one
        clip-batch at a time a forward/backward seeded with that gradient: the memory of
        one clip-batch, for the same loss and gradients as the plain path whose BatchNorm
        normalizes each clip-batch alone (`bn_group_size` = the per-replica batch), which
        is what BatchNorm does here in both passes. Running averages take the first
        pass's statistics once per clip-batch; the second pass's updates are undone.
        """
        variables = self.trainable_variables
        if not gradient_caching:
            with tf.GradientTape() as tape:
                outputs = self.grouped(embed, tf.concat(clips, axis=0))
                loss = objective(tf.reshape(outputs, [len(clips), -1, outputs.shape[-1]]))
                scaled_loss = self.scaled_for_gradients(loss)
            return loss, tape.gradient(scaled_loss, variables)
        outputs = tf.stack([tf.stop_gradient(self.grouped(embed, clip)) for clip in clips])
        with tf.GradientTape() as tape:
            tape.watch(outputs)
            loss = objective(outputs)
            scaled_loss = self.scaled_for_gradients(loss)
        output_gradients = tape.gradient(scaled_loss, outputs)
        statistics = [v for v in self.non_trainable_weights if "float" in str(v.dtype)]
        with tf.control_dependencies([outputs]):
            after_first_pass = [tf.identity(v) for v in statistics]
        gradients = None
        for index, clip in enumerate(clips):
            # Chained, so that only one clip-batch's activations are alive at a time.
            with tf.control_dependencies(after_first_pass + [
                    g for g in gradients or [] if g is not None]):
                with tf.GradientTape() as tape:
                    clip_outputs = self.grouped(embed, clip)
                step = tape.gradient(clip_outputs, variables,
                                     output_gradients=output_gradients[index])
            gradients = step if gradients is None else add_gradients(gradients, step)
        with tf.control_dependencies([g for g in gradients if g is not None]):
            for variable, value in zip(statistics, after_first_pass):
                variable.assign(value)
        return loss, gradients

    def split_clips(self, data) -> list[tf.Tensor]:
        """The batch's `num_clips` clip-batches, each (B, T, H, W, C)."""
        clips = self.view_inputs(data, VIEW)[self.modality]
        if clips.shape.rank != 6 or clips.shape[1] != self.num_clips:
            raise ValueError(
                f"batch['views'][{VIEW!r}][{self.modality!r}]: expected shape (batch, "
                f"{self.num_clips} clips, T, H, W, C) for rho={self.rho}, got "
                f"{tuple(clips.shape)}")
        return tf.unstack(clips, axis=1)


class MomentumRhoMethod(RhoMethod):
    """Base of ρMoCo and ρBYOL: online backbone + projector (+ predictor) and a momentum
    encoder (EMA of backbone + projector) giving one target per clip.

    Each step: the momentum (`momentum_schedule="cosine"`: annealed from
    `base_momentum` at step 0 to 1 at `total_steps`, B.1; "constant": fixed at
    `base_momentum`, Table 15's N/A row and MoCo's original 0.999), the EMA update,
    the targets one clip-batch at a time (so BatchNorm never sees two clips of one
    video together), then each clip in turn as the query against the targets of the
    other clips, in its own forward/backward pass (memory of one clip), accumulating
    gradients. `gradient_aggregation="mean"` gives the gradient of the reported
    loss, the mean of the rho sub-losses; "sum" sums them as the official code does.
    """

    MOMENTUM_SCHEDULES = ("cosine", "constant")

    def __init__(self, backbone="slow_r50", *, base_momentum: float,
                 momentum_schedule: str = "cosine", gradient_aggregation: str = "mean",
                 **kwargs):
        super().__init__(backbone, **kwargs)
        if gradient_aggregation not in ("mean", "sum"):
            raise ValueError(f"{type(self).__name__}.gradient_aggregation: expected 'mean' or "
                             f"'sum', got {gradient_aggregation!r}")
        if momentum_schedule not in self.MOMENTUM_SCHEDULES:
            raise ValueError(f"{type(self).__name__}.momentum_schedule: expected one of "
                             f"{self.MOMENTUM_SCHEDULES}, got {momentum_schedule!r}")
        self.base_momentum = float(base_momentum)
        self.momentum_schedule = momentum_schedule
        self.gradient_aggregation = gradient_aggregation

    def build_momentum_encoder(self) -> None:
        """EMA copies of backbone + projector; call once the projector exists."""
        self.momentum = MomentumEncoder(self.online_modules(), name="momentum")

    def online_modules(self) -> dict[str, keras.Model]:
        return {"backbone": self.backbone, "projector": self.projector}

    def momentum_pairs(self) -> list[tuple[MomentumEncoder, dict]]:
        """(momentum encoder, the online modules it follows) of each trained stream."""
        return [(self.momentum, self.online_modules())]

    def after_initialization(self):
        # Initialized online weights start the momentum encoder too (MoCo: f_k = f_q).
        for encoder, online_modules in self.momentum_pairs():
            for name, online in online_modules.items():
                for target, source in zip(encoder[name].weights, online.weights):
                    target.assign(source)

    def current_momentum(self) -> tf.Tensor:
        if self.momentum_schedule == "constant":
            return tf.constant(self.base_momentum, tf.float32)
        tf.debugging.assert_positive(
            self.total_steps, message=f"{type(self).__name__}.total_steps must be set "
                                      "(> 0) before training; it drives momentum annealing")
        return optim.annealed_momentum(self.step, self.total_steps, self.base_momentum)

    def momentum_target(self, clip: tf.Tensor, clip_index: int) -> tf.Tensor:
        """The momentum encoder's target for one clip-batch."""
        return self.grouped(lambda x: self.momentum["projector"](
            self.momentum["backbone"](x, training=True), training=True), clip)

    def query_loss(self, clip: tf.Tensor, other_targets: list[tf.Tensor]) -> tf.Tensor:
        """The loss of one query clip-batch against the targets of the other clips."""
        raise NotImplementedError

    def after_step(self, targets: list[tf.Tensor]) -> None:
        """Hook after the optimizer step (MoCo enqueues the targets)."""

    def apply_gradients(self, loss, gradients, variables) -> None:
        """The optimizer step (MoCo may hold it back until its queue is full)."""
        self.apply_and_track(loss, gradients, variables)

    def train_step(self, data):
        clips = self.split_clips(data)
        momentum = self.current_momentum()
        self.momentum.update(self.online_modules(), momentum)
        targets = [tf.stop_gradient(self.momentum_target(clip, index))
                   for index, clip in enumerate(clips)]
        variables = self.trainable_variables
        weight = 1.0 / (len(clips) if self.gradient_aggregation == "mean" else 1)
        losses, gradients = [], None
        for index, clip in enumerate(clips):
            # Chain the queries so that only one clip's activations are alive at a time.
            with tf.control_dependencies([g for g in gradients or [] if g is not None]):
                with tf.GradientTape() as tape:
                    loss = self.query_loss(clip, targets[:index] + targets[index + 1:])
                    scaled_loss = self.scaled_for_gradients(loss * weight)
                step_gradients = tape.gradient(scaled_loss, variables)
            gradients = (step_gradients if gradients is None
                         else add_gradients(gradients, step_gradients))
            losses.append(loss)
        loss = tf.add_n(losses) / len(losses)
        self.apply_gradients(loss, gradients, variables)
        self.after_step(targets)
        return {"loss": self.loss_tracker.result(), "momentum": momentum}
