"""ρBYOL: each clip's online prediction regresses the momentum (target) projections of
the other clips of its video, eq. (2), loss 2 - 2 cos (Feichtenhofer et al. 2021).

Defaults are the paper's (B.1): projector and predictor of 2 layers, Linear 4096
(no bias) -> BN -> ReLU -> Linear 256, SyncBN, m_base 0.996 annealed to 1; Table 16
varies `projector_layers` and `predictor_layers`. A query's loss is the mean over its
rho - 1 positives; the queries are sequential as in ρMoCo (`gradient_aggregation`).
"""
from __future__ import annotations

import tensorflow as tf

from video_ssl.methods import steps
from video_ssl.methods.losses import byol_loss
from video_ssl.methods.momentum import MomentumEncoder
from video_ssl.methods.rho import RhoMethod


class BYOL(RhoMethod):
    """ρBYOL. See the module docstring; `views`, `backbone`, ... as in `RhoMethod`."""

    def __init__(self, views, backbone="slow_r50", *, hidden_dim: int = 4096,
                 embedding_dim: int = 256, projector_layers: int = 2,
                 predictor_layers: int = 2, base_momentum: float = 0.996,
                 momentum_schedule: str = "cosine", gradient_aggregation: str = "mean",
                 synchronized_bn: bool = True, **kwargs):
        steps.check_choice(type(self).__name__, "gradient_aggregation", gradient_aggregation,
                           ("mean", "sum"))
        super().__init__(views, backbone, synchronized_bn=synchronized_bn, **kwargs)
        self.gradient_aggregation = gradient_aggregation
        self.projector = self.mlp(input_dim=self.feature_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=projector_layers,
                                  batch_norm=True, name="projector")
        self.predictor = self.mlp(input_dim=embedding_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=predictor_layers,
                                  batch_norm=True, name="predictor")
        self.momentum = MomentumEncoder(self.online_modules(), base_momentum=base_momentum,
                                        schedule=momentum_schedule, owner="BYOL",
                                        name="momentum")

    def online_modules(self) -> dict:
        return {"backbone": self.backbone, "projector": self.projector}

    def after_initialization(self):
        self.momentum.copy_from(self.online_modules())

    def target(self, clip: tf.Tensor) -> tf.Tensor:
        """The momentum encoder's projections of one clip-batch."""
        return self.grouped(lambda x: self.momentum["projector"](
            self.momentum["backbone"](x, training=True), training=True), clip)

    def query_loss(self, clip, other_targets):
        prediction = self.grouped(lambda x: self.predictor(self.projector(
            self.backbone(x, training=True), training=True), training=True), clip)
        return tf.add_n([byol_loss(prediction, target) for target in other_targets]) / len(
            other_targets)

    def train_step(self, data):
        clips = self.split_clips(data)
        momentum = self.momentum.value_at(self.step, self.total_steps)
        self.momentum.update(self.online_modules(), momentum)
        targets = [tf.stop_gradient(self.target(clip)) for clip in clips]
        loss, gradients = steps.sequential_queries(self, clips, targets, self.query_loss,
                                                   self.gradient_aggregation)
        self.apply_and_track(loss, gradients, self.trainable_variables)
        return {"loss": self.loss_tracker.result(), "momentum": momentum}
