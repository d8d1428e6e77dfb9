"""Audio features: waveform slicing in sync with a video clip, and log-mel spectrograms."""
from __future__ import annotations

import tensorflow as tf


def log_mel_spectrogram(waveform, sample_rate, *, num_mel_bins: int = 80, frame_length: int,
                        frame_step: int, fft_length: int | None = None,
                        lower_edge_hertz: float = 80.0, upper_edge_hertz: float = 7600.0,
                        log_offset: float = 1e-6, log_scale: float = 1.0) -> tf.Tensor:
    """(..., samples) waveform -> (..., frames, num_mel_bins) log(log_scale * mel + log_offset).

    Magnitude STFT (periodic Hann window, pad_end=True; fft_length None = the smallest
    power of 2 >= frame_length) projected onto an HTK mel filterbank without area
    normalization (tf.signal.linear_to_mel_weight_matrix). The defaults give DMVR's
    log(mel + 1e-6) (DMVR: frame 2048, step 1024, fft 2048). BraVe's variant is
    log_scale=10000, log_offset=1 (frame 320, step 160, fft 320 at 48 kHz); note that at
    48 kHz an FFT of 320 has 150 Hz bins, so the narrowest low mel bands contain no bin
    and stay at log(log_offset).
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    stft = tf.signal.stft(waveform, frame_length=frame_length, frame_step=frame_step,
                          fft_length=fft_length, window_fn=tf.signal.hann_window, pad_end=True)
    magnitude = tf.abs(stft)
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=num_mel_bins, num_spectrogram_bins=magnitude.shape[-1],
        sample_rate=sample_rate, lower_edge_hertz=lower_edge_hertz,
        upper_edge_hertz=upper_edge_hertz)
    mel = tf.tensordot(magnitude, mel_matrix, axes=1)
    return tf.math.log(log_scale * mel + log_offset)


def slice_waveform(waveform, start_seconds, num_samples: int, sample_rate, *,
                   loop: bool = True) -> tf.Tensor:
    """num_samples samples from round(start_seconds * sample_rate), a static-length slice.

    Past either end the waveform wraps around when loop=True (as looped short videos),
    else is zero-padded. An empty waveform gives zeros; reporting missing audio is the
    caller's job.
    """
    waveform = tf.reshape(tf.convert_to_tensor(waveform, tf.float32), [-1])
    length = tf.size(waveform, out_type=tf.int64)
    start = tf.cast(tf.round(tf.cast(start_seconds, tf.float64) * tf.cast(sample_rate, tf.float64)),
                    tf.int64)
    positions = start + tf.range(num_samples, dtype=tf.int64)
    safe_length = tf.maximum(length, 1)
    if loop:
        inside = tf.fill([num_samples], length > 0)
        positions = tf.math.floormod(positions, safe_length)
    else:
        inside = (positions >= 0) & (positions < length)
    # A trailing zero keeps the gather valid when the waveform is empty.
    padded = tf.concat([waveform, tf.zeros([1])], axis=0)
    samples = tf.gather(padded, tf.clip_by_value(positions, 0, safe_length - 1))
    return tf.where(inside, samples, 0.0)
