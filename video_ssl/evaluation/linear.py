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

import gin
import keras

from video_ssl.evaluation import classifier
from video_ssl.evaluation.protocol import EvalData, Result, require
from video_ssl.optim import OptimizerSpec

DEFAULT_OPTIMIZER = OptimizerSpec("sgd", base_learning_rate=0.5, reference_batch_size=64,
                                  schedule="cosine", exclude_vectors=True)


@gin.configurable(denylist=["backbone", "data"])
def linear_probe(backbone: keras.Model, data: EvalData, *, num_classes: int | None = None,
                 epochs: int = 60, warmup_epochs: float = 8.0,
                 optimizer: OptimizerSpec = DEFAULT_OPTIMIZER, batch_norm: bool = False,
                 l2_normalize: bool = False, verbose="auto") -> Result:
    """Trains a linear head on the frozen `backbone` and tests it by multi-view
    averaging. optimizer: its `OptimizerSpec` (gin: `linear_probe.optimizer =
    @linear_probe/OptimizerSpec()`). See `classifier.train_and_test` for the other
    arguments."""
    settings = dict(num_classes=require(num_classes, "linear_probe.num_classes"), epochs=epochs,
                    warmup_epochs=warmup_epochs, optimizer=optimizer, batch_norm=batch_norm,
                    l2_normalize=l2_normalize)
    result = classifier.train_and_test(backbone, data, owner="linear_probe",
                                       train_backbone=False, backbone_lr_scale=1.0,
                                       dropout=0.0, verbose=verbose, **settings)
    report = {**settings, "optimizer": dataclasses.asdict(optimizer)}  # JSON-ready
    return dataclasses.replace(result, settings=report)
