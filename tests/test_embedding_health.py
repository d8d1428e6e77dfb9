"""The embedding health statistics on hand-computable cases, and the monitor's collapse
warning on an encoder whose outputs are constant."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from video_ssl.evaluation import embedding_health as health
from video_ssl.evaluation.knn import KNNMonitor


def test_identical_rows_have_no_spread_and_rank_one():
    x = np.tile([[3.0, -1.0, 2.0, 0.5]], (6, 1))
    assert health.embedding_std(x) == pytest.approx(0.0, abs=1e-12)
    assert health.effective_rank(x) == 1.0
    assert health.alignment(x, [0, 0, 1, 1, 2, 2]) == pytest.approx(0.0, abs=1e-12)
    assert health.uniformity(x) == pytest.approx(0.0, abs=1e-12)  # log mean exp(0)
    assert health.embedding_std(x) < health.collapse_threshold(4)


def test_orthonormal_rows():
    d = 8
    x = np.concatenate([np.eye(d), -np.eye(d)])  # centred already, 2d rows
    # Every dimension holds +1, -1 and 2d-2 zeros: std = sqrt(2 / 2d).
    assert health.embedding_std(x) == pytest.approx(np.sqrt(1 / d))
    assert health.effective_rank(x) == pytest.approx(d)
    # Scaling rows changes neither (normalized first / singular values scale together).
    assert health.embedding_std(5 * x) == pytest.approx(np.sqrt(1 / d))
    assert health.effective_rank(5 * x) == pytest.approx(d)


def test_rank_of_unequal_directions():
    # Centred singular values 2 and 1 (rows +-2 e1, +-1 e2 after centring): p = (2/3, 1/3).
    x = np.array([[2.0, 0, 0], [-2.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]]) * np.sqrt(0.5)
    p = np.array([2, 1]) / 3
    assert health.effective_rank(x) == pytest.approx(np.exp(-np.sum(p * np.log(p))))


def test_alignment_and_uniformity_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Pairs: (0,1) distance^2 2, (0,2) 4, (1,2) 2.
    assert health.alignment(x, [0, 0, 1]) == pytest.approx(2.0)  # only (0, 1)
    assert health.alignment(x, [0, 1, 0]) == pytest.approx(4.0)
    assert health.alignment(x, [0, 1, 2]) is None  # no positive pair
    expected = np.log(np.mean(np.exp(-2 * np.array([2.0, 4.0, 2.0]))))
    assert health.uniformity(x) == pytest.approx(expected)
    assert health.uniformity(x[:1]) is None
    assert set(health.health(x, [0, 1, 2])) == {"embedding_std", "effective_rank",
                                                 "uniformity"}


def test_rejects_what_is_not_a_matrix():
    with pytest.raises(ValueError, match=r"expected a \(rows, dims\) matrix"):
        health.embedding_std(np.zeros((0, 4)))


def _split(n):
    labels = np.arange(n) % 2
    rgb = np.random.normal(0, 1, (n, 1, 2, 4, 4, 3)) + labels[:, None, None, None, None, None]
    return lambda: tf.data.Dataset.from_tensor_slices(
        {"rgb": rgb.astype(np.float32), "label": labels.astype(np.int32)}).batch(4)


def _monitor(backbone, **kwargs):
    model = keras.Model()
    model.backbone = backbone
    monitor = KNNMonitor(_split(10), _split(6), k=3, **kwargs)
    monitor.set_model(model)
    monitor.set_params({"epochs": 1})
    return monitor


def test_monitor_warns_when_an_encoder_collapses(capsys):
    # A collapsing encoder: its output ignores the clip (a constant plus a zero-weighted input).
    inputs = keras.Input((2, 4, 4, 3))
    pooled = keras.layers.Dense(16, kernel_initializer="zeros", bias_initializer="ones")(
        keras.layers.GlobalAveragePooling3D()(inputs))
    monitor = _monitor(keras.Model(inputs, pooled), encoder_name="flow", suffix="_flow")
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert logs["embedding_std_flow"] == pytest.approx(0.0, abs=1e-7)
    assert logs["effective_rank_flow"] == 1.0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert len(warnings) == 1
    assert "encoder 'flow' has collapsed at epoch 1" in warnings[0]
    assert "< 0.01/sqrt(16)" in warnings[0]


def test_monitor_logs_health_beside_knn_without_warning_when_spread(capsys):
    backbone = keras.Sequential([keras.Input((2, 4, 4, 3)), keras.layers.Flatten()])
    monitor = _monitor(backbone)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert set(logs) == {"knn_top1", "embedding_std", "effective_rank", "alignment",
                         "uniformity"}
    assert logs["embedding_std"] > health.collapse_threshold(96)
    assert 1.0 < logs["effective_rank"] <= 9.0  # 10 bank rows, centred: rank <= 9
    assert 0.0 < logs["alignment"] <= 4.0 and logs["uniformity"] < 0.0
    assert "WARNING" not in capsys.readouterr().out
