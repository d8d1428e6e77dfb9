"""R(2+1)D-18 (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions").

R3D-18 with every t×d×d conv factorized into a 1×d×d spatial conv to M channels,
BN, ReLU, and a t×1×1 temporal conv. Layout as in the paper and torchvision's
`r2plus1d_18` (which the ρ-paper compares against): stem 1×7×7 stride (1,2,2) to 45
channels then 3×1×1 to 64 (no max-pool); basic blocks [2, 2, 2, 2] of widths
64/128/256/512; res3-res5 open with stride 2 in time and space (spatial conv strided
in space, temporal conv in time); 1×1×1 strided projection shortcuts; 512-d output.
A 16×112² clip gives a 2×7×7×512 `res5` map.

Mid-channel rule (`mid_channels_rule`):
- "paper" (default), Tran et al. §3.5: each (2+1)D conv from N_in to N_out channels gets
  M = floor(t·d²·N_in·N_out / (d²·N_in + t·N_out)), matching the parameters of the
  t×d×d conv it replaces. 33,165,639 trainable parameters (RGB, no classifier);
  with a 400-way fc 33.37M, cf. the paper's 33.3M (Table 2).
- "torchvision": the M of a block's first conv is reused for its second conv; this
  differs only in the first block of res3-res5. 31,300,125 trainable parameters, equal
  to torchvision's 31,505,325 less its 400-way fc (205,200).
The stem's 45 mid channels are the official (VMZ, torchvision) value in both rules; the
paper gives no stem width.
"""
from __future__ import annotations

import keras

from video_ssl.models.backbones.layers import (Norm, conv3d, conv_bn, video_input,
                                               width)

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)
STEM_MID_CHANNELS = 45
_MID_CHANNELS_RULES = ("paper", "torchvision")


def mid_channels(in_channels: int, out_channels: int, temporal: int = 3, spatial: int = 3) -> int:
    """Tran et al.'s M: width that gives a (2+1)D conv the parameters of the 3-D conv."""
    return (temporal * spatial ** 2 * in_channels * out_channels) // (
        spatial ** 2 * in_channels + temporal * out_channels)


def _conv2plus1d(x, filters: int, mid: int, stride: int, *, norm: Norm, name: str):
    """1×3×3 conv (spatial stride) -> BN -> ReLU -> 3×1×1 conv (temporal stride).

    The caller normalizes the output (the block's BN)."""
    x = conv_bn(x, mid, (1, 3, 3), (1, stride, stride), norm=norm, name=f"{name}_spatial")
    return conv3d(x, filters, (3, 1, 1), (stride, 1, 1), name=f"{name}_temporal")


def _basic_block(x, filters: int, stride: int, mids, *, norm: Norm, name: str):
    in_channels = x.shape[-1]
    shortcut = x
    if stride != 1 or in_channels != filters:
        shortcut = conv_bn(x, filters, 1, stride, norm=norm, name=f"{name}_shortcut",
                           relu=False)
    y = _conv2plus1d(x, filters, mids[0], stride, norm=norm, name=f"{name}_conv1")
    y = keras.layers.ReLU(name=f"{name}_conv1_relu")(norm(y, name=f"{name}_conv1_bn"))
    y = _conv2plus1d(y, filters, mids[1], 1, norm=norm, name=f"{name}_conv2")
    y = norm(y, name=f"{name}_conv2_bn")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def r2plus1d_18(*, width_multiplier: float = 1.0, input_channels: int = 3,
                bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                synchronized_bn: bool = False, return_endpoints: bool = False,
                input_shape=None, mid_channels_rule: str = "paper") -> keras.Model:
    """R(2+1)D-18: (B, T, H, W, C) -> (B, 512 × width).

    Endpoints: conv1 (T, H/2), res2 (T, H/4), res3 (T/2, H/8), res4 (T/4, H/16),
    res5 (T/8, H/32), pooled. `mid_channels_rule`: "paper" or "torchvision" (see module).
    """
    if mid_channels_rule not in _MID_CHANNELS_RULES:
        raise ValueError(f"r2plus1d_18: mid_channels_rule {mid_channels_rule!r}; expected one "
                         f"of {_MID_CHANNELS_RULES}")
    if width_multiplier <= 0:
        raise ValueError(f"r2plus1d_18: width_multiplier must be > 0, got {width_multiplier}")
    norm = Norm(bn_momentum, bn_epsilon, synchronized_bn)
    inputs = video_input(input_shape, input_channels)

    x = conv_bn(inputs, width(STEM_MID_CHANNELS, width_multiplier), (1, 7, 7), (1, 2, 2),
                norm=norm, name="conv1_spatial")
    x = conv_bn(x, width(STAGE_WIDTHS[0], width_multiplier), (3, 1, 1), norm=norm,
                name="conv1_temporal")
    endpoints = {"conv1": x}
    for stage, (filters, blocks) in enumerate(zip(STAGE_WIDTHS, BLOCKS_PER_STAGE), start=2):
        filters = width(filters, width_multiplier)
        for block in range(blocks):
            in_channels = x.shape[-1]
            first = mid_channels(in_channels, filters)
            second = (first if mid_channels_rule == "torchvision"
                      else mid_channels(filters, filters))
            stride = 2 if block == 0 and stage > 2 else 1
            x = _basic_block(x, filters, stride, (first, second), norm=norm,
                             name=f"res{stage}_{block}")
        endpoints[f"res{stage}"] = x
    pooled = keras.layers.GlobalAveragePooling3D(name="pooled")(x)
    outputs = {**endpoints, "pooled": pooled} if return_endpoints else pooled
    return keras.Model(inputs, outputs, name="r2plus1d_18")
