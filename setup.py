"""video_ssl: self-supervised video representation learning (TF 2 / Keras 3)."""
from setuptools import find_packages, setup

setup(
    name="video_ssl",
    version="0.1.0",
    description="rho-MoCo/BYOL/SimCLR/SwAV, CoCLR and BraVe in TensorFlow 2 / Keras 3",
    packages=find_packages(include=["video_ssl", "video_ssl.*", "tfrecords_tools", "tfrecords_tools.*"])
    + ["video_ssl_configs", "video_ssl_configs.eval"],
    # The gin recipes ship as the data-only package `video_ssl_configs`, so that an
    # installed copy runs a recipe by name from any directory (the gin parsing module's
    # `resolve_gin_file` falls back to it).
    package_dir={"video_ssl_configs": "gin_configs"},
    package_data={"video_ssl_configs": ["*.gin"], "video_ssl_configs.eval": ["*.gin"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "gin-config>=0.5,<0.6",
        "librosa>=0.10,<0.12",
        "av>=12,<19",
        "opencv-contrib-python-headless>=4.9,<5",
        "numpy>=1.26,<3",
        "scikit-learn>=1.4,<2",
        "tqdm>=4.60,<5",
        "pillow>=10",
        "pyyaml>=5.4",  # the training config inside PySlowFast checkpoints
    ],
    extras_require={"test": [
        "pytest>=8", "scikit-video>=1.1.11", "iscc-samples>=0.6,<0.7",
        # Two test processes, whole files each (module fixtures built once): the suite
        # is single-core bound (TensorFlow tracing), so 2 cores halve its time.
        "pytest-xdist>=3.5,<4",
        # Reference implementations the checkpoint importers are checked against. torch
        # 2.14.1, a CUDA build (3 GB of NVIDIA libraries): PyPI's torchvision 0.28.0 for
        # the 2.13.0 CPU wheel links libtorch_cuda and fails at import ("operator
        # torchvision::nms does not exist").
        "torch==2.14.1", "torchvision==0.29.1", "pytorchvideo==0.1.5",
        "jax>=0.10,<0.11", "dm-haiku>=0.0.17,<0.1",
    ]},
)
