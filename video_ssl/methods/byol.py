"""ρBYOL: each clip's online prediction regresses the momentum (target) projections of
the other clips of its video, eq. (2), loss 2 - 2 cos (Feichtenhofer et al. 2021).

Defaults are the paper's (B.1): projector and predictor of 2 layers, Linear 4096
(no bias) -> BN -> ReLU -> Linear 256, SyncBN, m_base 0.996 annealed to 1; Table 16
varies `projector_layers` and `predictor_layers`. A query's loss is the mean over its
rho - 1 positives.
"""
from __future__ import annotations

import tensorflow as tf

from video_ssl.methods.losses import byol_loss
from video_ssl.methods.base import configurable
from video_ssl.methods.rho import MomentumRhoMethod


@configurable
class BYOL(MomentumRhoMethod):
    """ρBYOL. See the module docstring; `rho`, `backbone`, ... as in `RhoMethod`."""

    def __init__(self, backbone="slow_r50", *, hidden_dim: int = 4096,
                 embedding_dim: int = 256, projector_layers: int = 2,
                 predictor_layers: int = 2, base_momentum: float = 0.996,
                 synchronized_bn: bool = True, **kwargs):
        super().__init__(backbone, base_momentum=base_momentum,
                         synchronized_bn=synchronized_bn, **kwargs)
        self.projector = self.mlp(input_dim=self.feature_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=projector_layers,
                                  batch_norm=True, name="projector")
        self.predictor = self.mlp(input_dim=embedding_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=predictor_layers,
                                  batch_norm=True, name="predictor")
        self.build_momentum_encoder()

    def query_loss(self, clip, other_targets):
        prediction = self.grouped(lambda x: self.predictor(self.projector(
            self.backbone(x, training=True), training=True), training=True), clip)
        return tf.add_n([byol_loss(prediction, target) for target in other_targets]) / len(
            other_targets)
