"""Weighted k-nearest-neighbour classifier and an online kNN monitor for pre-training.

The classifier is the one used to monitor self-supervised training (Wu et al. 2018,
as in PySlowFast's contrastive_ssl): cosine similarity between L2-normalized
features, the k most similar memory-bank entries vote for their label with weight
exp(similarity / temperature), and the class with the largest summed weight wins.
"""
from __future__ import annotations

import functools
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from video_ssl.evaluation import embedding_health
from video_ssl.evaluation.multiview import average_over_views

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


def knn_predict(bank_features, bank_labels, query_features, *, k: int = DEFAULT_K,
                temperature: float = DEFAULT_TEMPERATURE, num_classes: int | None = None,
                chunk_size: int = 1024) -> np.ndarray:
    """Predicted label for each query row by a similarity-weighted vote of its k
    nearest memory-bank rows. Ties go to the smaller class index. k is capped at the
    bank size; queries are processed `chunk_size` rows at a time to bound memory."""
    bank = tf.math.l2_normalize(tf.convert_to_tensor(bank_features, tf.float32), axis=1)
    labels = tf.convert_to_tensor(bank_labels, tf.int32)
    queries = tf.math.l2_normalize(tf.convert_to_tensor(query_features, tf.float32), axis=1)
    if bank.shape[0] == 0:
        raise ValueError("kNN: the memory bank is empty; expected at least one labeled feature")
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(f"kNN: bank features have dimension {bank.shape[1]} but queries "
                         f"have {queries.shape[1]}; expected the same")
    if num_classes is None:
        num_classes = int(tf.reduce_max(labels)) + 1
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, queries.shape[0], chunk_size):
        similarity = tf.matmul(queries[start:start + chunk_size], bank, transpose_b=True)
        top_similarity, top_index = tf.math.top_k(similarity, k=k)
        votes = tf.one_hot(tf.gather(labels, top_index), num_classes)  # (n, k, C)
        weights = tf.exp(top_similarity / temperature)[..., None]
        predictions.append(tf.argmax(tf.reduce_sum(votes * weights, axis=1), axis=1))
    if not predictions:
        return np.zeros([0], np.int64)
    return tf.concat(predictions, axis=0).numpy()


def knn_accuracy(bank_features, bank_labels, query_features, query_labels, **kwargs) -> float:
    """Top-1 accuracy of `knn_predict` on labeled queries."""
    predictions = knn_predict(bank_features, bank_labels, query_features, **kwargs)
    return float(np.mean(predictions == np.asarray(query_labels)))


class KNNMonitor(keras.callbacks.Callback):
    """Logs the kNN top-1 accuracy of one of the model's encoders, and the health of its
    features on the memory bank (`embedding_health`), every `every_n_epochs` and after
    the last epoch.

    The memory bank is a labeled train split and the queries a test split, each a
    zero-argument callable returning a fresh dataset of one centre clip per video.
    `encoder` picks the encoder from the model; the datasets' clips are under
    `modality`. The values are added to the epoch logs as `knn_top1`, `embedding_std`,
    `effective_rank`, `alignment` and `uniformity`, each followed by `suffix` (so
    TensorBoard and metrics callbacks placed after this one see them). `alignment` pairs
    bank videos of the same class: the bank holds one clip per video. A collapsed
    embedding (`embedding_std` under `collapse_threshold(d)`) prints one warning line
    naming `encoder_name`.
    """

    def __init__(self, bank_dataset: Callable[[], tf.data.Dataset],
                 query_dataset: Callable[[], tf.data.Dataset], *, every_n_epochs: int = 1,
                 k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
                 encoder: Callable[[keras.Model], keras.Model] = lambda model: model.backbone,
                 encoder_name: str = "backbone", suffix: str = "", modality: str = "rgb"):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"KNNMonitor.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.bank_dataset = bank_dataset
        self.query_dataset = query_dataset
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.encoder = encoder
        self.encoder_name = encoder_name
        self.suffix = suffix
        self.modality = modality
        self._forward = None  # the encoder in inference mode, traced once

    @property
    def key(self) -> str:
        """The name of the kNN top-1 in the logs."""
        return "knn_top1" + self.suffix

    def evaluate(self, epoch: int = 0) -> dict[str, float]:
        """kNN top-1 accuracy and embedding health of the current weights, by log name;
        `epoch` (1-based, 0 before training) only names the time in a collapse warning."""
        if self._forward is None:
            self._forward = tf.function(functools.partial(self.encoder(self.model),
                                                          training=False),
                                        reduce_retracing=True)
        bank, bank_labels = average_over_views(self._forward, self.bank_dataset(),
                                               key=self.modality, verbose=False)
        queries, query_labels = average_over_views(self._forward, self.query_dataset(),
                                                   key=self.modality, verbose=False)
        # Unlabeled videos (label -1) take part in neither the vote nor the score.
        in_bank, in_queries = bank_labels >= 0, query_labels >= 0
        for split, labeled in (("memory-bank", in_bank), ("query", in_queries)):
            if not labeled.any():
                raise ValueError(f"kNN: the {split} split has no labels (clip/label/index)")
        values = {"knn_top1": knn_accuracy(
            bank[in_bank], bank_labels[in_bank], queries[in_queries],
            query_labels[in_queries], k=self.k, temperature=self.temperature)}
        values.update(embedding_health.health(bank[in_bank], bank_labels[in_bank]))
        self._warn_if_collapsed(values["embedding_std"], bank.shape[1], epoch)
        return {name + self.suffix: value for name, value in values.items()}

    def _warn_if_collapsed(self, std: float, dims: int, epoch: int) -> None:
        threshold = embedding_health.collapse_threshold(dims)
        if std < threshold:
            print(f"WARNING: encoder {self.encoder_name!r} has collapsed at epoch {epoch}: "
                  f"embedding_std{self.suffix} = {std:.2g} < "
                  f"{embedding_health.COLLAPSE_FRACTION}/sqrt({dims}) = {threshold:.2g} "
                  f"(its features barely differ between videos)", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if logs is not None and ((epoch + 1) % self.every_n_epochs == 0 or last):
            logs.update(self.evaluate(epoch + 1))
