"""Building blocks shared by the backbones: padded convs, BatchNorm, widths.

Keras 'same' padding with stride 2 pads asymmetrically (0 before, 1 after); the
PyTorch references pad (k-1)//2 on both sides, so strided convs here pad explicitly
(padding "symmetric", the default). Networks from TensorFlow references (TF Model
Garden) take padding "same": Keras' own, asymmetric where strided.
"""
from __future__ import annotations

import dataclasses

import keras


def he_normal() -> keras.initializers.Initializer:
    """PySlowFast/CoCLR init: kaiming_normal(fan_out, relu). A new initializer per
    layer: a Keras initializer draws its seed once, when made, so one shared instance
    gave every kernel of a shape the same values, and every model a process built
    after the first the same start whatever `keras.utils.set_random_seed` said."""
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


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


PADDINGS = ("symmetric", "same")


def check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding {padding!r}: expected one of {list(PADDINGS)}")
    return padding


def _padded_conv(x, dims: int, filters: int, kernel, strides, *, name: str,
                 padding: str = "symmetric", **kwargs):
    """Conv{dims}D padded symmetrically in front when strided (padding "symmetric"),
    else Keras 'same'."""
    conv = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[dims]
    pad = {2: keras.layers.ZeroPadding2D, 3: keras.layers.ZeroPadding3D}[dims]
    kernel, strides, pads = _pads(kernel, strides, dims)
    keras_padding = "same"
    if check_padding(padding) == "symmetric" and any(s > 1 for s in strides) and any(
            sum(p) for p in pads):
        x = pad(pads, name=f"{name}_pad")(x)
        keras_padding = "valid"
    return conv(filters, kernel, strides, padding=keras_padding, kernel_initializer=he_normal(),
                name=name, **kwargs)(x)


def conv3d(x, filters: int, kernel, strides=1, *, name: str, use_bias: bool = False,
           groups: int = 1, padding: str = "symmetric"):
    """Conv3D with reference (symmetric) padding, or Keras 'same' (see `_padded_conv`)."""
    return _padded_conv(x, 3, filters, kernel, strides, name=name, use_bias=use_bias,
                        groups=groups, padding=padding)


def conv2d(x, filters: int, kernel, strides=1, *, name: str, use_bias: bool = False):
    """Conv2D with reference (symmetric) padding; 'same' when stride is 1."""
    return _padded_conv(x, 2, filters, kernel, strides, name=name, use_bias=use_bias)


def max_pool3d(x, pool, strides, *, name: str, padding: str = "symmetric"):
    """MaxPool3D padded symmetrically like PyTorch's MaxPool3d(padding=(k-1)//2), or
    with Keras 'same' (padding "same").

    Zero padding equals PyTorch's -inf padding because every pool here follows a ReLU.
    """
    if check_padding(padding) == "same":
        return keras.layers.MaxPool3D(pool, strides, padding="same", name=name)(x)
    pool, strides, pads = _pads(pool, strides, 3)
    if any(sum(p) for p in pads):
        x = keras.layers.ZeroPadding3D(pads, name=f"{name}_pad")(x)
    return keras.layers.MaxPool3D(pool, strides, padding="valid", name=name)(x)


def conv_bn(x, filters: int, kernel, strides=1, *, norm: Norm, name: str, relu: bool = True,
            padding: str = "symmetric"):
    """`conv3d` -> BatchNorm (`{name}_bn`) -> optional ReLU (`{name}_relu`)."""
    x = norm(conv3d(x, filters, kernel, strides, name=name, padding=padding), name=f"{name}_bn")
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def video_input(input_shape, input_channels: int, *, name: str = "video"):
    """`keras.Input` for (T, H, W, C) clips; `input_shape` defaults to (None, None, None, C)."""
    shape = tuple(input_shape) if input_shape is not None else (None, None, None, input_channels)
    if len(shape) != 4 or shape[-1] != input_channels:
        raise ValueError(f"input_shape {shape}: expected (T, H, W, {input_channels}) "
                         f"matching input_channels={input_channels}")
    return keras.Input(shape=shape, name=name)


def preact_bottleneck2d(x, channels: int, stride: int, *, norm: Norm, name: str,
                        shift=None):
    """ResNet v2 bottleneck (He et al. 2016, "Identity Mappings") as in BraVe's Haiku code.

    BN -> ReLU pre-activation feeds both a 1×1 projection shortcut (only when the shape
    changes) and the branch 1×1 -> BN-ReLU -> 3×3 (strided) -> BN-ReLU -> 1×1 with
    `channels // 4` inner width. 'same' padding, as the TensorFlow/Haiku reference pads.
    `shift`, if given, maps the pre-activation before the branch's first conv (TSM).
    """
    preact = keras.layers.ReLU(name=f"{name}_preact_relu")(norm(x, name=f"{name}_preact_bn"))
    shortcut = x
    if x.shape[-1] != channels or stride != 1:
        shortcut = conv2d(preact, channels, 1, stride, name=f"{name}_proj")
    y = shift(preact) if shift is not None else preact
    y = conv2d(y, channels // 4, 1, name=f"{name}_a")
    y = keras.layers.ReLU(name=f"{name}_a_relu")(norm(y, name=f"{name}_a_bn"))
    y = keras.layers.Conv2D(channels // 4, 3, stride, padding="same", use_bias=False,
                            kernel_initializer=he_normal(), name=f"{name}_b")(y)
    y = keras.layers.ReLU(name=f"{name}_b_relu")(norm(y, name=f"{name}_b_bn"))
    y = conv2d(y, channels, 1, name=f"{name}_c")
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def resnet50_v2_2d(x, *, width_multiplier: float, norm: Norm, make_shift=None) -> dict:
    """ResNet-50 v2 trunk of BraVe's TSM and audio backbones, on (N, H, W, C) images.

    Stem 7×7/2 conv (no BN: v2 normalizes inside the blocks) -> 3×3/2 max-pool ('same',
    as the reference) -> bottleneck stages [3, 4, 6, 3] of width 256..2048 × multiplier,
    strides 1, 2, 2, 2 -> final BN -> ReLU. Returns the maps "conv1", "res2".."res5"
    (res5 after the final BN-ReLU). `make_shift(block_name)`, if given, builds each
    block's `shift` (see `preact_bottleneck2d`).
    """
    x = keras.layers.Conv2D(width(64, width_multiplier), 7, 2, padding="same", use_bias=False,
                            kernel_initializer=he_normal(), name="conv1")(x)
    endpoints = {"conv1": x}
    x = keras.layers.MaxPool2D(3, 2, padding="same", name="pool1")(x)
    for stage, (blocks, channels, stride) in enumerate(
            zip((3, 4, 6, 3), (256, 512, 1024, 2048), (1, 2, 2, 2)), start=2):
        for index in range(blocks):
            name = f"res{stage}_{index}"
            x = preact_bottleneck2d(
                x, width(channels, width_multiplier, divisor=4), stride if index == 0 else 1,
                norm=norm, name=name, shift=make_shift(name) if make_shift else None)
        endpoints[f"res{stage}"] = x
    x = norm(x, name="final_bn")
    endpoints["res5"] = keras.layers.ReLU(name="final_relu")(x)
    return endpoints
