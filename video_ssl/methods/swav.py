"""ρSwAV: swapped prediction of Sinkhorn-Knopp prototype assignments between the clips
of a video, eq. (3) (Feichtenhofer et al. 2021; Caron et al. 2020).

Defaults are the paper's: 3-layer MLP 2048 -> 128 with BN, SyncBN, 1000 prototypes,
Sinkhorn epsilon 0.05 with 3 iterations whose statistics span the global batch, no
gradient through the assignments, temperature 0.1, no multi-crop. Prototypes are
re-normalized to unit rows before every step and get a zero gradient for the first
`freeze_prototypes_steps` steps (0 = one epoch, set in `configure`; a variable, so it
checkpoints). Coupled weight decay still shrinks them then, which only rescales rows
that the next step re-normalizes, so their directions stay frozen.

By default (paper) every clip gives assignments that all other clips predict;
`assignment_clips=2` is the official code's choice for rho > 2: only clips 0 and 1
give assignments, the other clips are only predicted.

`gradient_caching=True`: the same loss and gradients with the memory of one
clip-batch, as for SimCLR (`steps.parallel_loss_and_gradients`); the Sinkhorn
assignments still span the global batch of every clip.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from video_ssl.methods import steps
from video_ssl.methods.losses import sinkhorn, swapped_prediction_loss
from video_ssl.methods.rho import RhoMethod
from video_ssl.models.heads import Prototypes


class SwAV(RhoMethod):
    """ρSwAV. See the module docstring; `views`, `backbone`, ... as in `RhoMethod`."""

    def __init__(self, views, backbone="slow_r50", *, num_prototypes: int = 1000,
                 temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, hidden_dim: int = 2048,
                 embedding_dim: int = 128, num_layers: int = 3,
                 assignment_clips: int | None = None, freeze_prototypes_steps: int = 0,
                 gradient_caching: bool = False, synchronized_bn: bool = True, **kwargs):
        super().__init__(views, backbone, synchronized_bn=synchronized_bn, **kwargs)
        if assignment_clips is not None and not 1 <= assignment_clips <= self.num_clips:
            raise ValueError(f"SwAV.assignment_clips: expected None or 1..{self.num_clips}, "
                             f"got {assignment_clips!r}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.assignment_clips = assignment_clips or self.num_clips
        self.gradient_caching = bool(gradient_caching)
        self.projector = self.mlp(input_dim=self.feature_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=num_layers,
                                  batch_norm=True, name="projector")
        # float32 under a mixed policy: the scores feed Sinkhorn and the loss.
        self.prototypes = Prototypes(num_prototypes, dtype="float32", name="prototypes")
        self.prototypes.build((None, embedding_dim))
        self.freeze_prototypes_steps = self.add_weight(
            name="freeze_prototypes_steps", shape=(), dtype="int64", trainable=False,
            initializer=keras.initializers.Constant(freeze_prototypes_steps),
            aggregation="only_first_replica")

    def configure(self, *, total_steps, steps_per_epoch):
        super().configure(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        # B.1: the prototypes are frozen during the first epoch.
        if int(self.freeze_prototypes_steps.numpy()) == 0:
            self.freeze_prototypes_steps.assign(steps_per_epoch)

    def swapped_loss(self, scores: tf.Tensor) -> tf.Tensor:
        """Mean over (assigning clip, predicting clip) pairs of eq. (3); scores (clips, B, K)."""
        losses = []
        for source in range(self.assignment_clips):
            assignments = sinkhorn(scores[source], self.epsilon, self.sinkhorn_iterations)
            losses += [swapped_prediction_loss(assignments, scores[target], self.temperature)
                       for target in range(scores.shape[0]) if target != source]
        return tf.add_n(losses) / len(losses)

    def embed(self, clip: tf.Tensor) -> tf.Tensor:
        """Prototype scores (B, K) of one clip-batch."""
        return self.prototypes(tf.math.l2_normalize(tf.cast(self.projector(
            self.backbone(clip, training=True), training=True), tf.float32), -1))

    def train_step(self, data):
        clips = self.split_clips(data)
        self.prototypes.normalize()
        loss, gradients = steps.parallel_loss_and_gradients(
            self, clips, self.embed, self.swapped_loss, group_size=self.bn_group_size,
            gradient_caching=self.gradient_caching)
        variables = self.trainable_variables
        frozen = tf.cast(self.step < self.freeze_prototypes_steps, tf.float32)
        gradients = [g * (1.0 - frozen) if v is self.prototypes.kernel else g
                     for g, v in zip(gradients, variables)]
        self.apply_and_track(loss, gradients, variables)
        return {"loss": self.loss_tracker.result()}
