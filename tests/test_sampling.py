"""Temporal sampling: strides, random starts with gap bounds, looping, evaluation clips."""
import numpy as np
import pytest
import tensorflow as tf

from video_ssl.data import sampling


def _seeds(n):
    return [tf.constant([7, i], tf.int64) for i in range(n)]


def test_clip_indices_follow_stride():
    np.testing.assert_array_equal(sampling.clip_indices(3.0, 4, 2.0, 100), [3, 5, 7, 9])
    # Fractional stride (e.g. from a target fps) floors each position.
    np.testing.assert_array_equal(sampling.clip_indices(0.0, 4, 1.5, 100), [0, 1, 3, 4])


def test_short_videos_loop():
    idx = sampling.clip_indices(0.0, 8, 2.0, 5).numpy()
    np.testing.assert_array_equal(idx, [0, 2, 4, 1, 3, 0, 2, 4])
    # Negative starts (a centred broad view around an early narrow clip) loop too.
    assert sampling.clip_indices(-2.0, 3, 1.0, 5).numpy().tolist() == [3, 4, 0]


def test_clip_stride_from_target_fps():
    assert float(sampling.clip_stride(30.0, 2, target_fps=15.0)) == pytest.approx(4.0)
    assert float(sampling.clip_stride(30.0, 2)) == pytest.approx(2.0)


def test_random_starts_are_independent_and_cover_the_video():
    starts = np.stack([sampling.random_clip_starts(s, 3, 100.0).numpy() for s in _seeds(200)])
    assert starts.shape == (200, 3)
    assert starts.min() >= 0 and starts.max() <= 100
    assert starts.min() < 5 and starts.max() > 95
    # Independent, unordered: each clip position is sometimes the earliest.
    assert set(np.argmin(starts, axis=1)) == {0, 1, 2}
    assert abs(np.corrcoef(starts[:, 0], starts[:, 1])[0, 1]) < 0.2


@pytest.mark.parametrize("min_gap,max_gap", [(20.0, None), (0.0, 15.0), (10.0, 40.0)])
def test_gap_bounds_are_respected(min_gap, max_gap):
    for seed in _seeds(100):
        starts = np.sort(sampling.random_clip_starts(
            seed, 3, 200.0, min_gap=min_gap, max_gap=max_gap).numpy())
        gaps = np.diff(starts)
        assert starts[0] >= 0 and starts[-1] <= 200
        assert gaps.min() >= min_gap - 1e-3
        if max_gap is not None:
            assert starts[-1] - starts[0] <= max_gap + 1e-3


def test_min_gap_shrinks_to_fit_a_short_video():
    starts = np.sort(sampling.random_clip_starts(_seeds(1)[0], 3, 10.0, min_gap=50.0).numpy())
    np.testing.assert_allclose(starts, [0.0, 5.0, 10.0], atol=1e-4)


def test_frame_rate_jitter_bounds():
    strides = sampling.jittered_strides(_seeds(1)[0], 64, 4.0, jitter=0.25).numpy()
    assert strides.min() >= 3.0 and strides.max() <= 5.0
    assert strides.std() > 0.2
    np.testing.assert_array_equal(sampling.jittered_strides(_seeds(1)[0], 2, 4.0), [4.0, 4.0])
    with pytest.raises(ValueError, match="frame_rate_jitter"):
        sampling.jittered_strides(_seeds(1)[0], 2, 4.0, jitter=1.5)


def test_uniform_eval_clips_cover_the_video():
    num_frames, stride, length = 8, 4.0, 120
    max_start = length - float(sampling.clip_span(num_frames, stride))
    starts = sampling.uniform_clip_starts(5, max_start).numpy()
    np.testing.assert_allclose(np.diff(starts), np.full(4, max_start / 4), rtol=1e-5)
    idx = sampling.clip_indices(starts, num_frames, tf.fill([5], stride), length).numpy()
    assert idx[0, 0] == 0 and idx[-1, -1] == length - 1
    assert float(sampling.uniform_clip_starts(1, max_start)[0]) == pytest.approx(max_start / 2)


def test_sliding_windows():
    starts = sampling.sliding_window_starts(29.0, 8).numpy()
    np.testing.assert_array_equal(starts, [0, 8, 16, 24])
    np.testing.assert_array_equal(sampling.sliding_window_starts(-5.0, 8), [0])


def test_synced_views_share_start_or_centre():
    narrow_start, narrow_span, broad_span = tf.constant([30.0]), 16.0, 64.0
    broad = sampling.synced_starts(narrow_start, narrow_span, broad_span, "centre")
    assert float(broad[0] + broad_span / 2) == pytest.approx(30.0 + narrow_span / 2)
    assert float(sampling.synced_starts(narrow_start, narrow_span, broad_span, "start")[0]) == 30.0
    with pytest.raises(ValueError, match="sync"):
        sampling.synced_starts(narrow_start, narrow_span, broad_span, "middle")


def test_max_clip_start_within_or_anywhere_looped():
    assert float(sampling.max_clip_start(30.0, 8.0)) == 22.0
    # A clip as long as the video: "within" pins it at 0, "anywhere_looped" does not.
    assert float(sampling.max_clip_start(30.0, 30.0, "within")) == 0.0
    assert float(sampling.max_clip_start(30.0, 30.0, "anywhere_looped")) == 30.0
    assert float(sampling.max_clip_start(30.0, 64.0, "anywhere_looped")) == 30.0
    with pytest.raises(ValueError, match="start must be 'within' or 'anywhere_looped'"):
        sampling.max_clip_start(30.0, 8.0, "anywhere")
