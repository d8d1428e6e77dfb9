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

Shuffle-BN: with several replicas the key encoder's inputs are gathered, permuted
with a permutation shared by all replicas, encoded (each replica BatchNorms a random
subset of the global batch) and un-permuted, so a query and its positive key never
share BatchNorm statistics. On one device there is nothing to shuffle across; there
the leakage is limited as in the official code: keys are computed one clip-batch at a
time, so the key encoder's BatchNorm never sees two clips of one video together.

The queue starts, as in the official code, from random unit vectors. The official
code makes no optimizer step until the queue has been filled once
(`wait_for_full_queue=True`); by default training starts at once.
"""
from __future__ import annotations

import tensorflow as tf

from video_ssl.distribute import all_gather, num_replicas, replica_id
from video_ssl.methods.losses import multi_positive_nce
from video_ssl.methods.base import configurable
from video_ssl.methods.momentum import ema_update
from video_ssl.methods.queue import FeatureQueue, random_unit_rows
from video_ssl.methods.rho import MomentumRhoMethod


@configurable
class MoCo(MomentumRhoMethod):
    """ρMoCo. See the module docstring; `rho`, `backbone`, ... as in `RhoMethod`."""

    def __init__(self, backbone="slow_r50", *, queue_size: int = 65536,
                 temperature: float = 0.1, hidden_dim: int = 2048, embedding_dim: int = 128,
                 num_layers: int = 3, batch_norm_in_head: bool = False,
                 base_momentum: float = 0.994, shuffle_bn: bool = True,
                 loss_per_positive: bool = False, wait_for_full_queue: bool = False,
                 **kwargs):
        super().__init__(backbone, base_momentum=base_momentum, **kwargs)
        self.temperature = float(temperature)
        self.shuffle_bn = shuffle_bn
        self.loss_per_positive = loss_per_positive
        self.wait_for_full_queue = wait_for_full_queue
        self.projector = self.mlp(input_dim=self.feature_dim, hidden_dim=hidden_dim,
                                  output_dim=embedding_dim, num_layers=num_layers,
                                  batch_norm=batch_norm_in_head, name="projector")
        self.build_momentum_encoder()
        self.queue = FeatureQueue(queue_size, {"keys": ((embedding_dim,), "float32",
                                                        random_unit_rows),
                                               **self.extra_queue_columns(embedding_dim)},
                                  name="queue")

    def extra_queue_columns(self, embedding_dim: int) -> dict:
        """Queue columns aligned with the keys (CoCLR: labels, sampler features, video
        ids); a subclass that adds some enqueues them with the keys."""
        del embedding_dim
        return {}

    def _encode_keys(self, clip):
        return tf.math.l2_normalize(super().momentum_target(clip, 0), axis=-1)

    def momentum_target(self, clip, clip_index):
        replicas = num_replicas()
        if replicas == 1 or not self.shuffle_bn:
            return self._encode_keys(clip)
        local_batch = tf.shape(clip)[0]
        gathered = all_gather(clip)
        # The same permutation on every replica: a stateless draw seeded by the step.
        seed = tf.stack([tf.cast(self.step, tf.int32), clip_index])
        permutation = tf.argsort(tf.random.stateless_uniform(tf.shape(gathered)[:1], seed))
        local = tf.range(local_batch) + replica_id() * local_batch
        keys = all_gather(self._encode_keys(tf.gather(gathered, tf.gather(permutation, local))))
        return tf.gather(tf.gather(keys, tf.argsort(permutation)), local)

    def query_loss(self, clip, other_targets):
        query = tf.math.l2_normalize(self.grouped(lambda x: self.projector(
            self.backbone(x, training=True), training=True), clip), axis=-1)
        positives = tf.stack([tf.reduce_sum(query * key, axis=-1) for key in other_targets], 1)
        negatives = tf.matmul(query, self.queue["keys"], transpose_b=True)
        if self.loss_per_positive:
            return tf.add_n([self._nce(positives[:, k:k + 1], negatives)
                             for k in range(len(other_targets))]) / len(other_targets)
        return self._nce(positives, negatives)

    def _nce(self, positives, negatives):
        logits = tf.concat([positives, negatives], axis=1) / self.temperature
        mask = tf.concat([tf.ones_like(positives, tf.bool), tf.zeros_like(negatives, tf.bool)], 1)
        return multi_positive_nce(logits, mask)

    def apply_gradients(self, loss, gradients, variables):
        if not self.wait_for_full_queue:
            return super().apply_gradients(loss, gradients, variables)
        # Until the queue has filled once, a step counts (the optimizer's iterations
        # advance), tracks the loss and enqueues, but changes no weight and no optimizer
        # slot: they are put back. (A tf.cond around the step would be simpler but
        # cannot hold the optimizer's cross-replica synchronization.)
        # Float state only (a LossScaleOptimizer's step counter is an integer).
        state = variables + [v for v in self.optimizer.variables
                             if v is not self.optimizer.iterations and "float" in str(v.dtype)]
        before = [tf.identity(v) for v in state]
        with tf.control_dependencies(before):
            self.apply_and_track(loss, gradients, variables)
        # keep = 1 keeps the new values, 0 puts the old ones back (an EMA with m in {0, 1}).
        keep = tf.cast(self.queue.is_full(), tf.float32)
        ema_update(state, before, keep)

    def after_step(self, targets):
        """Enqueues the keys of all clips of all replicas, overwriting the oldest."""
        self.queue.enqueue(keys=all_gather(tf.concat(targets, axis=0)))
