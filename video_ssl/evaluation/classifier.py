"""Backbone + linear classifier trained with `model.fit`, tested by multi-view
averaging: what the linear probe and fine-tuning share.

The classifier is a functional Keras model: clips -> backbone -> [L2 normalization]
-> [BatchNorm] -> [dropout] -> Dense(num_classes) logits. With `train_backbone=False`
the backbone is frozen: its layers are not trainable, so its BatchNorm layers also run
in inference mode (running statistics) during `fit`.

Optimizers: 'sgd' (momentum, coupled L2 weight decay as in PyTorch) or 'adam' (Adam
with coupled L2, CoCLR's choice); learning-rate schedule 'cosine' (with linear
warm-up) or 'step' (x`decay_factor` at each of `decay_epochs`); the backbone's
learning rate may be scaled (CoCLR fine-tunes it at lr / 10).
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from video_ssl import optim
from video_ssl.evaluation import multiview
from video_ssl.evaluation.protocol import EvalData, Result, classification_metrics

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step")


def build_classifier(backbone: keras.Model, num_classes: int, *, train_backbone: bool,
                     dropout: float = 0.0, batch_norm: bool = False,
                     l2_normalize: bool = False, name: str = "video_classifier") -> keras.Model:
    """The backbone (trained in place when `train_backbone`) with a linear head.
    Head weights start as in PySlowFast and CoCLR: N(0, 0.01) kernel, zero bias."""
    backbone.trainable = train_backbone
    inputs = keras.Input(backbone.input_shape[1:], name="clips")
    x = backbone(inputs)
    if l2_normalize:
        x = keras.layers.UnitNormalization(name="l2_normalize")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="feature_bn")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name="logits")(x)
    return keras.Model(inputs, logits, name=name)


class _ScaledLearningRate:
    """Optimizer mixin: `scaled_variables` take `lr_scale` times the learning rate."""

    def __init__(self, *args, scaled_variables: Sequence = (), lr_scale: float = 1.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._scaled_ids = {id(v) for v in scaled_variables}
        self.lr_scale = float(lr_scale)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # update_step gets backend variables; decide per variable index here.
        self._lr_scales = [self.lr_scale if id(v) in self._scaled_ids else 1.0
                           for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * scale)


class _SGD(_ScaledLearningRate, optim.SGD):
    """Momentum SGD with coupled L2 (`optim.SGD`) and a scaled backbone learning rate."""


class _Adam(_ScaledLearningRate, keras.optimizers.Adam):
    """Adam with coupled L2 weight decay (PyTorch's Adam `weight_decay`, which CoCLR
    uses; Keras' own is decoupled) and a scaled backbone learning rate."""

    def __init__(self, *args, coupled_weight_decay: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.coupled_weight_decay = float(coupled_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        if self.coupled_weight_decay:
            gradient = gradient + self.coupled_weight_decay * tf.cast(variable, gradient.dtype)
        super().update_step(gradient, variable, learning_rate)


def learning_rate_schedule(learning_rate: float, *, schedule: str, total_steps: int,
                           steps_per_epoch: int, warmup_epochs: float = 0.0,
                           decay_epochs: Sequence[float] = (), decay_factor: float = 0.1):
    """'cosine': half-period cosine to 0 after a linear warm-up from 0; 'step':
    constant, multiplied by `decay_factor` at each of `decay_epochs`."""
    if schedule == "cosine":
        return optim.WarmupCosine(learning_rate, total_steps=total_steps,
                                  warmup_steps=int(round(warmup_epochs * steps_per_epoch)))
    if schedule == "step":
        if not decay_epochs:
            return learning_rate
        boundaries = [int(round(e * steps_per_epoch)) for e in decay_epochs]
        if boundaries != sorted(set(boundaries)):
            raise ValueError(f"decay_epochs={list(decay_epochs)}: expected increasing epochs")
        values = [learning_rate * decay_factor ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ValueError(f"schedule={schedule!r}: expected one of {SCHEDULES}")


def make_optimizer(name: str, learning_rate, *, weight_decay: float = 0.0,
                   momentum: float = 0.9, exclude_vectors: bool = True,
                   backbone: keras.Model | None = None, backbone_lr_scale: float = 1.0):
    """'sgd' or 'adam' with coupled L2 `weight_decay` (SGD: not on 1-D variables, BN and
    biases, when `exclude_vectors`, as PySlowFast) and `backbone_lr_scale` times the
    learning rate for the backbone's variables."""
    scaled = dict(scaled_variables=backbone.trainable_variables if backbone else (),
                  lr_scale=backbone_lr_scale)
    if name == "sgd":
        return _SGD(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
                    exclude_vectors=exclude_vectors, **scaled)
    if name == "adam":
        return _Adam(learning_rate=learning_rate, coupled_weight_decay=weight_decay, name="adam",
                     **scaled)
    raise ValueError(f"optimizer={name!r}: expected one of {OPTIMIZERS}")


def predict_videos(model: keras.Model, data: EvalData, *, num_classes: int,
                   verbose: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per test video, the softmax averaged over its views, and its label."""
    softmax = tf.function(lambda clips: tf.nn.softmax(model(clips, training=False)),
                          reduce_retracing=True)
    return multiview.average_over_views(softmax, data.test(num_classes=num_classes),
                                        key=data.key, total=data.num_test_videos,
                                        verbose=verbose)


def train_and_test(backbone: keras.Model, data: EvalData, *, num_classes: int,
                   train_backbone: bool, epochs: int, learning_rate: float,
                   reference_batch_size: int | None, optimizer: str, schedule: str,
                   warmup_epochs: float, decay_epochs: Sequence[float], weight_decay: float,
                   momentum: float, exclude_vectors: bool, backbone_lr_scale: float,
                   dropout: float, batch_norm: bool, l2_normalize: bool,
                   verbose="auto") -> Result:
    """Trains backbone + linear head on augmented train clips for `epochs` (one epoch
    = one pass's worth of batches), then scores every test video by its views.

    learning_rate: the rate at `reference_batch_size` (scaled linearly to
    `data.batch_size`; None: used as given).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: expected at least 2 classes")
    steps_per_epoch = max(1, data.num_train_videos // data.batch_size)
    total_steps = epochs * steps_per_epoch
    rate = (learning_rate if reference_batch_size is None else
            optim.scaled_learning_rate(learning_rate, data.batch_size, reference_batch_size))
    model = build_classifier(backbone, num_classes, train_backbone=train_backbone,
                             dropout=dropout, batch_norm=batch_norm, l2_normalize=l2_normalize)
    schedule_fn = learning_rate_schedule(
        rate, schedule=schedule, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
        warmup_epochs=warmup_epochs, decay_epochs=decay_epochs)
    model.compile(
        optimizer=make_optimizer(optimizer, schedule_fn, weight_decay=weight_decay,
                                 momentum=momentum, exclude_vectors=exclude_vectors,
                                 backbone=backbone if train_backbone else None,
                                 backbone_lr_scale=backbone_lr_scale),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=False)
    clips = data.train(num_classes=num_classes).map(
        lambda batch: (batch[data.key][:, 0], batch["label"]))
    history = model.fit(clips, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        verbose=verbose, shuffle=False)
    scores, labels = predict_videos(model, data, num_classes=num_classes,
                                    verbose=verbose != 0)
    metrics, confusion = classification_metrics(scores, labels, num_classes)
    metrics.update(train_loss=float(history.history["loss"][-1]),
                   train_accuracy=float(history.history["accuracy"][-1]),
                   steps=total_steps, learning_rate=rate)
    # An uncompiled twin sharing the layers: saves without the optimizer.
    exported = keras.Model(model.inputs, model.outputs, name=model.name)
    return Result(metrics=metrics, settings={}, scores=scores, labels=labels,
                  confusion=confusion, model=exported)
