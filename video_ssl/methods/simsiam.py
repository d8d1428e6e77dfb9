"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning") on two
clips of a video: the worked example of docs/extending.md, built from existing parts.

The ρ family's base gives the view ("clips", from `rho_views`), the backbone, BatchNorm
groups and the clips of a batch; `mlp_head` gives the heads. Each clip's prediction
regresses the other clip's projection under a stop-gradient, symmetrized (Chen & He
§3, eq. 4): L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2, D the negative cosine
similarity. Their §3 heads: a 3-layer projector with BN on every layer (the output
too), a 2-layer bottleneck predictor (hidden 512) without BN on its output. No
momentum encoder, no negatives.
"""
from __future__ import annotations

import tensorflow as tf

from video_ssl.methods.rho import RhoMethod
from video_ssl.models.heads import mlp_head


def negative_cosine(prediction: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """D(p, sg(z)): the mean negative cosine similarity, the target's gradient stopped."""
    prediction = tf.math.l2_normalize(tf.cast(prediction, tf.float32), axis=-1)
    target = tf.math.l2_normalize(tf.stop_gradient(tf.cast(target, tf.float32)), axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(prediction * target, axis=-1))


class SimSiam(RhoMethod):
    """SimSiam; `views` ({"clips": 2 clips}), `backbone`, ... as in `RhoMethod`.

    hidden_dim, embedding_dim: the projector's widths; predictor_dim: the predictor's
    bottleneck (Chen & He §3: 2048, 2048, 512).
    """

    def __init__(self, views, backbone="slow_r50", *, hidden_dim: int = 2048,
                 embedding_dim: int = 2048, predictor_dim: int = 512,
                 synchronized_bn: bool = True, **kwargs):
        super().__init__(views, backbone, synchronized_bn=synchronized_bn, **kwargs)
        if self.num_clips != 2:
            raise ValueError(f"SimSiam.views: expected 2 clips per video (rho_views.rho = 1 "
                             f"or 2), got {self.num_clips}")
        self.projector = mlp_head(self.feature_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=3,
                                  output_batch_norm=True, synchronized_bn=synchronized_bn,
                                  name="projector")
        self.predictor = self.mlp(input_dim=embedding_dim, hidden_dim=predictor_dim,
                                  output_dim=embedding_dim, num_layers=2, batch_norm=True,
                                  name="predictor")

    def project(self, clip: tf.Tensor) -> tf.Tensor:
        return self.grouped(lambda x: self.projector(self.backbone(x, training=True),
                                                     training=True), clip)

    def train_step(self, data):
        first, second = self.split_clips(data)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            z1, z2 = self.project(first), self.project(second)
            p1, p2 = self.predictor(z1, training=True), self.predictor(z2, training=True)
            loss = (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
            scaled_loss = self.scaled_for_gradients(loss)
        self.apply_and_track(loss, tape.gradient(scaled_loss, variables), variables)
        return {"loss": self.loss_tracker.result()}
