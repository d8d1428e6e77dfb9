"""Weighted kNN classifier against a brute-force NumPy computation, and the monitor."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from video_ssl.evaluation.knn import KNNMonitor, knn_accuracy, knn_predict


def brute_force_knn(bank, bank_labels, queries, k, temperature, num_classes):
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    predictions = []
    for q in queries:
        q = q / np.linalg.norm(q)
        sims = np.array([float(q @ b) for b in bank])
        neighbours = np.argsort(-sims, kind="stable")[:k]
        scores = np.zeros(num_classes)
        for i in neighbours:
            scores[bank_labels[i]] += np.exp(sims[i] / temperature)
        predictions.append(int(np.argmax(scores)))
    return np.array(predictions)


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 0.5), (200, 0.07)])
def test_weighted_vote_matches_brute_force(k, temperature):
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(60, 8)).astype(np.float32) * rng.uniform(0.5, 3, size=(60, 1))
    labels = rng.integers(0, 4, size=60)
    queries = rng.normal(size=(25, 8)).astype(np.float32)
    expected = brute_force_knn(bank, labels, queries, min(k, 60), temperature, 4)
    got = knn_predict(bank, labels, queries, k=k, temperature=temperature, num_classes=4,
                      chunk_size=7)
    np.testing.assert_array_equal(got, expected)


def test_weights_decide_against_majority():
    # Two far neighbours of class 1 outvoted by one very close neighbour of class 0
    # only when the temperature makes similarity matter.
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]], np.float32)
    labels = np.array([0, 1, 1])
    query = np.array([[1.0, 0.05]], np.float32)
    assert knn_predict(bank, labels, query, k=3, temperature=0.05)[0] == 0
    assert knn_predict(bank, labels, query, k=3, temperature=100.0)[0] == 1


def test_accuracy_and_errors():
    bank = np.eye(3, dtype=np.float32)
    assert knn_accuracy(bank, [0, 1, 2], bank * 2, [0, 1, 2], k=1) == 1.0
    assert knn_accuracy(bank, [0, 1, 2], bank, [1, 1, 1], k=1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="dimension"):
        knn_predict(bank, [0, 1, 2], np.ones((1, 4), np.float32))


def test_monitor_logs_accuracy_of_backbone_features():
    # Features that separate two classes by the clip's mean intensity.
    backbone = keras.Sequential([keras.Input((2, 4, 4, 3)), keras.layers.GlobalAveragePooling3D()])
    model = keras.Model()
    model.backbone = backbone

    def split(n):
        labels = np.arange(n) % 2
        rgb = np.where(labels[:, None, None, None, None, None] == 0, -1.0, 1.0)
        rgb = rgb * np.ones((n, 1, 2, 4, 4, 3)) + np.random.normal(0, 0.1, (n, 1, 2, 4, 4, 3))
        return lambda: tf.data.Dataset.from_tensor_slices(
            {"rgb": rgb.astype(np.float32), "label": labels.astype(np.int32)}).batch(4)

    monitor = KNNMonitor(split(10), split(6), every_n_epochs=2, k=3)
    monitor.set_model(model)
    monitor.set_params({"epochs": 5})
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert "knn_top1" not in logs
    monitor.on_epoch_end(1, logs)
    # The pooled feature of class 0 is (-1,-1,-1)-ish, class 1 (1,1,1)-ish: separable.
    assert logs["knn_top1"] == 1.0
    logs = {}
    monitor.on_epoch_end(2, logs)
    assert "knn_top1" not in logs
    monitor.on_epoch_end(4, logs)  # the last epoch
    assert logs["knn_top1"] == 1.0
