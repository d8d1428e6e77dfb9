"""The objectives' math as pure functions (contract: `info_nce`, `byol_loss`, `sinkhorn`).

Equation numbers refer to Feichtenhofer et al. 2021: (1) the contrastive loss with
several positives per query, (2) BYOL's normalized regression, (3) SwAV's swapped
prediction of Sinkhorn-Knopp assignments.
"""
from __future__ import annotations

import tensorflow as tf


__all__ = ["multi_positive_nce", "mean_positive_nce", "info_nce", "byol_loss", "sinkhorn",
           "swapped_prediction_loss"]

def multi_positive_nce(logits: tf.Tensor, positive_mask: tf.Tensor) -> tf.Tensor:
    """Mean over rows of `-log(sum_pos exp(logit) / sum_all exp(logit))`.

    Both sums are taken with logsumexp so large logits do not overflow. Entries that
    must count neither as positive nor as negative should be set to -inf beforehand.
    """
    positive_mask = tf.cast(positive_mask, tf.bool)
    masked = tf.where(positive_mask, logits, tf.constant(-float("inf"), logits.dtype))
    per_row = tf.reduce_logsumexp(logits, axis=1) - tf.reduce_logsumexp(masked, axis=1)
    return tf.reduce_mean(per_row)


def mean_positive_nce(logits: tf.Tensor, positive_mask: tf.Tensor) -> tf.Tensor:
    """Mean over rows of the mean over a row's positives of `-log softmax(logits)`:
    `-(log_softmax(logits) * mask).sum(1) / mask.sum(1)` (the official UberNCE loss,
    TengdaHan/CoCLR main_nce.py; Khosla et al. 2020's L_out). With one positive per row
    it equals `multi_positive_nce`; with n it is at least that plus log n (Jensen), and its
    gradient pulls every positive equally, where the multi-instance form weighs them by
    their probability. Entries that must count neither as positive nor as negative should
    be set to -inf beforehand (they must not be positives).
    """
    positive_mask = tf.cast(positive_mask, tf.bool)
    log_probabilities = tf.nn.log_softmax(logits, axis=1)
    # tf.where rather than a product: -inf * 0 would be NaN.
    positive_sum = tf.reduce_sum(tf.where(positive_mask, log_probabilities,
                                          tf.zeros_like(log_probabilities)), axis=1)
    count = tf.reduce_sum(tf.cast(positive_mask, logits.dtype), axis=1)
    return tf.reduce_mean(-positive_sum / count)


def info_nce(query: tf.Tensor, keys: tf.Tensor, positive_mask: tf.Tensor,
             temperature: float) -> tf.Tensor:
    """Multi-instance InfoNCE, eq. (1): query (N, D) against keys (M, D).

    Both are L2-normalized here; positive_mask (N, M) marks each row's positives
    (every row needs at least one); all other keys are negatives.
    """
    query = tf.math.l2_normalize(query, axis=-1)
    keys = tf.math.l2_normalize(keys, axis=-1)
    logits = tf.matmul(query, keys, transpose_b=True) / temperature
    return multi_positive_nce(logits, positive_mask)


def byol_loss(prediction: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Eq. (2): mean over rows of `||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t)`."""
    prediction = tf.math.l2_normalize(prediction, axis=-1)
    target = tf.math.l2_normalize(target, axis=-1)
    return tf.reduce_mean(2.0 - 2.0 * tf.reduce_sum(prediction * target, axis=-1))


def _cross_replica_sum(value: tf.Tensor) -> tf.Tensor:
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _cross_replica_max(value: tf.Tensor) -> tf.Tensor:
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return tf.reduce_max(context.all_gather(tf.reshape(value, [1]), axis=0))


def sinkhorn(scores: tf.Tensor, epsilon: float = 0.05, iterations: int = 3) -> tf.Tensor:
    """SwAV's Sinkhorn-Knopp assignments (N, K) from prototype scores (N, K); rows sum to 1.

    Inside a replica context of a `tf.distribute` strategy the normalization statistics
    (total mass, per-prototype sums, number of samples) are summed over all replicas,
    so the assignments equal those of the global batch on one device. No gradient
    flows through the assignments.
    """
    scores = tf.stop_gradient(tf.cast(scores, tf.float32)) / epsilon
    # Subtracting one global constant leaves the normalized result unchanged and keeps
    # exp() finite for any score range.
    q = tf.exp(scores - _cross_replica_max(tf.reduce_max(scores)))
    num_samples = _cross_replica_sum(tf.cast(tf.shape(q)[0], tf.float32))
    num_prototypes = tf.cast(tf.shape(q)[1], tf.float32)
    q /= _cross_replica_sum(tf.reduce_sum(q))
    for _ in range(iterations):
        q /= _cross_replica_sum(tf.reduce_sum(q, axis=0, keepdims=True)) * num_prototypes
        q /= tf.reduce_sum(q, axis=1, keepdims=True) * num_samples
    return tf.stop_gradient(q * num_samples)


def swapped_prediction_loss(assignments: tf.Tensor, scores: tf.Tensor,
                            temperature: float) -> tf.Tensor:
    """Eq. (3): mean over rows of the cross-entropy between the assignments of one view
    and the softmax of another view's prototype scores at `temperature`."""
    log_probabilities = tf.nn.log_softmax(scores / temperature, axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(assignments * log_probabilities, axis=-1))
