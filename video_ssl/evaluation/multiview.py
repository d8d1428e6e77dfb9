"""Multi-view testing and two-stream fusion.

A video is scored from several views: the ρ-paper averages the softmax over 10
uniformly spaced clips x 3 spatial crops, CoCLR over dense temporal windows x 10 crops
(5 crops and their flips), BraVe the SVM scores over 10 x 3 views. Evaluation batches
of `make_dataset(training=False, ...)` hold those views along the clip axis (clips x
crops, clip-major); with dense windows the count varies per video, the batch is
padded and "clip_mask" marks the real views. `average_over_views` applies a scoring
function to every real view and averages per video. `fuse` averages the per-video
scores of two streams (e.g. the class probabilities of an RGB and a flow model).
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from video_ssl import console

# Views scored per call: bounds memory when a batch holds many views per video.
DEFAULT_CHUNK = 64


def masked_view_mean(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(B, V, K) values -> (B, K): the mean over the views where `mask` (B, V) holds."""
    values = np.asarray(values, np.float64)
    if mask is None:
        return values.mean(axis=1)
    mask = np.asarray(mask, bool)
    counts = mask.sum(axis=1)
    if not counts.all():
        raise ValueError("multi-view average: a video has no valid view (clip_mask all False)")
    total = np.where(mask[..., None], values, 0.0).sum(axis=1)
    return total / counts[:, None]


def _score_in_chunks(fn, clips: tf.Tensor, chunk: int) -> np.ndarray:
    return np.concatenate([np.asarray(fn(clips[i:i + chunk]))
                           for i in range(0, int(clips.shape[0]), chunk)])


def average_over_views(fn: Callable[[tf.Tensor], tf.Tensor], dataset: tf.data.Dataset, *,
                       key: str = "rgb", total: int | None = None, verbose: bool = True,
                       chunk: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Per-video mean of `fn` over the views of every video in `dataset`.

    fn: clips (N, T, H, W, C) -> scores (N, K) (class probabilities, SVM scores,
      normalized features). dataset: batches with `key` (B, V, T, H, W, C), "label"
      (B,) and optionally "clip_mask" (B, V). Padded views are never scored.
    total: number of videos, for the progress bar.
    Returns (scores (videos, K) float64, labels (videos,) int).
    """
    progress = (keras.utils.Progbar(total, unit_name="video",
                                    verbose=console.progress_verbosity()) if verbose else None)
    scores, labels = [], []
    for batch in dataset:
        views = batch[key]
        batch_size, num_views = int(views.shape[0]), int(views.shape[1])
        flat = tf.reshape(views, tf.concat([[-1], tf.shape(views)[2:]], 0))
        mask = batch["clip_mask"].numpy() if "clip_mask" in batch else None
        if mask is None:
            values = _score_in_chunks(fn, flat, chunk)
        else:
            valid = mask.reshape(-1)
            scored = _score_in_chunks(fn, tf.boolean_mask(flat, valid), chunk)
            values = np.zeros((valid.size,) + scored.shape[1:], scored.dtype)
            values[valid] = scored
        scores.append(masked_view_mean(values.reshape(batch_size, num_views, -1), mask))
        labels.append(batch["label"].numpy())
        if progress is not None:
            progress.add(batch_size)
    if not scores:
        raise ValueError("multi-view average: the evaluation dataset yielded no videos")
    return np.concatenate(scores), np.concatenate(labels)


def fuse(scores: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of per-video scores of several streams over the same videos in the
    same order: class probabilities (videos, classes) or similarity matrices
    (queries, gallery). Equal weights by default (CoCLR's two-stream average)."""
    arrays = [np.asarray(s, np.float64) for s in scores]
    if not arrays or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"fuse: expected score arrays of one shape, got "
                         f"{[a.shape for a in arrays]}")
    weights = np.ones(len(arrays)) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (len(arrays),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"fuse: expected {len(arrays)} non-negative weights with a positive "
                         f"sum, got {weights.tolist()}")
    return sum(w * a for w, a in zip(weights, arrays)) / weights.sum()
