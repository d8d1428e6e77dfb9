"""Temporal sampling: which stored frames each clip uses, as pure TF index arithmetic.

Everything here works on the frame *count* of a video, before any frame is decoded, so
the reader can decode only the chosen JPEGs. Positions are float frame numbers: a clip
starting at frame `s` with stride `tau` uses frames `floor(s + i * tau)`, i < T, taken
modulo the video length, so a clip running past the end (a video shorter than the
clip, a broad view starting anywhere) continues from the video's start. Randomness is stateless:
`seed` is an int tensor of shape [2] (`tf.random.stateless_*`).

Start times in seconds are `start / source_fps`; audio uses them to follow the clip.
"""
from __future__ import annotations

import tensorflow as tf


def clip_stride(source_fps, frame_stride, target_fps=None) -> tf.Tensor:
    """Stride in stored frames. Without `target_fps`, `frame_stride` counts stored
    frames; with it, `frame_stride` counts frames at `target_fps`, so clips cover the
    same time whatever the file's frame rate."""
    stride = tf.cast(frame_stride, tf.float32)
    if target_fps is None:
        return stride
    return stride * tf.cast(source_fps, tf.float32) / float(target_fps)


def clip_span(num_frames: int, stride) -> tf.Tensor:
    """Number of stored frames a clip covers, first to last included."""
    return (num_frames - 1) * tf.cast(stride, tf.float32) + 1.0


def clip_indices(start, num_frames: int, stride, num_available) -> tf.Tensor:
    """int32 (..., T) frame indices of clips starting at `start` (...,), looping."""
    start = tf.cast(start, tf.float32)[..., None]
    stride = tf.cast(stride, tf.float32)[..., None]
    steps = tf.range(num_frames, dtype=tf.float32)
    idx = tf.cast(tf.floor(start + steps * stride), tf.int32)
    return tf.math.floormod(idx, tf.maximum(tf.cast(num_available, tf.int32), 1))


def max_clip_start(num_available, span, start: str = "within") -> tf.Tensor:
    """The largest start (in frames) of a clip covering `span` frames of a video of
    `num_available`: "within" keeps the clip inside the video (T - span, below 0 for a
    video shorter than the clip, which then starts at 0 and loops); "anywhere_looped"
    lets it start anywhere up to T, the frames past the end looped from the video's
    start (BraVe's broad views)."""
    num_available = tf.cast(num_available, tf.float32)
    if start == "within":
        return num_available - tf.cast(span, tf.float32)
    if start == "anywhere_looped":
        return num_available
    raise ValueError(f"start must be 'within' or 'anywhere_looped', got {start!r}")


def jittered_strides(seed, num_clips: int, stride, jitter: float = 0.0) -> tf.Tensor:
    """(num_clips,) strides, each scaled by its own factor ~ U[1 - jitter, 1 + jitter]
    (frame-rate jitter)."""
    stride = tf.cast(stride, tf.float32)
    if not jitter:
        return tf.fill([num_clips], stride)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"frame_rate_jitter must be in [0, 1), got {jitter}")
    scale = tf.random.stateless_uniform(
        [num_clips], seed, minval=1.0 - jitter, maxval=1.0 + jitter)
    return stride * scale


def random_clip_starts(seed, num_clips: int, max_start, *, min_gap=0.0,
                       max_gap=None) -> tf.Tensor:
    """(num_clips,) float starts in [0, max_start], in random order.

    Without gap bounds each start is uniform over [0, max_start], independently
    (PySlowFast). `max_gap` keeps every pair of starts within `max_gap` of each other
    (the paper's t_max): a window of that length is placed uniformly, then the starts
    are drawn inside it. `min_gap` keeps every pair at least `min_gap` apart: sorted
    uniform draws over the window shortened by (n - 1) * min_gap, then shifted by
    i * min_gap (uniform over all allowed configurations). Gaps a video is too short
    for shrink to what it allows. All quantities are in frames.
    """
    max_start = tf.maximum(tf.cast(max_start, tf.float32), 0.0)
    window_seed, start_seed, order_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    window = max_start
    offset = tf.constant(0.0)
    if max_gap is not None:
        window = tf.minimum(window, tf.cast(max_gap, tf.float32))
        offset = tf.random.stateless_uniform([], window_seed) * (max_start - window)
    gap = tf.constant(0.0)
    if num_clips > 1:
        gap = tf.minimum(tf.cast(min_gap, tf.float32), window / (num_clips - 1))
    free = window - gap * (num_clips - 1)
    draws = tf.sort(tf.random.stateless_uniform([num_clips], start_seed) * free)
    starts = offset + draws + gap * tf.range(num_clips, dtype=tf.float32)
    order = tf.argsort(tf.random.stateless_uniform([num_clips], order_seed))
    return tf.gather(starts, order)


def uniform_clip_starts(num_clips: int, max_start) -> tf.Tensor:
    """(num_clips,) starts evenly spaced from 0 to max_start (evaluation): the first
    clip starts the video and the last one ends it."""
    max_start = tf.maximum(tf.cast(max_start, tf.float32), 0.0)
    if num_clips == 1:
        return tf.reshape(max_start / 2.0, [1])
    return tf.linspace(0.0, max_start, num_clips)


def sliding_window_starts(max_start, window_stride) -> tf.Tensor:
    """Starts 0, w, 2w, ... <= max_start (dense evaluation); at least one window."""
    max_start = tf.maximum(tf.cast(max_start, tf.float32), 0.0)
    window_stride = tf.cast(window_stride, tf.float32)
    count = tf.cast(tf.floor(max_start / window_stride), tf.int32) + 1
    return tf.range(count, dtype=tf.float32) * window_stride


def synced_starts(reference_start, reference_span, span, sync: str) -> tf.Tensor:
    """Starts of a view aligned to another view's clips (BraVe's audio starts with its
    narrow view; Table 4's synced row does the same for a visual broad view, which by
    default BraVe draws independently).

    sync="start": both windows begin together. sync="centre": both share a centre, so
    the longer (broad) window contains the shorter (narrow) one. A start before 0 is
    fine: indices loop (the view is padded by looping).
    """
    if sync == "start":
        return tf.cast(reference_start, tf.float32)
    if sync == "centre":
        return (tf.cast(reference_start, tf.float32)
                + (tf.cast(reference_span, tf.float32) - tf.cast(span, tf.float32)) / 2.0)
    raise ValueError(f"sync must be 'start' or 'centre', got {sync!r}")
