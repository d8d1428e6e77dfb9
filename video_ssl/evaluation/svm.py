"""Linear SVM on frozen features, BraVe's protocol (Recasens et al. 2021;
deepmind/brave brave/evaluate/).

Features are pooled backbone features of augmented training clips (`train_epochs`
passes over the train videos, each clip with its own crop, flip and colour
augmentation), standardized (StandardScaler fit on the training features), and fed to
a one-vs-rest `sklearn.svm.LinearSVC`. The regularization C is fixed, by default at
1e-4, the value behind every number of the official code's results table
(deepmind/brave README.md:27-28, its command :68; the required `--svm_regularization`
flag, brave/evaluate_video_embeddings.py:45, :128, takes one value: no search). Given
several values, C is chosen on a validation split, the last `validation_fraction` of
the train shards (the converter deals videos round-robin over shards, so every shard
holds every class), and the SVM is then refit on all training clips. A test video's
score is the SVM's decision values averaged over its views (BraVe: 10 clips x 3 crops).
"""
from __future__ import annotations

import math
from typing import Sequence

import gin
import keras
import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from video_ssl.data.reader import count_records
from video_ssl.evaluation import features as features_lib
from video_ssl.evaluation import multiview
from video_ssl.evaluation.protocol import EvalData, Result, classification_metrics, require

DEFAULT_REGULARIZATION = 1e-4


def split_validation(files: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """(fit files, validation files): the last `fraction` of the shards, at least one,
    hold out the validation videos."""
    files = list(files)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"linear_svm.validation_fraction={fraction}: expected a fraction "
                         "in (0, 1)")
    if len(files) < 2:
        raise ValueError(f"linear_svm: choosing C on a validation split needs at least 2 "
                         f"train shards, got {len(files)} ({files}); write more shards or "
                         "bind a single linear_svm.regularization value")
    held_out = min(len(files) - 1, max(1, round(fraction * len(files))))
    return files[:-held_out], files[-held_out:]


def augmented_features(backbone: keras.Model, data: EvalData, files: Sequence[str], *,
                       epochs: int, num_classes: int, verbose: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of `epochs` x (number of videos in `files`) augmented clips."""
    batches = math.ceil(epochs * count_records(files) / data.batch_size)
    dataset = data.train(files, num_classes=num_classes).take(batches)
    return multiview.average_over_views(features_lib.inference(backbone), dataset,
                                        key=data.key, total=batches * data.batch_size,
                                        verbose=verbose)


class _Classifier:
    """StandardScaler + LinearSVC(C) with scores for all `num_classes` classes."""

    def __init__(self, regularization: float, num_classes: int, max_iter: int):
        self.scaler = StandardScaler()
        self.svm = LinearSVC(C=regularization, max_iter=max_iter)
        self.num_classes = num_classes

    def fit(self, features, labels) -> "_Classifier":
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(f"linear_svm: the clips to fit hold only class {classes.tolist()}; "
                             "expected at least 2 classes in every training split")
        self.svm.fit(self.scaler.fit_transform(features), labels)
        return self

    def scores(self, features) -> np.ndarray:
        """(N, num_classes) decision values; -inf for classes absent from training."""
        decision = self.svm.decision_function(self.scaler.transform(np.asarray(features)))
        if decision.ndim == 1:  # two classes: positive values favour classes_[1]
            decision = np.stack([-decision, decision], axis=1)
        scores = np.full((len(decision), self.num_classes), -np.inf)
        scores[:, self.svm.classes_] = decision
        return scores

    def accuracy(self, features, labels) -> float:
        return float(np.mean(np.argmax(self.scores(features), axis=1) == labels))


@gin.configurable(denylist=["backbone", "data"])
def linear_svm(backbone: keras.Model, data: EvalData, *, num_classes: int | None = None,
               regularization: float | Sequence[float] = DEFAULT_REGULARIZATION,
               train_epochs: int = 10, validation_fraction: float = 0.1,
               max_iter: int = 1000, verbose: bool = True) -> Result:
    """BraVe's linear protocol; see the module docstring. regularization: the SVM's C
    (default 1e-4, the official code's), or several values to choose from on the
    validation split. train_epochs: augmented passes over the train videos (BraVe: 10)."""
    require(num_classes, "linear_svm.num_classes")
    regularization = [float(c) for c in np.atleast_1d(regularization)]
    extract = dict(epochs=train_epochs, num_classes=num_classes, verbose=verbose)
    validation = {}
    if len(regularization) > 1:
        fit_files, val_files = split_validation(data.train_files, validation_fraction)
        fit_x, fit_y = augmented_features(backbone, data, fit_files, **extract)
        val_x, val_y = augmented_features(backbone, data, val_files, **extract)
        for c in regularization:
            model = _Classifier(c, num_classes, max_iter).fit(fit_x, fit_y)
            validation[c] = model.accuracy(val_x, val_y)
        # Ties go to the stronger regularization (smaller C).
        chosen = min(validation, key=lambda c: (-validation[c], c))
        train_x, train_y = np.concatenate([fit_x, val_x]), np.concatenate([fit_y, val_y])
    else:
        chosen = regularization[0]
        train_x, train_y = augmented_features(backbone, data, data.train_files, **extract)
    model = _Classifier(chosen, num_classes, max_iter).fit(train_x, train_y)
    forward = features_lib.inference(backbone)
    scores, labels = multiview.average_over_views(
        lambda clips: model.scores(forward(clips)), data.test(num_classes=num_classes),
        key=data.key, total=data.num_test_videos, verbose=verbose)
    metrics, confusion = classification_metrics(scores, labels, num_classes)
    metrics.update(regularization=chosen, train_accuracy=model.accuracy(train_x, train_y),
                   num_train_clips=len(train_y))
    if validation:
        metrics["validation_accuracy"] = {str(c): a for c, a in validation.items()}
    settings = dict(num_classes=num_classes, regularization=regularization,
                    train_epochs=train_epochs, validation_fraction=validation_fraction,
                    max_iter=max_iter)
    return Result(metrics=metrics, settings=settings, scores=scores, labels=labels,
                  confusion=confusion)
