"""MLP probe: a classifier with one hidden layer on frozen features, BraVe's AudioSet
protocol (Recasens et al. 2021, §4.2 "Linear setting": "For AudioSet, we follow [40]
and use a fully-connected classifier, with one hidden layer of 512 units, in place of
the linear classifier", trained with "the Adam optimizer"; AudioSet is scored by "the
mean average precision").

As the linear probe, the backbone runs in inference mode (BatchNorm statistics frozen)
on augmented training clips and only the head learns: features -> Dense(hidden_units)
-> ReLU -> Dense(num_classes). `multi_label=True` (AudioSet: a clip carries several of
its 527 classes) trains on all of a video's clip/label/index with sigmoid
cross-entropy, scores test videos by their view-averaged sigmoids and reports mAP
(`protocol.multilabel_metrics`); otherwise the first label, softmax cross-entropy and
the classification metrics. The paper prints no learning rate, schedule, epochs or
batch size: gin_configs/eval/mlp_audioset.gin says what was chosen.
"""
from __future__ import annotations

import dataclasses

import gin
import keras

from video_ssl.evaluation import classifier
from video_ssl.evaluation.protocol import EvalData, Result, require
from video_ssl.optim import OptimizerSpec

DEFAULT_OPTIMIZER = OptimizerSpec("adam", base_learning_rate=1e-3, reference_batch_size=None,
                                  schedule="cosine", exclude_vectors=True)


@gin.configurable(denylist=["backbone", "data"])
def mlp_probe(backbone: keras.Model, data: EvalData, *, num_classes: int | None = None,
              hidden_units: int = 512, multi_label: bool = False, epochs: int = 10,
              warmup_epochs: float = 0.0, optimizer: OptimizerSpec = DEFAULT_OPTIMIZER,
              batch_norm: bool = False, l2_normalize: bool = False, dropout: float = 0.0,
              verbose="auto") -> Result:
    """Trains the MLP head on the frozen `backbone` and tests it by multi-view averaging
    (see the module docstring). hidden_units: the hidden layer's width (§4.2: 512).
    optimizer: its `OptimizerSpec` (gin: `mlp_probe.optimizer =
    @mlp_probe/OptimizerSpec()`). See `classifier.train_and_test` for the other
    arguments."""
    if hidden_units < 1:
        raise ValueError(f"mlp_probe.hidden_units={hidden_units}: expected at least 1 (a "
                         "linear classifier is @linear_probe)")
    settings = dict(num_classes=require(num_classes, "mlp_probe.num_classes"),
                    hidden_units=hidden_units, multi_label=multi_label, epochs=epochs,
                    warmup_epochs=warmup_epochs, optimizer=optimizer, batch_norm=batch_norm,
                    l2_normalize=l2_normalize, dropout=dropout)
    result = classifier.train_and_test(backbone, data, owner="mlp_probe",
                                       train_backbone=False, backbone_lr_scale=1.0,
                                       verbose=verbose, **settings)
    report = {**settings, "optimizer": dataclasses.asdict(optimizer)}  # JSON-ready
    return dataclasses.replace(result, settings=report)
