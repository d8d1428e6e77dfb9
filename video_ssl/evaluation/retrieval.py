"""Nearest-neighbour video retrieval, CoCLR's protocol (Han et al. 2020,
eval/main_classifier.py `--retrieval`).

Each test video queries the train videos. A video's feature is the mean over its
views of the L2-normalized pooled backbone features (CoCLR: every half-overlapping
window of a test video, one clip of a train video); each set is then mean-centred
(optional) and similarity is cosine. R@k is the fraction of queries with a video of
their class among the k most similar train videos.
"""
from __future__ import annotations

from typing import Sequence

import gin
import keras
import numpy as np
import tensorflow as tf

from video_ssl.evaluation import features as features_lib
from video_ssl.evaluation.protocol import EvalData, Result

DEFAULT_KS = (1, 5, 10, 20, 50)
NEIGHBOURS_SHOWN = 3


def nearest_neighbours(query_features, gallery_features, k: int, *,
                       chunk_size: int = 1024) -> np.ndarray:
    """(queries, min(k, gallery)) indices of the most cosine-similar gallery rows, most
    similar first (ties: the lower index first). Queries go `chunk_size` at a time."""
    queries = tf.math.l2_normalize(tf.convert_to_tensor(query_features, tf.float32), axis=1)
    gallery = tf.math.l2_normalize(tf.convert_to_tensor(gallery_features, tf.float32), axis=1)
    if queries.shape.rank != 2 or gallery.shape.rank != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"retrieval: expected (queries, D) and (gallery, D) features, got "
                         f"{tuple(queries.shape)} and {tuple(gallery.shape)}")
    if gallery.shape[0] == 0:
        raise ValueError("retrieval: the gallery is empty")
    k = min(int(k), gallery.shape[0])
    chunks = [tf.math.top_k(tf.matmul(queries[i:i + chunk_size], gallery, transpose_b=True),
                            k=k).indices.numpy()
              for i in range(0, queries.shape[0], chunk_size)]
    return np.concatenate(chunks) if chunks else np.zeros([0, k], np.int64)


def recall_at_k(query_features, query_labels, gallery_features, gallery_labels,
                ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: fraction of queries whose k most cosine-similar gallery rows include one of
    the query's label}. k larger than the gallery counts the whole gallery."""
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"recall_at_k: expected positive ks, got {list(ks)}")
    if len(query_labels) != len(query_features) or len(gallery_labels) != len(gallery_features):
        raise ValueError("recall_at_k: expected one label per feature row")
    if len(query_labels) == 0:
        raise ValueError("recall_at_k: no queries")
    neighbours = nearest_neighbours(query_features, gallery_features, max(ks))
    hits = gallery_labels[neighbours] == query_labels[:, None]
    return {int(k): float(hits[:, :k].any(axis=1).mean()) for k in ks}


def example_queries(labels: np.ndarray, count: int) -> list[int]:
    """Indices of the first video of each of the first `count` classes."""
    first = {}
    for index, label in enumerate(np.asarray(labels).tolist()):
        first.setdefault(label, index)
    return [first[label] for label in sorted(first)[:count]]


@gin.configurable(denylist=["backbone", "data"])
def retrieval(backbone: keras.Model, data: EvalData, *, ks: Sequence[int] = DEFAULT_KS,
              center: bool = True, num_examples: int = 8, verbose: bool = True) -> Result:
    """R@k of test videos querying train videos (gallery views: `data.gallery_input`,
    query views: `data.test_input`). center: subtract each set's mean feature.
    num_examples: example queries (one per class) listed with their nearest videos."""
    gallery, gallery_labels = features_lib.video_features(
        backbone, data.gallery(), key=data.key, total=data.num_train_videos, verbose=verbose)
    queries, query_labels = features_lib.video_features(
        backbone, data.test(), key=data.key, total=data.num_test_videos, verbose=verbose)
    if center:
        gallery = gallery - gallery.mean(axis=0)
        queries = queries - queries.mean(axis=0)
    recalls = recall_at_k(queries, query_labels, gallery, gallery_labels, ks)
    metrics = {f"recall@{k}": value for k, value in recalls.items()}
    metrics.update(num_queries=len(queries), num_gallery=len(gallery))
    shown = example_queries(query_labels, num_examples)
    neighbours = nearest_neighbours(queries[shown], gallery, NEIGHBOURS_SHOWN)
    examples = [{"query": q, "label": int(query_labels[q]), "neighbours": n.tolist(),
                 "neighbour_labels": gallery_labels[n].tolist()}
                for q, n in zip(shown, neighbours)]
    return Result(metrics=metrics, settings=dict(ks=[int(k) for k in ks], center=center),
                  neighbours=examples)
