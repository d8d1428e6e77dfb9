"""Audio features: log-mel spectrogram and waveform slicing."""
import librosa
import numpy as np
import pytest
import tensorflow as tf

from video_ssl.data import audio

SAMPLE_RATE = 16000
STFT = dict(frame_length=400, frame_step=160, fft_length=512)


def _tone(frequency, seconds=0.5, sample_rate=SAMPLE_RATE):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _htk_mel_centres(num_bins, low, high):
    """Centre frequencies (Hz) of the HTK mel bands: mel = 2595 log10(1 + f / 700)."""
    def to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mels = np.linspace(to_mel(low), to_mel(high), num_bins + 2)[1:-1]
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def test_log_mel_shape_single_and_batched():
    wave = _tone(440.0)  # 8000 samples -> ceil(8000 / 160) frames with pad_end
    single = audio.log_mel_spectrogram(wave, SAMPLE_RATE, num_mel_bins=40, **STFT)
    assert single.shape == (50, 40) and single.dtype == tf.float32
    batch = np.stack([wave, _tone(1000.0)])[None]  # (1, 2, samples)
    batched = audio.log_mel_spectrogram(batch, SAMPLE_RATE, num_mel_bins=40, **STFT)
    assert batched.shape == (1, 2, 50, 40)
    np.testing.assert_allclose(batched[0, 0], single, atol=1e-4)


@pytest.mark.parametrize("frequency", [300.0, 1000.0, 3000.0])
def test_pure_tone_peaks_in_nearest_mel_bin(frequency):
    mel = audio.log_mel_spectrogram(_tone(frequency), SAMPLE_RATE, num_mel_bins=40,
                                    lower_edge_hertz=80.0, upper_edge_hertz=7600.0, **STFT)
    peak = np.bincount(np.argmax(mel.numpy()[2:-2], axis=-1)).argmax()
    centres = _htk_mel_centres(40, 80.0, 7600.0)
    assert peak == np.argmin(np.abs(centres - frequency))


def test_matches_librosa_htk_filterbank():
    rng = np.random.default_rng(0)
    wave = rng.uniform(-0.5, 0.5, 4000).astype(np.float32)
    ours = audio.log_mel_spectrogram(wave, SAMPLE_RATE, num_mel_bins=40, **STFT).numpy()
    stft = tf.signal.stft(wave, 400, 160, 512, window_fn=tf.signal.hann_window, pad_end=True)
    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=512, n_mels=40, fmin=80.0, fmax=7600.0,
                                  htk=True, norm=None)
    theirs = np.log(np.abs(stft.numpy()) @ filters.T + 1e-6)
    # Same HTK band edges; tf.signal's triangles are linear in mel, librosa's in Hz,
    # which moves the weights by < 0.01.
    np.testing.assert_allclose(ours, theirs, atol=0.03)
    assert np.mean(np.abs(ours - theirs)) < 0.005


def test_brave_log_scale_variant():
    wave = _tone(1000.0)
    default = audio.log_mel_spectrogram(wave, SAMPLE_RATE, **STFT)
    brave = audio.log_mel_spectrogram(wave, SAMPLE_RATE, log_scale=10000.0, log_offset=1.0, **STFT)
    np.testing.assert_allclose(brave, np.log1p(10000.0 * (np.exp(default) - 1e-6)), atol=1e-3)
    assert float(tf.reduce_min(brave)) >= 0.0


def test_slice_waveform_offsets_looping_and_padding():
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(audio.slice_waveform(wave, 0.3, 4, 10), [3, 4, 5, 6])
    np.testing.assert_array_equal(audio.slice_waveform(wave, 0.8, 5, 10), [8, 9, 0, 1, 2])
    np.testing.assert_array_equal(audio.slice_waveform(wave, 2.5, 3, 10), [5, 6, 7])
    np.testing.assert_array_equal(audio.slice_waveform(wave, 0.8, 5, 10, loop=False),
                                  [8, 9, 0, 0, 0])
    np.testing.assert_array_equal(audio.slice_waveform(wave, 1.5, 3, 10, loop=False), [0, 0, 0])
    # Rounds to the nearest sample.
    np.testing.assert_array_equal(audio.slice_waveform(wave, 0.26, 2, 10), [3, 4])


def test_log_mel_in_graph_with_tensor_sample_rate():
    # As in the pipeline, where the rate is read from the SequenceExample's context.
    mel = tf.function(lambda w, sr: audio.log_mel_spectrogram(w, sr, num_mel_bins=16, **STFT))(
        tf.constant(_tone(500.0)), tf.constant(float(SAMPLE_RATE)))
    assert mel.shape == (50, 16)


def test_slice_waveform_empty_gives_zeros_and_works_in_graph():
    for loop in (True, False):
        out = audio.slice_waveform(np.zeros([0], np.float32), 0.5, 6, 16000, loop=loop)
        np.testing.assert_array_equal(out, np.zeros(6))
    sliced = tf.function(lambda w, s: audio.slice_waveform(w, s, 4, 10.0))(
        tf.range(7, dtype=tf.float32), tf.constant(0.5))
    assert sliced.shape == (4,)
    np.testing.assert_array_equal(sliced, [5, 6, 0, 1])
