"""Building blocks shared by the backbones: padded convs, BatchNorm, widths.

Keras 'same' padding with stride 2 pads asymmetrically (0 before, 1 after); the
PyTorch references pad (k-1)//2 on both sides, so strided convs here pad explicitly.
"""
from __future__ import annotations

import dataclasses

import keras

# PySlowFast/CoCLR init: kaiming_normal(fan_out, relu).
HE_NORMAL = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


@dataclasses.dataclass(frozen=True)
class Norm:
    """BatchNorm settings. Keras momentum 0.9 == PyTorch momentum 0.1 (the papers');
    Keras' own defaults (0.99, 1e-3) differ from the references (0.9, 1e-5)."""
    momentum: float = 0.9
    epsilon: float = 1e-5
    synchronized: bool = False

    def __call__(self, x, name: str, zero_init: bool = False):
        return keras.layers.BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, synchronized=self.synchronized,
            gamma_initializer="zeros" if zero_init else "ones", name=name)(x)


def width(channels: int, multiplier: float, divisor: int = 1) -> int:
    """Channels scaled by the width multiplier, at least `divisor`, a multiple of it."""
    return max(divisor, int(round(channels * multiplier / divisor)) * divisor)


def _pads(kernel, strides, dims):
    kernel = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
    strides = (strides,) * dims if isinstance(strides, int) else tuple(strides)
    return kernel, strides, tuple(((k - 1) // 2, k // 2) if s == 1 else ((k - 1) // 2,) * 2
                                  for k, s in zip(kernel, strides))


def conv3d(x, filters: int, kernel, strides=1, *, name: str, use_bias: bool = False,
           groups: int = 1):
    """Conv3D with reference (symmetric) padding; 'same' when stride is 1."""
    kernel, strides, pads = _pads(kernel, strides, 3)
    if any(s > 1 for s in strides) and any(sum(p) for p in pads):
        x = keras.layers.ZeroPadding3D(pads, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv3D(filters, kernel, strides, padding=padding, use_bias=use_bias,
                               groups=groups, kernel_initializer=HE_NORMAL, name=name)(x)


def conv2d(x, filters: int, kernel, strides=1, *, name: str, use_bias: bool = False):
    """Conv2D with reference (symmetric) padding; 'same' when stride is 1."""
    kernel, strides, pads = _pads(kernel, strides, 2)
    if any(s > 1 for s in strides) and any(sum(p) for p in pads):
        x = keras.layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(filters, kernel, strides, padding=padding, use_bias=use_bias,
                               kernel_initializer=HE_NORMAL, name=name)(x)


def max_pool3d(x, pool, strides, *, name: str):
    """MaxPool3D padded symmetrically like PyTorch's MaxPool3d(padding=(k-1)//2).

    Zero padding equals PyTorch's -inf padding because every pool here follows a ReLU.
    """
    pool, strides, pads = _pads(pool, strides, 3)
    if any(sum(p) for p in pads):
        x = keras.layers.ZeroPadding3D(pads, name=f"{name}_pad")(x)
    return keras.layers.MaxPool3D(pool, strides, padding="valid", name=name)(x)
