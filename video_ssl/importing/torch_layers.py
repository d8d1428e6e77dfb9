"""PyTorch layers' tensors in Keras layout, for the importers of torch-format files.

`conv_kernel`, `batch_norm` and `linear` take one PyTorch layer's tensors from a file's
`SourceTensors` (checking their shapes, so a tensor of another shape fails naming its
source key) and return them as Keras weights; `KerasWeights` does the same for one
Keras model whose variable shapes give the expected ones. `tensors_in` lists the arrays
of a file's other entries (an optimizer's state), for the importers to drop.
"""
from __future__ import annotations

import keras
import numpy as np

from video_ssl.importing.weights import SourceTensors

# torch.nn.BatchNorm* tensor -> Keras BatchNormalization weight.
BATCH_NORM = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
              "running_var": "moving_variance"}
# Counts the batches a BatchNorm has seen; it only matters to momentum=None (a running
# average), which none of these models uses, and Keras has no counterpart.
BATCHES_TRACKED = "num_batches_tracked"
BATCHES_TRACKED_REASON = "BatchNorm batch counters (no Keras counterpart; unused with a " \
                         "fixed momentum)"


def is_tensor(value) -> bool:
    """Whether `torch_file.load` made `value` of a tensor (a 0-d one is a NumPy scalar)."""
    return isinstance(value, (np.ndarray, np.generic))


def tensors_in(value, prefix: str) -> dict[str, np.ndarray]:
    """The arrays in nested dicts and lists, named "<prefix>/<key>/...": an optimizer's
    state, say, under "optimizer/state/0/exp_avg"."""
    if is_tensor(value):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, (list, tuple)) else ())
    return {name: array for key, item in items
            for name, array in tensors_in(item, f"{prefix}/{key}").items()}


def conv_kernel(source: SourceTensors, key: str, shape: tuple) -> np.ndarray:
    """A Conv3d weight (out, in, t, h, w) of `shape` as a Keras kernel (t, h, w, in, out)."""
    return np.transpose(source.take(key, shape), (2, 3, 4, 1, 0))


def batch_norm(source: SourceTensors, module: str, layer: str, channels: int) -> dict:
    """BatchNorm `module`.weight/bias/running_mean/running_var as Keras `layer`'s weights."""
    return {f"{layer}/{ours}": source.take(f"{module}.{theirs}", (channels,))
            for theirs, ours in BATCH_NORM.items()}


def linear(source: SourceTensors, module: str, layer: str, fan_in: int, fan_out: int, *,
           bias: bool = True, pointwise_conv: bool = False) -> dict:
    """A Linear (weight (out, in)) as a Keras Dense `layer` (kernel (in, out)); with
    `pointwise_conv`, a 1x1x1 Conv3d (out, in, 1, 1, 1) applied to pooled features,
    which is the same map."""
    shape = (fan_out, fan_in, 1, 1, 1) if pointwise_conv else (fan_out, fan_in)
    kernel = source.take(f"{module}.weight", shape).reshape(fan_out, fan_in)
    weights = {f"{layer}/kernel": kernel.T}
    if bias:
        weights[f"{layer}/bias"] = source.take(f"{module}.bias", (fan_out,))
    return weights


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
        """Conv3d weight `key` -> Keras `layer`'s kernel."""
        path = f"{self.prefix}{layer}/kernel"
        shape = self.shapes[path]
        self.weights[path] = conv_kernel(self.source, key, (shape[-1], shape[-2], *shape[:-2]))

    def batch_norm(self, module: str, layer: str) -> None:
        """BatchNorm `module` -> Keras `layer`."""
        channels = self.shapes[f"{self.prefix}{layer}/gamma"][0]
        self.weights.update(batch_norm(self.source, module, f"{self.prefix}{layer}", channels))

    def dense(self, module: str, layer: str, *, pointwise_conv: bool = False) -> None:
        """Linear (or, with `pointwise_conv`, a 1x1x1 Conv3d on pooled features)
        `module` -> Keras Dense `layer`."""
        fan_in, fan_out = self.shapes[f"{self.prefix}{layer}/kernel"]
        self.weights.update(linear(self.source, module, f"{self.prefix}{layer}", fan_in, fan_out,
                                   pointwise_conv=pointwise_conv))
