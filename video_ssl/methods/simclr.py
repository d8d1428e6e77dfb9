"""ρSimCLR: contrastive loss over the whole global batch, eq. (1) (Feichtenhofer et al.
2021). Every clip is a query; the other clips of its video are its positives; all
clips of all other videos in the global batch (gathered from every replica, with
gradients flowing back through the gather) are negatives; a clip is never compared
with itself. Defaults are the paper's: 3-layer MLP 2048 -> 128 with BN, SyncBN,
temperature 0.1.

`positives="consecutive"` is the official code's variant: a separate two-view loss for
each consecutive clip pair (0, 1), (1, 2), ..., averaged.

The loss needs every clip's embedding at once, so memory grows with rho (the paper's
Table 2 has "out of memory" for rho = 4); `gradient_caching=True` computes the same
loss and gradients with the memory of one clip-batch (`steps.
parallel_loss_and_gradients`; BatchNorm then normalizes each clip-batch alone).
"""
from __future__ import annotations

import tensorflow as tf

from video_ssl.distribute import all_gather, replica_id
from video_ssl.methods import steps
from video_ssl.methods.losses import multi_positive_nce
from video_ssl.methods.rho import RhoMethod


class SimCLR(RhoMethod):
    """ρSimCLR. See the module docstring; `views`, `backbone`, ... as in `RhoMethod`."""

    def __init__(self, views, backbone="slow_r50", *, temperature: float = 0.1,
                 hidden_dim: int = 2048, embedding_dim: int = 128, num_layers: int = 3,
                 positives: str = "all", gradient_caching: bool = False,
                 synchronized_bn: bool = True, **kwargs):
        steps.check_choice("SimCLR", "positives", positives, ("all", "consecutive"))
        super().__init__(views, backbone, synchronized_bn=synchronized_bn, **kwargs)
        self.temperature = float(temperature)
        self.positives = positives
        self.gradient_caching = bool(gradient_caching)
        self.projector = self.mlp(input_dim=self.feature_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=num_layers,
                                  batch_norm=True, name="projector")

    def contrastive_loss(self, embeddings: tf.Tensor) -> tf.Tensor:
        """Eq. (1) for local embeddings (clips, B, D), L2-normalized, against the global
        batch (clips, replicas * B, D)."""
        clips, local_batch = tf.shape(embeddings)[0], tf.shape(embeddings)[1]
        gathered = tf.transpose(all_gather(tf.transpose(embeddings, [1, 0, 2])), [1, 0, 2])
        global_batch = tf.shape(gathered)[1]
        logits = tf.matmul(tf.reshape(embeddings, [clips * local_batch, -1]),
                           tf.reshape(gathered, [clips * global_batch, -1]),
                           transpose_b=True) / self.temperature
        # Row (clip a, local video b) -> global video replica * B + b; column (clip a', v).
        row_video = tf.tile(tf.range(local_batch) + replica_id() * local_batch, [clips])
        row_clip = tf.repeat(tf.range(clips), local_batch)
        column_video = tf.tile(tf.range(global_batch), [clips])
        column_clip = tf.repeat(tf.range(clips), global_batch)
        same_video = row_video[:, None] == column_video[None, :]
        same_clip = row_clip[:, None] == column_clip[None, :]
        logits = tf.where(same_video & same_clip, tf.constant(-float("inf")), logits)
        return multi_positive_nce(logits, same_video & ~same_clip)

    def embed(self, clip: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(tf.cast(self.projector(
            self.backbone(clip, training=True), training=True), tf.float32), -1)

    def objective(self, embeddings: tf.Tensor) -> tf.Tensor:
        """Eq. (1) over (clips, B, D) embeddings: all clips at once, or the official
        code's consecutive pairs."""
        if self.positives == "all":
            return self.contrastive_loss(embeddings)
        clips = embeddings.shape[0]
        return tf.add_n([self.contrastive_loss(embeddings[i:i + 2])
                         for i in range(clips - 1)]) / (clips - 1)

    def train_step(self, data):
        loss, gradients = steps.parallel_loss_and_gradients(
            self, self.split_clips(data), self.embed, self.objective,
            group_size=self.bn_group_size, gradient_caching=self.gradient_caching)
        self.apply_and_track(loss, gradients, self.trainable_variables)
        return {"loss": self.loss_tracker.result()}
