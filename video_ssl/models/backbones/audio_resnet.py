"""Audio ResNet-50: BraVe's audio backbone (Recasens et al. 2021, deepmind/brave
`resnet.py`, `AudioEmbedding`), a 2-D ResNet-50 v2 over a log-mel spectrogram.

Input (B, frames, mel_bins, 1): BraVe's broad audio view is 10.24 s at 48 kHz with an
STFT step of 160 samples (≈3072 frames) × 80 mel bins. The trunk is the same
pre-activation ResNet-50 as the TSM video backbone (`layers.resnet50_v2_2d`, 'same'
padding as the Haiku reference, final BN-ReLU); the output is its mean over time and
frequency (2048-d). Trainable parameters: 23,494,080 (BraVe 23.5M; the stem sees 1
input channel instead of 3).
"""
from __future__ import annotations

import keras

from video_ssl.models.backbones.layers import Norm, resnet50_v2_2d


def audio_resnet50(*, width_multiplier: float = 1.0, input_channels: int = 1,
                   bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                   synchronized_bn: bool = False, return_endpoints: bool = False,
                   input_shape=None, name: str = "audio_resnet50") -> keras.Model:
    """ResNet-50 v2 on (B, frames, mel_bins, C) spectrograms; pooled 2048·multiplier-d.
    Endpoints conv1, res2..res5 (B, f, m, c) maps, and pooled."""
    shape = tuple(input_shape) if input_shape is not None else (None, None, input_channels)
    if len(shape) != 3 or shape[-1] != input_channels:
        raise ValueError(f"audio_resnet50 input_shape {shape}: expected (frames, mel_bins, "
                         f"{input_channels}) matching input_channels={input_channels}")
    spectrogram = keras.Input(shape=shape, name="audio")
    endpoints = resnet50_v2_2d(spectrogram, width_multiplier=width_multiplier,
                               norm=Norm(bn_momentum, bn_epsilon, synchronized_bn))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(endpoints["res5"])
    outputs = {**endpoints, "pooled": pooled} if return_endpoints else pooled
    return keras.Model(spectrogram, outputs, name=name)
