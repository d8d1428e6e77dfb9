"""Linear probe: a linear classifier on frozen features, trained with `model.fit`.

The backbone runs in inference mode (BatchNorm statistics frozen) on augmented training
clips; only the head learns. Defaults are the ρ-paper's Kinetics protocol
(Feichtenhofer et al. 2021, §B.2): 60 epochs, SGD momentum 0.9, half-period cosine
after 8 warm-up epochs, weight decay 0, learning rate 0.5 at batch 64 (= the paper's
4.0 at 512, 10x ρMoCo's pre-training rate).
CoCLR's variant (Han et al. 2020, eval/main_classifier.py `--train_what last`) adds
L2 normalization then BatchNorm before the linear layer: `l2_normalize`, `batch_norm`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
import keras

from video_ssl.evaluation import classifier
from video_ssl.evaluation.protocol import EvalData, Result, require


@gin.configurable(denylist=["backbone", "data"])
def linear_probe(backbone: keras.Model, data: EvalData, *, num_classes: int | None = None,
                 epochs: int = 60, learning_rate: float = 0.5,
                 reference_batch_size: int | None = 64, optimizer: str = "sgd",
                 schedule: str = "cosine", warmup_epochs: float = 8.0,
                 decay_epochs: Sequence[float] = (), weight_decay: float = 0.0,
                 momentum: float = 0.9, exclude_vectors: bool = True,
                 batch_norm: bool = False, l2_normalize: bool = False,
                 verbose="auto") -> Result:
    """Trains a linear head on the frozen `backbone` and tests it by multi-view
    averaging. learning_rate is the rate at `reference_batch_size` (linearly scaled to
    the batch size). See `classifier.train_and_test` for the other arguments."""
    settings = dict(num_classes=require(num_classes, "linear_probe.num_classes"), epochs=epochs,
                    learning_rate=learning_rate, reference_batch_size=reference_batch_size,
                    optimizer=optimizer, schedule=schedule, warmup_epochs=warmup_epochs,
                    decay_epochs=list(decay_epochs), weight_decay=weight_decay,
                    momentum=momentum, exclude_vectors=exclude_vectors,
                    batch_norm=batch_norm, l2_normalize=l2_normalize)
    result = classifier.train_and_test(backbone, data, owner="linear_probe",
                                       train_backbone=False, backbone_lr_scale=1.0,
                                       dropout=0.0, verbose=verbose, **settings)
    return dataclasses.replace(result, settings=settings)
