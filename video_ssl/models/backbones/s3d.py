"""S3D and S3D-G (Xie et al. 2018, "Rethinking Spatiotemporal Feature Learning"),
the encoder of CoCLR (Han et al. 2020).

Layout as in CoCLR's `backbone/s3dg.py`: every 3-D conv, the stem included, is
separable (1×k×k spatial conv -> BN -> ReLU -> k×1×1 temporal conv -> BN -> ReLU, both
with the output width). Stem 1×7×7 stride (1,2,2) then 7×1×1 stride (2,1,1); pools
1×3×3/(1,2,2), 1×3×3/(1,2,2), 3×3×3/2, 2×2×2/2; Inception V1 widths. A 32×128² clip
gives a 4×4×4×1024 `mixed5c` map; the output is its global average (1024-d).

Trainable parameters (RGB, no classifier): S3D 7,910,048 (CoCLR: 7.91M); S3D-G
9,098,000 (Xie et al.: 9.1M). BatchNorm moving statistics are not counted.

Choices, documented differences from the references:
- BatchNorm epsilon 1e-5, momentum 0.9 (PyTorch defaults, as CoCLR trains with);
  the original TensorFlow S3D-G uses epsilon 1e-3 (pass `bn_epsilon=1e-3`).
- Convs use He (fan-out) init; CoCLR uses N(0, 0.01), the TF code truncated N(0, 0.01).
- Gating (S3D-G) is applied on the four branches of every Inception block as in
  CoCLR; the TF S3D-G code also gates the `conv2c` output (+37k parameters).

Flow: this project's flow clips are (dx, dy) in pixels (2 channels); CoCLR's flow
network reads a 3-channel image of them. `flow_input="coclr_image"` puts that image in
front of the stem (`CoCLRFlowImage`), so that CoCLR's flow weights apply unchanged.
"""
from __future__ import annotations

import keras
from keras import ops

from video_ssl.models.backbones.layers import (Norm, conv_bn, max_pool3d, video_input,
                                               width)

# Inception V1 widths per block: [branch0 1×1, branch1 1×1, branch1 3×3,
# branch2 1×1, branch2 3×3, branch3 pool-1×1] (Szegedy et al. 2015, Table 1).
INCEPTION_WIDTHS = {
    "mixed3b": (64, 96, 128, 16, 32, 32),
    "mixed3c": (128, 128, 192, 32, 96, 64),
    "mixed4b": (192, 96, 208, 16, 48, 64),
    "mixed4c": (160, 112, 224, 24, 64, 64),
    "mixed4d": (128, 128, 256, 24, 64, 64),
    "mixed4e": (112, 144, 288, 32, 64, 64),
    "mixed4f": (256, 160, 320, 32, 128, 128),
    "mixed5b": (256, 160, 320, 32, 128, 128),
    "mixed5c": (384, 192, 384, 48, 128, 128),
}

# Max-pools (name, window, strides) that open stages 3, 4 and 5.
_POOLS_BEFORE = {
    "mixed3b": ("pool3a", (1, 3, 3), (1, 2, 2)),
    "mixed4b": ("pool4a", 3, 2),
    "mixed5b": ("pool5a", 2, 2),
}
_ENDPOINT_BLOCKS = ("mixed3c", "mixed4f", "mixed5c")
FLOW_INPUTS = ("pixels", "coclr_image")

# CoCLR's flow frames: TV-L1 (dx, dy) clipped to +-20 px and scaled to [0, 255], written
# by OpenCV as BGR (dx, dy, 128) (TengdaHan/MemDPC process_data/src/extract_ff.py:13-21,
# 53, 63-69, the script CoCLR's author extracted them with: TengdaHan/CoCLR#12), read as RGB,
# i.e. (128, dy, dx) (CoCLR dataset/lmdb_dataset.py:37-38, 311), scaled to [0, 1] and
# normalized with ImageNet's mean and std like its RGB frames (main_nce.py:207-209).
COCLR_FLOW_BOUND = 20.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="video_ssl")
class SelfGating(keras.layers.Layer):
    """S3D-G feature gating: `x * sigmoid(W · mean_{T,H,W}(x) + b)`, one gate per channel.

    W is initialized from a truncated N(0, 0.01) as in the TF S3D-G code, so gates
    start near 0.5.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            shape=(channels, channels), name="kernel",
            initializer=keras.initializers.TruncatedNormal(stddev=0.01))
        self.bias = self.add_weight(shape=(channels,), name="bias", initializer="zeros")

    def call(self, inputs):
        average = ops.mean(inputs, axis=(1, 2, 3))
        gates = ops.sigmoid(ops.matmul(average, self.kernel) + self.bias)
        return inputs * gates[:, None, None, None, :]


@keras.saving.register_keras_serializable(package="video_ssl")
class CoCLRFlowImage(keras.layers.Layer):
    """(..., 2) flow (dx, dy) in pixels -> (..., 3) the image CoCLR's flow network reads:
    (128 / 255, dy, dx), each flow channel clipped to +-20 px and mapped to [0, 1], then
    ImageNet-normalized.

    Exact for flow stored with bound 20 (the schema's default, CoCLR's): `data.flow`
    dequantizes an 8-bit value q to dx = q * 40 / 255 - 20, and (dx + 20) / 40 is
    CoCLR's q / 255. Neither dropping the constant channel nor folding these affine
    maps into the stem's kernel would be exact: the stem pads the normalized image with
    zeros, so their contribution differs within 3 pixels of the borders."""

    def call(self, flow):
        bound = COCLR_FLOW_BOUND
        scaled = (ops.clip(flow, -bound, bound) + bound) / (2.0 * bound)
        constant = ops.full_like(scaled[..., :1], 128.0 / 255.0)
        image = ops.concatenate([constant, scaled[..., 1:2], scaled[..., 0:1]], axis=-1)
        mean = ops.convert_to_tensor(IMAGENET_MEAN, image.dtype)
        std = ops.convert_to_tensor(IMAGENET_STD, image.dtype)
        return (image - mean) / std

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


def _separable_conv(x, filters: int, kernel: int, strides=(1, 1), *, norm: Norm, name: str):
    """1×k×k conv with the spatial stride, then k×1×1 conv with the temporal stride."""
    temporal_stride, spatial_stride = strides
    x = conv_bn(x, filters, (1, kernel, kernel), (1, spatial_stride, spatial_stride),
                norm=norm, name=f"{name}_spatial")
    return conv_bn(x, filters, (kernel, 1, 1), (temporal_stride, 1, 1),
                   norm=norm, name=f"{name}_temporal")


def _inception(x, widths, *, gating: bool, norm: Norm, name: str):
    b0_out, b1_mid, b1_out, b2_mid, b2_out, b3_out = widths
    b0 = conv_bn(x, b0_out, 1, norm=norm, name=f"{name}_b0")
    b1 = conv_bn(x, b1_mid, 1, norm=norm, name=f"{name}_b1a")
    b1 = _separable_conv(b1, b1_out, 3, norm=norm, name=f"{name}_b1b")
    b2 = conv_bn(x, b2_mid, 1, norm=norm, name=f"{name}_b2a")
    b2 = _separable_conv(b2, b2_out, 3, norm=norm, name=f"{name}_b2b")
    b3 = max_pool3d(x, 3, 1, name=f"{name}_b3_pool")
    b3 = conv_bn(b3, b3_out, 1, norm=norm, name=f"{name}_b3b")
    branches = [b0, b1, b2, b3]
    if gating:
        branches = [SelfGating(name=f"{name}_b{i}_gating")(b) for i, b in enumerate(branches)]
    return keras.layers.Concatenate(axis=-1, name=name)(branches)


def _build(*, gating: bool, width_multiplier: float, input_channels: int, bn_momentum: float,
           bn_epsilon: float, synchronized_bn: bool, return_endpoints: bool, input_shape,
           flow_input: str, name: str) -> keras.Model:
    if width_multiplier <= 0:
        raise ValueError(f"{name}: width_multiplier must be > 0, got {width_multiplier}")
    if flow_input not in FLOW_INPUTS:
        raise ValueError(f"{name}: flow_input {flow_input!r}; expected one of {FLOW_INPUTS}")
    norm = Norm(bn_momentum, bn_epsilon, synchronized_bn)
    inputs = video_input(input_shape, input_channels)
    endpoints = {}

    x = inputs
    if flow_input == "coclr_image" and input_channels == 2:
        x = CoCLRFlowImage(name="coclr_flow_image")(x)
    x = _separable_conv(x, width(64, width_multiplier), 7, strides=(2, 2), norm=norm,
                        name="conv1a")
    endpoints["conv1a"] = x
    x = max_pool3d(x, (1, 3, 3), (1, 2, 2), name="pool2a")
    x = conv_bn(x, width(64, width_multiplier), 1, norm=norm, name="conv2b")
    x = _separable_conv(x, width(192, width_multiplier), 3, norm=norm, name="conv2c")
    endpoints["conv2c"] = x
    for block, widths in INCEPTION_WIDTHS.items():
        if block in _POOLS_BEFORE:
            pool_name, pool, strides = _POOLS_BEFORE[block]
            x = max_pool3d(x, pool, strides, name=pool_name)
        x = _inception(x, [width(w, width_multiplier) for w in widths], gating=gating,
                       norm=norm, name=block)
        if block in _ENDPOINT_BLOCKS:
            endpoints[block] = x
    pooled = keras.layers.GlobalAveragePooling3D(name="pooled")(x)
    outputs = {**endpoints, "pooled": pooled} if return_endpoints else pooled
    return keras.Model(inputs, outputs, name=name)


def s3d(*, width_multiplier: float = 1.0, input_channels: int = 3, bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5, synchronized_bn: bool = False, return_endpoints: bool = False,
        input_shape=None, flow_input: str = "pixels") -> keras.Model:
    """S3D without gating (CoCLR's encoder): (B, T, H, W, C) -> (B, 1024 × width).

    Endpoints: conv1a (T/2, H/2), conv2c (T/2, H/4), mixed3c (T/2, H/8),
    mixed4f (T/4, H/16), mixed5c (T/8, H/32), pooled.
    flow_input: how flow clips (input_channels=2, (dx, dy) in pixels) reach the stem:
    "pixels" as they are, "coclr_image" as the image CoCLR's flow network reads
    (`CoCLRFlowImage`, a 3-channel stem). Other inputs are not affected, so one setting
    serves both streams of a CoCLR run (`QueueNCE.backbone_kwargs`).
    """
    return _build(gating=False, width_multiplier=width_multiplier,
                  input_channels=input_channels, bn_momentum=bn_momentum,
                  bn_epsilon=bn_epsilon, synchronized_bn=synchronized_bn,
                  return_endpoints=return_endpoints, input_shape=input_shape,
                  flow_input=flow_input, name="s3d")


def s3dg(*, width_multiplier: float = 1.0, input_channels: int = 3, bn_momentum: float = 0.9,
         bn_epsilon: float = 1e-5, synchronized_bn: bool = False,
         return_endpoints: bool = False, input_shape=None,
         flow_input: str = "pixels") -> keras.Model:
    """S3D-G: S3D with `SelfGating` on every Inception branch; same shapes as `s3d`."""
    return _build(gating=True, width_multiplier=width_multiplier,
                  input_channels=input_channels, bn_momentum=bn_momentum,
                  bn_epsilon=bn_epsilon, synchronized_bn=synchronized_bn,
                  return_endpoints=return_endpoints, input_shape=input_shape,
                  flow_input=flow_input, name="s3dg")
