"""Nearest-neighbour video retrieval, CoCLR's protocol (Han et al. 2020,
eval/main_classifier.py `--retrieval`).

Each test video queries the train videos. A video's feature is the mean over its
views of the L2-normalized pooled backbone features (CoCLR: every half-overlapping
window of a test video, one clip of a train video); each set is then mean-centred
(optional) and similarity is cosine. R@k is the fraction of queries with a video of
their class among the k most similar train videos. The result carries the features and
the (test, train) similarity matrix (`Result.arrays["retrieval_features"]`, saved by
the evaluate CLI as `eval_NAME/retrieval_features.npz`: float32, 4 bytes x test x train
videos, 144 MB for UCF101 split 1). Two-stream retrieval averages the similarity
matrices of two encoders (`video_ssl.evaluation.fusion`, `evaluate --fuse_with`; or
`fused_recall` on saved files).
"""
from __future__ import annotations

from typing import Sequence

import gin
import keras
import numpy as np
import tensorflow as tf

from video_ssl.evaluation import features as features_lib
from video_ssl.evaluation import multiview
from video_ssl.evaluation.protocol import EvalData, Result

DEFAULT_KS = (1, 5, 10, 20, 50)
NEIGHBOURS_SHOWN = 3


def _checked_features(query_features, gallery_features) -> tuple[tf.Tensor, tf.Tensor]:
    """Both sets L2-normalized, after checking their shapes."""
    queries = tf.math.l2_normalize(tf.convert_to_tensor(query_features, tf.float32), axis=1)
    gallery = tf.math.l2_normalize(tf.convert_to_tensor(gallery_features, tf.float32), axis=1)
    if queries.shape.rank != 2 or gallery.shape.rank != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"retrieval: expected (queries, D) and (gallery, D) features, got "
                         f"{tuple(queries.shape)} and {tuple(gallery.shape)}")
    if gallery.shape[0] == 0:
        raise ValueError("retrieval: the gallery is empty")
    return queries, gallery


def cosine_similarity(query_features, gallery_features) -> np.ndarray:
    """(queries, gallery) float32 cosine similarities."""
    queries, gallery = _checked_features(query_features, gallery_features)
    return tf.matmul(queries, gallery, transpose_b=True).numpy()


def ranked_neighbours(similarity, k: int, *, chunk_size: int = 1024) -> np.ndarray:
    """(queries, min(k, gallery)) indices of the most similar gallery videos per row of
    a (queries, gallery) similarity matrix, most similar first (ties: the lower index
    first). Rows go `chunk_size` at a time."""
    similarity = np.asarray(similarity, np.float32)
    if similarity.ndim != 2 or similarity.shape[1] == 0:
        raise ValueError(f"retrieval: expected a (queries, gallery) similarity matrix with a "
                         f"non-empty gallery, got shape {similarity.shape}")
    k = min(int(k), similarity.shape[1])
    chunks = [tf.math.top_k(similarity[i:i + chunk_size], k=k).indices.numpy()
              for i in range(0, similarity.shape[0], chunk_size)]
    return np.concatenate(chunks) if chunks else np.zeros([0, k], np.int64)


def nearest_neighbours(query_features, gallery_features, k: int, *,
                       chunk_size: int = 1024) -> np.ndarray:
    """(queries, min(k, gallery)) indices of the most cosine-similar gallery rows, most
    similar first (ties: the lower index first). Queries go `chunk_size` at a time."""
    queries, gallery = _checked_features(query_features, gallery_features)
    k = min(int(k), gallery.shape[0])
    chunks = [tf.math.top_k(tf.matmul(queries[i:i + chunk_size], gallery, transpose_b=True),
                            k=k).indices.numpy()
              for i in range(0, queries.shape[0], chunk_size)]
    return np.concatenate(chunks) if chunks else np.zeros([0, k], np.int64)


def _recall(neighbours_of, query_labels, gallery_labels, ks, num_queries, num_gallery
            ) -> dict[int, float]:
    """{k: hit rate} given `neighbours_of(k)`, the (queries, k) ranked gallery indices."""
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"recall_at_k: expected positive ks, got {list(ks)}")
    if len(query_labels) != num_queries or len(gallery_labels) != num_gallery:
        raise ValueError("recall_at_k: expected one label per feature row")
    if len(query_labels) == 0:
        raise ValueError("recall_at_k: no queries")
    hits = gallery_labels[neighbours_of(max(ks))] == query_labels[:, None]
    return {int(k): float(hits[:, :k].any(axis=1).mean()) for k in ks}


def recall_at_k(query_features, query_labels, gallery_features, gallery_labels,
                ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: fraction of queries whose k most cosine-similar gallery rows include one of
    the query's label}. k larger than the gallery counts the whole gallery."""
    return _recall(lambda k: nearest_neighbours(query_features, gallery_features, k),
                   query_labels, gallery_labels, ks, len(query_features), len(gallery_features))


def recall_from_similarity(similarity, query_labels, gallery_labels,
                           ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """`recall_at_k` from a (queries, gallery) similarity matrix instead of features."""
    similarity = np.asarray(similarity)
    if similarity.ndim != 2:
        raise ValueError(f"retrieval: expected a (queries, gallery) similarity matrix, got "
                         f"shape {similarity.shape}")
    return _recall(lambda k: ranked_neighbours(similarity, k), query_labels, gallery_labels,
                   ks, *similarity.shape)


def fused_recall(paths: Sequence[str], weights: Sequence[float] | None = None,
                 ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """R@k of the weighted mean (equal weights by default) of the test x train
    similarity matrices that retrieval runs saved (`eval_NAME/retrieval_features.npz`),
    e.g. an RGB and a flow encoder's: CoCLR's two-stream † rows (Table 3: "the feature
    similarity scores from RGB and Flow networks are averaged"). The runs must share
    their query and gallery videos, in the same order."""
    saved = []
    for path in paths:
        with np.load(path) as arrays:
            missing = {"similarity", "query_labels", "gallery_labels"} - set(arrays.files)
            if missing:
                raise ValueError(f"{path}: expected a retrieval_features.npz with "
                                 f"{sorted(missing)}")
            saved.append({k: arrays[k] for k in ("similarity", "query_labels",
                                                 "gallery_labels")})
    for path, arrays in zip(paths[1:], saved[1:]):
        for key in ("query_labels", "gallery_labels"):
            if not np.array_equal(arrays[key], saved[0][key]):
                raise ValueError(f"{path}: its {key} differ from those of {paths[0]}; "
                                 "expected runs over the same videos in the same order")
    fused = multiview.fuse([a["similarity"] for a in saved], weights)
    return recall_from_similarity(fused, saved[0]["query_labels"], saved[0]["gallery_labels"],
                                  ks)


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
    similarity = cosine_similarity(queries, gallery)
    # For two-stream fusion later (`fuse_results`, `fused_recall`): the features as
    # compared (centred when `center`) and the similarity the recalls come from.
    result = similarity_result(similarity, query_labels, gallery_labels, ks=ks,
                               num_examples=num_examples)
    result.arrays["retrieval_features"].update(query_features=queries.astype(np.float32),
                                               gallery_features=gallery.astype(np.float32))
    result.settings.update(center=center)
    return result


def similarity_result(similarity, query_labels, gallery_labels, *,
                      ks: Sequence[int] = DEFAULT_KS, num_examples: int = 8) -> Result:
    """The retrieval `Result` of a (queries, gallery) similarity matrix: R@k, example
    queries (the first of each of `num_examples` classes) with their nearest gallery
    videos, and `arrays["retrieval_features"]` with the similarity and labels. Shared
    by the protocol and two-stream fusion (`video_ssl.evaluation.fusion`)."""
    similarity = np.asarray(similarity, np.float32)
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    recalls = recall_from_similarity(similarity, query_labels, gallery_labels, ks)
    metrics = {f"recall@{k}": value for k, value in recalls.items()}
    metrics.update(num_queries=int(similarity.shape[0]), num_gallery=int(similarity.shape[1]))
    shown = example_queries(query_labels, num_examples)
    neighbours = ranked_neighbours(similarity[shown], NEIGHBOURS_SHOWN)
    examples = [{"query": q, "label": int(query_labels[q]), "neighbours": n.tolist(),
                 "neighbour_labels": gallery_labels[n].tolist()}
                for q, n in zip(shown, neighbours)]
    saved = dict(query_labels=query_labels, gallery_labels=gallery_labels,
                 similarity=similarity)
    return Result(metrics=metrics, settings=dict(ks=[int(k) for k in ks]),
                  neighbours=examples, arrays={"retrieval_features": saved})
