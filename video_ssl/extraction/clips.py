"""The clips of one video that `video_ssl.extract` embeds (`sampling.Sampling`).

`--clips=N`: N clips uniformly spaced from the video's start to its end (the
evaluation pipeline's `clips.eval_windows`), one row each, plus a row holding their
mean. `--window_s=S --stride_s=R`: windows of S seconds (default: the model's clip)
starting every R seconds while they fit in the video (a video shorter than one
window: one window at 0); a window longer than the model's clip is covered by
round(S / clip) uniformly spaced clips whose features are averaged into its row.
`--crops=3` cuts each clip three times (`crops.three_crop_boxes`), one row each.
Clips are cut by `clips.eval_clips`: the evaluation crops and normalization.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from video_ssl.data import clips as clips_lib, sampling as sampling_lib, views as views_lib
from video_ssl.extraction.sampling import Sampling


@dataclasses.dataclass
class VideoClips:
    """One video's clips (rows * per_row, ...) in row order (window-major, then crop,
    then the clips averaged into a row), and each row's window in seconds."""
    clips: np.ndarray | None
    per_row: int
    starts_s: np.ndarray  # (windows,)
    ends_s: np.ndarray


class ClipMaker:
    """features (a parsed video) -> `VideoClips`, traced once for the model's view."""

    def __init__(self, view: views_lib.ViewSpec, sampling: Sampling):
        self.view = dataclasses.replace(view, num_clips=sampling.clips or 1,
                                        eval_crops=sampling.crops)
        self.sampling = sampling
        self._cut = tf.function(self._cut_clips, reduce_retracing=True)
        self._indices = tf.function(self._clip_indices, input_signature=[
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)])

    def frame_indices(self, num_frames: int, frame_rate: float) -> np.ndarray:
        """The sorted stored frames the clips of a video of `num_frames` frames at
        `frame_rate` take: the only ones a video file needs decoded."""
        return np.unique(self._indices(num_frames, frame_rate).numpy())

    def __call__(self, features: dict) -> VideoClips:
        clips, starts, ends, per_window = self._cut(features)
        per_window, crops = int(per_window), self.sampling.crops
        clips = clips.numpy()
        if per_window > 1:  # (windows * k) * crops clips -> windows * crops rows of k
            shape = clips.shape[1:]
            clips = clips.reshape((-1, per_window, crops) + shape).swapaxes(1, 2)
            clips = clips.reshape((-1,) + shape)
        return VideoClips(clips, per_window, starts.numpy(), ends.numpy())

    def _clip_indices(self, num_frames, frame_rate):
        features = {"frames": tf.fill([num_frames], ""), "frame_rate": frame_rate}
        starts, strides, *_ = self._windows(features)
        return clips_lib.eval_indices(self.view, features, starts, strides)

    def _cut_clips(self, features):
        starts, strides, windows, spans, per_window = self._windows(features)
        out = clips_lib.eval_clips(self.view, features, starts, strides)
        fps = features["frame_rate"]
        return (out[self.view.modalities[0]], windows / fps, (windows + spans) / fps,
                per_window)

    def _windows(self, features):
        """(clip starts, strides, window starts, window lengths, clips per window), in
        stored frames."""
        view = self.view
        fps = features["frame_rate"]
        if self.sampling.clips:
            starts, strides = clips_lib.eval_windows(view, features)
            windows, spans, per_window = starts, clips_lib.clip_spans(view, features,
                                                                      strides), 1
        else:
            stride = sampling_lib.clip_stride(fps, view.frame_stride, view.target_fps)
            span = clips_lib.clip_spans(view, features, stride)
            length = span if self.sampling.window_s is None else self.sampling.window_s * fps
            per_window = tf.maximum(tf.cast(tf.round(length / span), tf.int32), 1)
            total = tf.cast(clips_lib.stored_frames(features), tf.float32)
            windows = sampling_lib.sliding_window_starts(total - length,
                                                         self.sampling.stride_s * fps)
            inside = tf.cond(per_window > 1,
                             lambda: tf.linspace(0.0, length - span, per_window),
                             lambda: tf.reshape((length - span) / 2.0, [1]))
            starts = tf.reshape(windows[:, None] + inside[None], [-1])
            strides = tf.fill(tf.shape(starts), stride)
            spans = tf.fill(tf.shape(windows), length)
        return starts, strides, windows, spans, per_window
