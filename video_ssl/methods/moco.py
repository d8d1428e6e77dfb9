"""ρMoCo: momentum contrast with rho clips per video (Feichtenhofer et al. 2021).

Each clip is the query against the momentum keys of the other clips of its video
(positives) and a queue of keys from earlier batches (negatives), eq. (1). Defaults
are the paper's (B.1): queue 65,536, temperature 0.1, 3-layer MLP 2048 -> 128 without
BN, m_base 0.994 annealed to 1. All rho keys of every replica are enqueued each step
(the official code does not gather across machines; MoCo does).

With rho >= 3 a query has several positives. By default they share one row of eq. (1)
(their exp-similarities summed in the numerator); `loss_per_positive=True` is the
official code's variant: one InfoNCE row per positive (that positive against the
queue), averaged.

Shuffle-BN (§B.1, `steps.shuffled_bn`): a key is not normalized with the clips its
query was normalized with. With several replicas the key encoder's inputs are gathered,
permuted with a permutation shared by all replicas, encoded (each replica BatchNorms a
random subset of the global batch) and un-permuted. On one replica holding at least two
BatchNorm groups (`bn_group_size`) the key encoder's groups interleave the query
groups, each key group drawing its clips from as many query groups as it can (all
different when bn_group_size² <= the replica's batch), and the keys are put back in
order. (Keys are computed one clip-batch at a time, so two clips of one video never
share a key group; that alone does not stop the leak: unshuffled, a key's group holds
the same videos as its query's.) One group per replica: nothing to shuffle.

The queue starts, as in the official code, from random unit vectors. The official
code makes no optimizer step until the queue has been filled once
(`wait_for_full_queue=True`); by default training starts at once.
"""
from __future__ import annotations

import tensorflow as tf

from video_ssl.distribute import all_gather
from video_ssl.methods import steps
from video_ssl.methods.losses import multi_positive_nce
from video_ssl.methods.momentum import MomentumEncoder
from video_ssl.methods.queue import FeatureQueue, random_unit_rows
from video_ssl.methods.rho import RhoMethod


class MoCo(RhoMethod):
    """ρMoCo. See the module docstring; `views`, `backbone`, ... as in `RhoMethod`."""

    def __init__(self, views, backbone="slow_r50", *, queue_size: int = 65536,
                 temperature: float = 0.1, hidden_dim: int = 2048, embedding_dim: int = 128,
                 num_layers: int = 3, batch_norm_in_head: bool = False,
                 base_momentum: float = 0.994, momentum_schedule: str = "cosine",
                 gradient_aggregation: str = "mean", shuffle_bn: bool = True,
                 loss_per_positive: bool = False, wait_for_full_queue: bool = False,
                 **kwargs):
        steps.check_choice(type(self).__name__, "gradient_aggregation", gradient_aggregation,
                           ("mean", "sum"))
        super().__init__(views, backbone, **kwargs)
        self.temperature = float(temperature)
        self.gradient_aggregation = gradient_aggregation
        self.shuffle_bn = shuffle_bn
        self.loss_per_positive = loss_per_positive
        self.wait_for_full_queue = wait_for_full_queue
        self.projector = self.mlp(input_dim=self.feature_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=num_layers,
                                  batch_norm=batch_norm_in_head, name="projector")
        self.momentum = MomentumEncoder(self.online_modules(), base_momentum=base_momentum,
                                        schedule=momentum_schedule, owner="MoCo",
                                        name="momentum")
        self.queue = FeatureQueue(queue_size, {"keys": ((embedding_dim,), "float32",
                                                        random_unit_rows)}, name="queue")

    def online_modules(self) -> dict:
        return {"backbone": self.backbone, "projector": self.projector}

    def after_initialization(self):
        self.momentum.copy_from(self.online_modules())

    def keys(self, clip: tf.Tensor, clip_index: int) -> tf.Tensor:
        """The momentum encoder's L2-normalized keys of one clip-batch (shuffle-BN)."""
        def encode(x):
            return tf.math.l2_normalize(self.grouped(lambda y: self.momentum["projector"](
                self.momentum["backbone"](y, training=True), training=True), x), axis=-1)
        if not self.shuffle_bn:
            return encode(clip)
        return steps.shuffled_bn(encode, clip, self.bn_group_size,
                                 tf.stack([tf.cast(self.step, tf.int32), clip_index]))

    def query_loss(self, clip, other_keys):
        """Eq. (1) of one query clip-batch against the keys of the other clips."""
        query = tf.math.l2_normalize(self.grouped(lambda x: self.projector(
            self.backbone(x, training=True), training=True), clip), axis=-1)
        positives = tf.stack([tf.reduce_sum(query * key, axis=-1) for key in other_keys], 1)
        negatives = tf.matmul(query, self.queue["keys"], transpose_b=True)
        if self.loss_per_positive:
            return tf.add_n([self._nce(positives[:, k:k + 1], negatives)
                             for k in range(len(other_keys))]) / len(other_keys)
        return self._nce(positives, negatives)

    def _nce(self, positives, negatives):
        logits = tf.concat([positives, negatives], axis=1) / self.temperature
        mask = tf.concat([tf.ones_like(positives, tf.bool), tf.zeros_like(negatives, tf.bool)], 1)
        return multi_positive_nce(logits, mask)

    def train_step(self, data):
        clips = self.split_clips(data)
        momentum = self.momentum.value_at(self.step, self.total_steps)
        self.momentum.update(self.online_modules(), momentum)
        keys = [tf.stop_gradient(self.keys(clip, index)) for index, clip in enumerate(clips)]
        loss, gradients = steps.sequential_queries(self, clips, keys, self.query_loss,
                                                   self.gradient_aggregation)
        self.apply_and_track(loss, gradients, self.trainable_variables,
                             keep=self.queue.is_full() if self.wait_for_full_queue else None)
        # The keys of all clips of all replicas, overwriting the oldest.
        self.queue.enqueue(keys=all_gather(tf.concat(keys, axis=0)))
        return {"loss": self.loss_tracker.result(), "momentum": momentum}
