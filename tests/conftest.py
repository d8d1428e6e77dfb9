"""Shared test set-up: quiet TensorFlow, 2 logical CPU devices, seeded randomness."""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# MirroredStrategy tests need two devices; logical devices must be configured before
# TensorFlow initializes its runtime, so this happens once, at import.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy per test session: a second one in the same process reuses
    the collective keys of the first and its all-gathers fail with shape mismatches."""
    return tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests (seconds to minutes each)")


@pytest.fixture(autouse=True)
def _seed():
    import keras
    keras.utils.set_random_seed(0)
    np.random.seed(0)
