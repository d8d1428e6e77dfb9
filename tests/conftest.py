"""Shared test set-up: quiet TensorFlow, 2 logical CPU devices, seeded randomness, an
empty gin config around every test, tiny shards. Helpers that are not fixtures are in
helpers.py (and tiny_methods.py); no test module imports another."""
import os
import sys

# The reference implementations' torch is a CUDA build whose Triton, loaded after
# TensorFlow, crashes the process (their LLVM symbols clash); CPU tests never need it,
# and torch treats an unimportable Triton as absent.
sys.modules.setdefault("triton", None)

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
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


@pytest.fixture(autouse=True)
def fresh_gin():
    """Every test starts and ends with an empty gin config (loading a training run parses
    its config into gin, which must start empty)."""
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def make_shards(tmp_path_factory):
    """Writes tiny videos to shards in a folder of their own and returns their paths:
    make_shards(split, labels, num_shards=1, **content), as helpers.write_shards."""
    from helpers import write_shards  # imports video_ssl: not before the devices are set
    def make(split, labels, num_shards=1, **content):
        return write_shards(tmp_path_factory.mktemp(split) / split, labels, num_shards,
                            **content)
    return make


@pytest.fixture(scope="session")
def shards(make_shards):
    """The training runs' input: 8 labeled videos (16 RGB frames of 32x32), video i of
    class i % 2 in shard i % 2 of 2; their glob pattern. Read-only. A module that needs
    other videos defines its own `shards` with make_shards."""
    from helpers import shard_pattern
    return shard_pattern(make_shards("train", [0, 1] * 4, 2, noise=True))
