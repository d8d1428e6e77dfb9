"""TSM-ResNet-50 (Lin et al. 2019) in its ResNet v2 form, BraVe's video backbone
(Recasens et al. 2021, deepmind/brave `tsm_resnet.py`).

Frames are folded into the batch and run through a 2-D ResNet-50 v2 (see
`layers.resnet50_v2_2d`); inside every block's residual branch, after the BN-ReLU
pre-activation and before the first conv, 1/8 of the channels move one frame back in
time and 1/8 one frame forward, zero-padded at the clip ends. The output is the mean
over space and time of the final BN-ReLU map.

The shift and the unfolding need the clip length T: they read it from the clip tensor's
shape when called (static under `jit_compile`, dynamic otherwise), so one model serves
any T, and the batch may be any size.

Trainable parameters (no classifier, RGB): `tsm_r50` 23,500,352 (BraVe 23.5M),
`tsm_r50x2` 93,891,712 (BraVe 93.9M).

Choices, documented differences from the references:
- Channel layout of the shift (`shift_layout`): "tsm" (default), the TSM paper's:
  channels [0, n) take frame t+1, [n, 2n) take frame t-1, the rest stay. "brave" is
  BraVe's (deepmind/brave `brave/models/brave/tsm_resnet.py:467-497`,
  `temporal_shift_gpu`): the last n channels of frame t+1 go to slots [0, n), the first
  n of frame t-1 to the last n slots, the middle stays. Both shift 1/8 of the channels
  each way, so either trains an equally capable network; but they shift different
  channels of the residual stream, so weights trained with one do not fit the other:
  BraVe's checkpoints need "brave" (with "tsm", random weights in BraVe's model moved
  the pooled features by 0.24-0.28 relative; docs/brave.md). The default stays "tsm":
  runs trained before the option existed do not record it.
- 'same' padding everywhere as the Haiku reference; He fan-out init (Haiku uses a
  fan-in truncated normal); BN momentum 0.9 / epsilon 1e-5 as BraVe's `hk.BatchNorm`
  (decay 0.9, its default eps 1e-5; `brave/models/brave/modules.py:121-127`), which
  synchronizes BN across replicas: pass `synchronized_bn=True` for that.
"""
from __future__ import annotations

import keras
from keras import ops

from video_ssl.models.backbones.layers import Norm, resnet50_v2_2d, video_input


@keras.saving.register_keras_serializable(package="video_ssl")
class FoldFrames(keras.layers.Layer):
    """(B, T, H, W, C) clips -> (B·T, H, W, C) frames."""

    def call(self, clip):
        shape = ops.shape(clip)
        return ops.reshape(clip, (-1, *shape[2:]))

    def compute_output_shape(self, input_shape):
        batch, frames = input_shape[:2]
        folded = None if batch is None or frames is None else batch * frames
        return (folded, *input_shape[2:])


@keras.saving.register_keras_serializable(package="video_ssl")
class UnfoldFrames(keras.layers.Layer):
    """[(B·T, h, w, c) frames, (B, T, ...) clip] -> (B, T, h, w, c)."""

    def call(self, inputs):
        frames, clip = inputs
        return ops.reshape(frames, (-1, ops.shape(clip)[1], *ops.shape(frames)[1:]))

    def compute_output_shape(self, input_shape):
        frames_shape, clip_shape = input_shape
        return (clip_shape[0], clip_shape[1], *frames_shape[1:])


SHIFT_LAYOUTS = ("tsm", "brave")


@keras.saving.register_keras_serializable(package="video_ssl")
class TemporalShift(keras.layers.Layer):
    """TSM shift of folded frames: [(B·T, H, W, C) frames, (B, T, ...) clip] -> frames.

    With n = int(C · fraction) and frames past either end zeros, `layout` "tsm":
    channels [0, n) at frame t take frame t+1 and [n, 2n) take frame t-1 of the same
    clip; "brave": slots [0, n) take channels [C-n, C) of frame t+1, slots [C-n, C)
    take channels [0, n) of frame t-1 (see the module docstring).
    """

    def __init__(self, fraction: float = 0.125, layout: str = "tsm", **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= fraction <= 0.5:
            raise ValueError(f"TemporalShift fraction {fraction}: expected a value in [0, 0.5]")
        if layout not in SHIFT_LAYOUTS:
            raise ValueError(f"TemporalShift layout {layout!r}: expected one of {SHIFT_LAYOUTS}")
        self.fraction = fraction
        self.layout = layout

    def call(self, inputs):
        frames, clip = inputs
        channels = frames.shape[-1]
        shift = int(channels * self.fraction)
        if shift == 0:
            return frames
        frame_shape = ops.shape(frames)
        x = ops.reshape(frames, (-1, ops.shape(clip)[1], *frame_shape[1:]))
        no_pad = [[0, 0]] * 3

        def from_next(start, stop):
            return ops.pad(x[:, 1:, ..., start:stop], [[0, 0], [0, 1], *no_pad])

        def from_previous(start, stop):
            return ops.pad(x[:, :-1, ..., start:stop], [[0, 0], [1, 0], *no_pad])

        if self.layout == "tsm":
            parts = [from_next(0, shift), from_previous(shift, 2 * shift), x[..., 2 * shift:]]
        else:
            parts = [from_next(channels - shift, channels), x[..., shift:channels - shift],
                     from_previous(0, shift)]
        return ops.reshape(ops.concatenate(parts, axis=-1), frame_shape)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction, "layout": self.layout}


def tsm_resnet50(*, width_multiplier: float = 1.0, input_channels: int = 3,
                 bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                 synchronized_bn: bool = False, return_endpoints: bool = False,
                 input_shape=None, channel_shift_fraction: float = 0.125,
                 shift_layout: str = "tsm", name: str = "tsm_r50") -> keras.Model:
    """TSM-ResNet-50 v2; pooled 2048·multiplier-d. Endpoints conv1, res2..res5 as
    (B, T, h, w, c) maps, and pooled. `channel_shift_fraction` 0 gives a per-frame
    ResNet-50 v2 averaged over time (TSN); `shift_layout` "tsm" (the TSM paper's) or
    "brave" (BraVe's code's, which its checkpoints need): see the module docstring."""
    norm = Norm(bn_momentum, bn_epsilon, synchronized_bn)
    clip = video_input(input_shape, input_channels)

    def make_shift(block_name):
        shift = TemporalShift(channel_shift_fraction, shift_layout, name=f"{block_name}_shift")
        return lambda frames: shift([frames, clip])

    frame_maps = resnet50_v2_2d(FoldFrames(name="fold_frames")(clip),
                                width_multiplier=width_multiplier, norm=norm,
                                make_shift=make_shift)
    endpoints = {key: UnfoldFrames(name=f"{key}_unfold")([value, clip])
                 for key, value in frame_maps.items()}
    pooled = keras.layers.GlobalAveragePooling3D(name="pool")(endpoints["res5"])
    outputs = {**endpoints, "pooled": pooled} if return_endpoints else pooled
    return keras.Model(clip, outputs, name=name)


def tsm_r50(**kwargs) -> keras.Model:
    """BraVe's TSM-ResNet-50 (×1). kwargs as `tsm_resnet50`."""
    return tsm_resnet50(**kwargs)


def tsm_r50x2(*, width_multiplier: float = 1.0, **kwargs) -> keras.Model:
    """BraVe's TSM-ResNet-50×2: every width doubled (on top of `width_multiplier`)."""
    return tsm_resnet50(width_multiplier=2.0 * width_multiplier, name="tsm_r50x2", **kwargs)
