"""Fine-tuning: all weights trained with a dropout + linear head, with `model.fit`.

Defaults are the ρ-paper's UCF101/HMDB51 protocol (Feichtenhofer et al. 2021, §B.6,
§B.7): 200 epochs, SGD momentum 0.9, learning rate 0.025 at batch 64, x0.1 at epochs
60, 120 and 180, no warm-up, weight decay 0, dropout 0.8 (gin_configs/eval/
finetune_common.gin also names PySlowFast's variant). CoCLR's protocol (Han et al. 2020,
eval/main_classifier.py `--train_what ft`): Adam with coupled L2 1e-3, learning rate
1e-3 and the backbone at lr / 10 (`backbone_lr_scale`), dropout 0.9, step decay.
"""
from __future__ import annotations

import dataclasses

import gin
import keras

from video_ssl.evaluation import classifier
from video_ssl.evaluation.protocol import EvalData, Result, require
from video_ssl.optim import OptimizerSpec

DEFAULT_OPTIMIZER = OptimizerSpec("sgd", base_learning_rate=0.025, reference_batch_size=64,
                                  schedule="step", decay_epochs=(60, 120, 180),
                                  exclude_vectors=True)


@gin.configurable(denylist=["backbone", "data"])
def finetune(backbone: keras.Model, data: EvalData, *, num_classes: int | None = None,
             epochs: int = 200, warmup_epochs: float = 0.0,
             optimizer: OptimizerSpec = DEFAULT_OPTIMIZER, backbone_lr_scale: float = 1.0,
             dropout: float = 0.8, verbose="auto") -> Result:
    """Fine-tunes `backbone` (in place) with a linear head and tests the result by
    multi-view averaging. optimizer: its `OptimizerSpec` (gin: `finetune.optimizer =
    @finetune/OptimizerSpec()`), the head's; the backbone learns at
    `backbone_lr_scale` times its rate. See `classifier.train_and_test`."""
    settings = dict(num_classes=require(num_classes, "finetune.num_classes"), epochs=epochs,
                    warmup_epochs=warmup_epochs, optimizer=optimizer,
                    backbone_lr_scale=backbone_lr_scale, dropout=dropout)
    result = classifier.train_and_test(backbone, data, owner="finetune",
                                       train_backbone=True, batch_norm=False,
                                       l2_normalize=False, verbose=verbose, **settings)
    report = {**settings, "optimizer": dataclasses.asdict(optimizer)}  # JSON-ready
    return dataclasses.replace(result, settings=report)
