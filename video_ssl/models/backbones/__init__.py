"""Backbone registry: `build_backbone(name, **kwargs)` (contract).

Every builder returns a functional `keras.Model` from `(B, T, H, W, C)` float32
(audio: `(B, frames, mel_bins, 1)`) to pooled features `(B, D)`. With
`return_endpoints=True` the model instead outputs a dict of its stage feature maps
plus `"pooled"`, for dense use. Modules are imported on first use so that building
one backbone does not pay for importing all of them.
"""
from __future__ import annotations

import importlib

import keras

_BUILDERS = {
    "slow_r18": "resnet3d:slow_r18",
    "slow_r50": "resnet3d:slow_r50",
    "slow_r101": "resnet3d:slow_r101",
    "r3d_50": "resnet3d:r3d_50",
    "r2plus1d_18": "r2plus1d:r2plus1d_18",
    "s3d": "s3d:s3d",
    "s3dg": "s3d:s3dg",
    "tsm_r50": "tsm:tsm_r50",
    "tsm_r50x2": "tsm:tsm_r50x2",
    "audio_resnet50": "audio_resnet:audio_resnet50",
}


def available_backbones() -> list[str]:
    return sorted(_BUILDERS)


def build_backbone(name: str, **kwargs) -> keras.Model:
    """Builds backbone `name`; kwargs include `width_multiplier`, `input_channels`,
    `bn_momentum`, `bn_epsilon`, `synchronized_bn` and `return_endpoints`."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {available_backbones()}")
    module, function = _BUILDERS[name].split(":")
    builder = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return builder(**kwargs)
