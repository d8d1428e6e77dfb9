"""The objectives against plain NumPy versions of eqs. (1)-(3) of Feichtenhofer et al. 2021."""
import numpy as np
import pytest
import tensorflow as tf

from video_ssl import losses


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _info_nce_numpy(query, keys, mask, temperature):
    similarity = _normalize(query) @ _normalize(keys).T / temperature
    exp = np.exp(similarity.astype(np.float64))
    return np.mean(-np.log((exp * mask).sum(1) / exp.sum(1)))


def _sinkhorn_numpy(scores, epsilon, iterations):
    q = np.exp(scores.astype(np.float64) / epsilon).T  # (K, N) as in SwAV's code
    num_prototypes, num_samples = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= num_prototypes
        q /= q.sum(axis=0, keepdims=True)
        q /= num_samples
    return (q * num_samples).T


def test_info_nce_several_positives_per_row_matches_numpy():
    rng = np.random.default_rng(0)
    query, keys = rng.normal(size=(6, 5)), rng.normal(size=(9, 5))
    mask = rng.random((6, 9)) < 0.3
    mask[np.arange(6), np.arange(6)] = True  # at least one positive per row
    assert (mask.sum(1) > 1).any()
    got = losses.info_nce(tf.constant(query, tf.float32), tf.constant(keys, tf.float32),
                          tf.constant(mask), temperature=0.1)
    np.testing.assert_allclose(got.numpy(), _info_nce_numpy(query, keys, mask, 0.1), rtol=1e-5)


def test_info_nce_is_finite_for_large_logits():
    rng = np.random.default_rng(1)
    query = tf.constant(rng.normal(size=(4, 3)), tf.float32)
    mask = tf.eye(4, dtype=tf.bool)
    got = losses.info_nce(query, query, mask, temperature=1e-3)
    assert np.isfinite(got.numpy()) and got.numpy() >= 0


def test_byol_loss_matches_numpy():
    rng = np.random.default_rng(2)
    prediction, target = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    expected = np.mean(np.sum((_normalize(prediction) - _normalize(target)) ** 2, axis=1))
    got = losses.byol_loss(tf.constant(prediction, tf.float32), tf.constant(target, tf.float32))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_sinkhorn_matches_numpy_and_marginals():
    rng = np.random.default_rng(3)
    scores = _normalize(rng.normal(size=(12, 8))) @ _normalize(rng.normal(size=(5, 8))).T
    got = losses.sinkhorn(tf.constant(scores, tf.float32), epsilon=0.05, iterations=3).numpy()
    np.testing.assert_allclose(got, _sinkhorn_numpy(scores, 0.05, 3), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
    # Converged assignments spread the samples equally over the prototypes.
    converged = losses.sinkhorn(tf.constant(scores, tf.float32), epsilon=0.5, iterations=200)
    np.testing.assert_allclose(converged.numpy().sum(0), 12 / 5, rtol=1e-3)


def test_sinkhorn_has_no_gradient():
    scores = tf.Variable(tf.random.normal((4, 3)))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(losses.sinkhorn(scores) * tf.range(3, dtype=tf.float32))
    assert tape.gradient(total, scores) is None


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_swapped_prediction_loss_matches_numpy(temperature):
    rng = np.random.default_rng(4)
    assignments = rng.random((6, 4))
    assignments /= assignments.sum(1, keepdims=True)
    scores = rng.normal(size=(6, 4))
    logits = scores / temperature
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -np.mean(np.sum(assignments * log_softmax, axis=1))
    got = losses.swapped_prediction_loss(tf.constant(assignments, tf.float32),
                                         tf.constant(scores, tf.float32), temperature)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
