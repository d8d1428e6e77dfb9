"""Self-supervised video representation learning in TensorFlow 2 / Keras 3."""
import os

# oneDNN kernels are off by default on some CPUs and Conv3D is ~2.5x slower without
# them (see REFERENCE_NOTES); the variable only works if set before TensorFlow loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
