"""Two-stream fusion (CoCLR's † rows, Han, Xie, Zisserman 2020, Tables 2 and 3): the
results of one protocol on two encoders (e.g. an RGB and a flow network) over the same
videos, combined per video.

- Classification (linear probe, fine-tuning, SVM, MLP): the mean of the per-video
  scores, i.e. of each stream's prediction, its view-averaged softmax probabilities
  (Table 2: "the predictions from RGB and Flow networks are averaged"; §4.4 speaks of
  combining "the logits": the probabilities are what each stream's multi-view test
  already averages; for the SVM its decision values), then the usual metrics and
  confusion matrix.
- Retrieval: the mean of the two test x train cosine-similarity matrices, each of its
  own L2-normalized (and mean-centred) features (Table 3: "the feature similarity
  scores from RGB and Flow networks are averaged"), then R@k and example queries.

The streams must score the same videos in the same order: `check_same_videos` compares
the splits' videos (video/filename and labels, in evaluation order) before anything
runs, and `fuse_results` the labels the protocols saw.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from video_ssl.evaluation import multiview, retrieval
from video_ssl.evaluation.protocol import EvalData, Result, score_metrics

SPLIT_SOURCES = {"test": "test_source", "train": "train_source"}


def check_same_videos(streams: Sequence[tuple[str, EvalData]],
                      splits: Sequence[str] = ("test", "train")) -> None:
    """Raises a ValueError naming the streams, their file bindings and the first video
    that differs unless every stream's `splits` hold the same videos in the same
    evaluation order. Streams reading the same files agree by construction (the
    evaluation order is deterministic); others are compared record by record."""
    (first_name, first), others = streams[0], streams[1:]
    for name, data in others:
        for split in splits:
            files = {"test": (first.test_files, data.test_files),
                     "train": (first.train_files, data.train_files)}[split]
            if list(files[0]) == list(files[1]):
                continue
            ours, theirs = first.videos(split), data.videos(split)
            where = (f"stream {first_name!r} reads {getattr(first, SPLIT_SOURCES[split])}, "
                     f"stream {name!r} {getattr(data, SPLIT_SOURCES[split])}")
            if len(ours) != len(theirs):
                raise ValueError(f"two-stream fusion: the {split} splits differ: {where}, "
                                 f"with {len(ours)} and {len(theirs)} videos; expected the "
                                 "same videos in the same order")
            for position, (a, b) in enumerate(zip(ours, theirs)):
                if a != b:
                    raise ValueError(
                        f"two-stream fusion: the {split} splits differ: {where}; video "
                        f"{position} (evaluation order) is {_describe(a)} in one and "
                        f"{_describe(b)} in the other; expected the same videos in the "
                        "same order (e.g. shards written by compute_flow from the same "
                        "input, which keeps the record order)")


def _describe(video: tuple[str, tuple[int, ...]]) -> str:
    name, labels = video
    return f"{name or '(no video/filename)'!r} (labels {list(labels)})"


def fuse_results(results: Sequence[Result], weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None) -> Result:
    """The fused `Result` of one protocol's results on several streams (equal weights by
    default): classification results by their per-video scores, retrieval results by
    their similarity matrices (see the module docstring). Raises a ValueError when the
    results are of different kinds or their videos' labels differ."""
    names = list(names or [f"stream {i}" for i in range(len(results))])
    if len(results) < 2:
        raise ValueError(f"two-stream fusion: expected at least 2 results, got {len(results)}")
    settings = {"fusion": None, "weights": None if weights is None else list(weights),
                "streams": names}
    if all(r.scores is not None for r in results):
        labels = _same(names, [r.labels for r in results], "test labels")
        shapes = {np.shape(r.scores) for r in results}
        if len(shapes) > 1:
            raise ValueError(f"two-stream fusion: the streams' scores have shapes "
                             f"{[np.shape(r.scores) for r in results]}; expected one "
                             "(the same videos and classes)")
        scores = multiview.fuse([r.scores for r in results], weights)
        metrics, confusion = score_metrics(scores, labels, scores.shape[1])
        settings["fusion"] = "mean of the per-video scores"
        return Result(metrics=metrics, settings=settings, scores=scores, labels=labels,
                      confusion=confusion)
    saved = [r.arrays.get("retrieval_features") for r in results]
    if all(s is not None for s in saved):
        query_labels = _same(names, [s["query_labels"] for s in saved], "query labels")
        gallery_labels = _same(names, [s["gallery_labels"] for s in saved], "gallery labels")
        similarity = multiview.fuse([s["similarity"] for s in saved], weights)
        fused = retrieval.similarity_result(
            similarity, query_labels, gallery_labels, ks=results[0].settings["ks"],
            num_examples=len(results[0].neighbours or []))
        settings["fusion"] = "mean of the test x train cosine-similarity matrices"
        settings["ks"] = fused.settings["ks"]
        fused.settings = settings
        return fused
    raise ValueError("two-stream fusion: expected results with per-video scores "
                     "(classification) or retrieval similarities from every stream")


def _same(names: Sequence[str], arrays: Sequence[np.ndarray], what: str) -> np.ndarray:
    for name, array in zip(names[1:], arrays[1:]):
        if np.shape(array) != np.shape(arrays[0]) or not np.array_equal(array, arrays[0]):
            raise ValueError(f"two-stream fusion: the {what} of {name!r} differ from those of "
                             f"{names[0]!r}; expected the same videos in the same order")
    return np.asarray(arrays[0])
