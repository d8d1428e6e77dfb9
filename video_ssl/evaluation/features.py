"""Frozen-backbone features: the backbone in inference mode (BatchNorm uses its
running statistics), per clip or per video (the mean over a video's views)."""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from video_ssl.evaluation import multiview


def inference(backbone: keras.Model, *, l2_normalize: bool = False
              ) -> Callable[[tf.Tensor], tf.Tensor]:
    """clips -> pooled features (optionally L2-normalized), the backbone in inference
    mode, traced once for any batch size."""
    def forward(clips):
        features = backbone(clips, training=False)
        return tf.math.l2_normalize(features, axis=-1) if l2_normalize else features
    return tf.function(forward, reduce_retracing=True)


def video_features(backbone: keras.Model, dataset: tf.data.Dataset, *, key: str = "rgb",
                   l2_normalize: bool = True, total: int | None = None,
                   verbose: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(features (videos, D), labels (videos,)): per video, the mean over its views of
    the (L2-normalized, by default) pooled backbone features."""
    return multiview.average_over_views(inference(backbone, l2_normalize=l2_normalize),
                                        dataset, key=key, total=total, verbose=verbose)
