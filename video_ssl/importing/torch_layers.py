"""PyTorch layers' tensors in Keras layout, for the importers of torch-format files.

`KerasWeights` collects one Keras model's weights from a file's `SourceTensors`: each
call takes the tensors of one PyTorch layer and checks their shapes against the Keras
variables they fill, so a tensor of another shape fails naming its source key.
"""
from __future__ import annotations

import keras
import numpy as np

from video_ssl.importing.weights import SourceTensors

# torch.nn.BatchNorm* tensor -> Keras BatchNormalization weight.
BATCH_NORM = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
              ("running_var", "moving_variance"))
# Counts the batches a BatchNorm has seen; it only matters to momentum=None (a running
# average), which none of these models uses, and Keras has no counterpart.
BATCHES_TRACKED = "num_batches_tracked"
BATCHES_TRACKED_REASON = "BatchNorm batch counters (no Keras counterpart; unused with a " \
                         "fixed momentum)"


def is_tensor(value) -> bool:
    """Whether `torch_file.load` made `value` of a tensor (a 0-d one is a NumPy scalar)."""
    return isinstance(value, (np.ndarray, np.generic))


def keras_shapes(model: keras.Model) -> dict[str, tuple]:
    """{Keras variable path: shape} of `model`'s weights."""
    return {v.path: tuple(v.shape) for v in model.weights}


class KerasWeights:
    """The Keras weights of one model (variable paths and shapes `shapes`, as
    `keras_shapes` gives them) taken from `source`; `weights` is what `assign` takes.
    `prefix` is put before every Keras path asked for (e.g. "projector/" for a head's
    layers)."""

    def __init__(self, source: SourceTensors, shapes: dict[str, tuple], prefix: str = ""):
        self.source, self.shapes, self.prefix = source, shapes, prefix
        self.weights: dict[str, np.ndarray] = {}

    def conv(self, key: str, layer: str) -> None:
        """Conv3d weight (out, in, t, h, w) -> Keras kernel (t, h, w, in, out)."""
        path = f"{self.prefix}{layer}/kernel"
        shape = self.shapes[path]
        kernel = self.source.take(key, (shape[-1], shape[-2], *shape[:-2]))
        self.weights[path] = np.transpose(kernel, (2, 3, 4, 1, 0))

    def batch_norm(self, module: str, layer: str) -> None:
        """BatchNorm tensors `module`.weight/bias/running_mean/running_var -> `layer`."""
        for torch_name, keras_name in BATCH_NORM:
            path = f"{self.prefix}{layer}/{keras_name}"
            self.weights[path] = self.source.take(f"{module}.{torch_name}", self.shapes[path])

    def dense(self, module: str, layer: str, *, pointwise_conv: bool = False) -> None:
        """Linear (out, in) + bias -> Dense kernel (in, out) + bias; with
        `pointwise_conv`, a 1x1x1 Conv3d (out, in, 1, 1, 1) applied to pooled features,
        which is the same map."""
        path = f"{self.prefix}{layer}"
        fan_in, fan_out = self.shapes[f"{path}/kernel"]
        shape = (fan_out, fan_in, 1, 1, 1) if pointwise_conv else (fan_out, fan_in)
        kernel = self.source.take(f"{module}.weight", shape)
        self.weights[f"{path}/kernel"] = kernel.reshape(fan_out, fan_in).T
        self.weights[f"{path}/bias"] = self.source.take(f"{module}.bias", (fan_out,))
