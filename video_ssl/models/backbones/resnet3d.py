"""Slow-only 3-D ResNets: the Slow pathway of SlowFast (Feichtenhofer et al. 2019),
the encoder of Feichtenhofer et al. 2021 (ρ-paper, Table 17; PySlowFast `SLOW_8x8`).

Stem conv1 1×7×7 stride (1,2,2) -> BN -> ReLU -> max-pool 1×3×3 stride (1,2,2); four
stages res2..res5 with spatial stride 1, 2, 2, 2 (on the 3×3 conv of the first block) and
no temporal downsampling; res2-res3 blocks have temporal kernel 1 everywhere, every
res4-res5 block has a 3×1×1 first conv (PySlowFast "inflates" all blocks of a stage);
global average pool. An 8×224² clip gives an 8×7×7×2048 res5 map (R-50/R-101).

Trainable parameters (no classifier, RGB; BN moving statistics not counted):
- `slow_r50`: 31,634,496 (paper 31.6M); 41.7 G multiply-adds at 8×224² (`count_flops`).
- `slow_r101`: 59,539,520 (no paper figure given).
- `slow_r18`: 20,023,872, 512-d output. The ρ-paper reports R-18 results without
  spelling out its blocks; this is the standard ResNet-18 layout in PySlowFast terms
  (`basic_transform`: two 3×3 convs per block, stages [2, 2, 2, 2], widths 64..512),
  with the Slow temporal pattern (3×3×3 first conv in every res4-res5 block).

Choices: BN momentum 0.9 / epsilon 1e-5 (PyTorch 0.1 / 1e-5); He fan-out init; the last
BN of each residual branch starts at gamma 0 (`zero_init_residual`, PySlowFast's
`ZERO_INIT_FINAL_BN: True` in its SlowFast/Slow configs; the paper does not say).
`r3d_50` is CVRL's R3D-50 (TF Model Garden), not `slow_r50`: the same blocks and
temporal kernels, but a 5×7×7 stem conv of temporal stride 2, TensorFlow's 'same'
padding (asymmetric where strided) and BN epsilon 1e-3 (see `r3d_50`).
"""
from __future__ import annotations

import keras

from video_ssl.models.backbones.layers import (Norm, check_padding, conv3d, conv_bn, max_pool3d,
                                              video_input, width)

STAGES = ("res2", "res3", "res4", "res5")
SPATIAL_STRIDES = (1, 2, 2, 2)
TEMPORAL_KERNELS = (1, 1, 3, 3)
BASE_WIDTHS = (64, 128, 256, 512)  # bottleneck inner widths; outputs are 4x for R-50/101
DEPTHS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bottleneck(x, inner: int, out: int, temporal_kernel: int, stride: int, *,
                norm: Norm, zero_init: bool, padding: str, name: str):
    """PySlowFast BottleneckTransform (stride on the 3×3 conv) + projection shortcut."""
    shortcut = x
    if x.shape[-1] != out or stride != 1:
        shortcut = conv_bn(x, out, 1, (1, stride, stride), norm=norm, name=f"{name}_proj",
                           relu=False)
    y = conv_bn(x, inner, (temporal_kernel, 1, 1), norm=norm, name=f"{name}_a")
    y = conv_bn(y, inner, (1, 3, 3), (1, stride, stride), norm=norm, name=f"{name}_b",
                padding=padding)
    y = norm(conv3d(y, out, 1, name=f"{name}_c"), name=f"{name}_c_bn", zero_init=zero_init)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def _basic(x, inner: int, out: int, temporal_kernel: int, stride: int, *,
           norm: Norm, zero_init: bool, padding: str, name: str):
    """PySlowFast BasicTransform: [t×3×3 strided, 1×3×3] + projection shortcut."""
    del inner  # basic blocks have no bottleneck width
    shortcut = x
    if x.shape[-1] != out or stride != 1:
        shortcut = conv_bn(x, out, 1, (1, stride, stride), norm=norm, name=f"{name}_proj",
                           relu=False)
    y = conv_bn(x, out, (temporal_kernel, 3, 3), (1, stride, stride), norm=norm,
                name=f"{name}_a", padding=padding)
    y = norm(conv3d(y, out, (1, 3, 3), name=f"{name}_b"), name=f"{name}_b_bn",
             zero_init=zero_init)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def slow_resnet(depth: int, *, width_multiplier: float = 1.0, input_channels: int = 3,
                bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                synchronized_bn: bool = False, return_endpoints: bool = False,
                input_shape=None, zero_init_residual: bool = True,
                stem_temporal_kernel: int = 1, stem_temporal_stride: int = 1,
                padding: str = "symmetric", name: str | None = None) -> keras.Model:
    """Slow-only ResNet of `depth` 18, 50 or 101; endpoints conv1, res2..res5, pooled.

    `stem_temporal_kernel` / `stem_temporal_stride`: conv1's temporal kernel and stride
    (1 and 1: the Slow pathway's 1×7×7/(1,2,2)). `padding`: "symmetric" (the PyTorch
    references) or "same" (Keras' own, asymmetric where strided: TF references).
    """
    if depth not in DEPTHS:
        raise ValueError(f"slow_resnet depth {depth}: expected one of {sorted(DEPTHS)}")
    check_padding(padding)
    norm = Norm(bn_momentum, bn_epsilon, synchronized_bn)
    block, expansion = (_basic, 1) if depth == 18 else (_bottleneck, 4)

    inputs = video_input(input_shape, input_channels)
    x = conv_bn(inputs, width(64, width_multiplier), (stem_temporal_kernel, 7, 7),
                (stem_temporal_stride, 2, 2), norm=norm, name="conv1", padding=padding)
    endpoints = {"conv1": x}
    x = max_pool3d(x, (1, 3, 3), (1, 2, 2), name="pool1", padding=padding)
    for stage, blocks, base, stride, kernel in zip(STAGES, DEPTHS[depth], BASE_WIDTHS,
                                                   SPATIAL_STRIDES, TEMPORAL_KERNELS):
        inner = width(base, width_multiplier)
        for index in range(blocks):
            x = block(x, inner, inner * expansion, kernel, stride if index == 0 else 1,
                      norm=norm, zero_init=zero_init_residual, padding=padding,
                      name=f"{stage}_{index}")
        endpoints[stage] = x
    pooled = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    outputs = {**endpoints, "pooled": pooled} if return_endpoints else pooled
    return keras.Model(inputs, outputs, name=name or f"slow_r{depth}")


def slow_r18(**kwargs) -> keras.Model:
    """Slow R-18 (basic blocks [2, 2, 2, 2]); pooled 512-d. kwargs as `slow_resnet`."""
    return slow_resnet(18, **kwargs)


def slow_r50(**kwargs) -> keras.Model:
    """Slow R-50 (bottlenecks [3, 4, 6, 3]); pooled 2048-d. kwargs as `slow_resnet`."""
    return slow_resnet(50, **kwargs)


def slow_r101(**kwargs) -> keras.Model:
    """Slow R-101 (bottlenecks [3, 4, 23, 3]); pooled 2048-d. kwargs as `slow_resnet`."""
    return slow_resnet(101, **kwargs)


def r3d_50(**kwargs) -> keras.Model:
    """CVRL's R3D-50 (Qian et al. 2021) as TF Model Garden builds it: `slow_r50` with a
    5×7×7 conv1 of temporal stride 2 (16 frames give an 8-frame res5 map), Keras 'same'
    padding, BatchNorm momentum 0.99 / epsilon 1e-3 and no zero-init residual BN
    (tf-models-official 2.20: official/vision/modeling/backbones/resnet_3d.py:163-231,
    layers/nn_blocks_3d.py:140-283, BN settings vision/configs/common.py:154-159; the
    temporal kernels and strides of projects/video_ssl/configs/experiments/
    cvrl_pretrain_k600_200ep.yaml are slow_r50's). 31,672,128 trainable parameters (the
    CVRL README's 31.7M). kwargs as `slow_resnet`, over these."""
    options = dict(stem_temporal_kernel=5, stem_temporal_stride=2, padding="same",
                   bn_momentum=0.99, bn_epsilon=1e-3, zero_init_residual=False, name="r3d_50")
    return slow_resnet(50, **{**options, **kwargs})
