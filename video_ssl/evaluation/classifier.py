"""Backbone + linear classifier trained with `model.fit`, tested by multi-view
averaging: what the linear probe and fine-tuning share.

The classifier is a functional Keras model: clips -> backbone -> [L2 normalization]
-> [BatchNorm] -> [Dense(hidden_units) + ReLU] -> [dropout] -> Dense(num_classes)
logits (the hidden layer: the MLP protocol). Multi-label training (`multi_label`,
AudioSet) uses every clip/label/index of a video, sigmoid cross-entropy and per-class
sigmoid scores; single-label training the first label, softmax cross-entropy. With `train_backbone=False`
the backbone is frozen: its layers are not trainable, so its BatchNorm layers also run
in inference mode (running statistics) during `fit`.

The optimizer is an `optim.OptimizerSpec` (the names pre-training uses), bound as
`<protocol>.optimizer = @<protocol>/OptimizerSpec()` with
`<protocol>/OptimizerSpec.<field>` bindings; its learning rate refers to
`reference_batch_size` and scales to the batch size, the warm-up is the protocol's
`warmup_epochs`, and the backbone's rate may be scaled (CoCLR fine-tunes it at lr / 10).
A setting the chosen optimizer or schedule does not read (e.g. `decay_epochs` with
'cosine') is an error naming the binding.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from video_ssl import console, optim
from video_ssl.evaluation import multiview
from video_ssl.evaluation.protocol import EvalData, Result, score_metrics

def build_classifier(backbone: keras.Model, num_classes: int, *, train_backbone: bool,
                     dropout: float = 0.0, batch_norm: bool = False,
                     l2_normalize: bool = False, hidden_units: int = 0,
                     name: str = "video_classifier") -> keras.Model:
    """The backbone (trained in place when `train_backbone`) with a linear head, or an
    MLP head with one hidden ReLU layer of `hidden_units`. The logits layer starts as
    in PySlowFast and CoCLR: N(0, 0.01) kernel, zero bias; the hidden layer with
    Keras' defaults (Glorot-uniform, zero bias)."""
    backbone.trainable = train_backbone
    inputs = keras.Input(backbone.input_shape[1:], name="clips")
    x = backbone(inputs)
    if l2_normalize:
        x = keras.layers.UnitNormalization(name="l2_normalize")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="feature_bn")(x)
    if hidden_units:
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def predict_videos(model: keras.Model, data: EvalData, *, num_classes: int,
                   multi_label: bool = False,
                   verbose: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per test video, the softmax (multi_label: the per-class sigmoid) averaged over its
    views, and its label (multi_label: the multi-hot of all its labels)."""
    activation = tf.nn.sigmoid if multi_label else tf.nn.softmax
    scores_of = tf.function(lambda clips: activation(model(clips, training=False)),
                            reduce_retracing=True)
    scores, labels = multiview.average_over_views(
        scores_of, data.test(num_classes=num_classes), key=data.key,
        total=data.num_test_videos, verbose=verbose)
    if not multi_label:
        return scores, labels
    label_sets = data.label_sets("test", num_classes)
    if len(label_sets) != len(labels) or not label_sets[np.arange(len(labels)), labels].all():
        raise ValueError(f"{data.test_source}: the test videos' label sets are not in the "
                         "order the test views were read")
    return scores, label_sets


def train_and_test(backbone: keras.Model, data: EvalData, *, owner: str, num_classes: int,
                   train_backbone: bool, epochs: int, warmup_epochs: float,
                   optimizer: optim.OptimizerSpec, backbone_lr_scale: float,
                   dropout: float, batch_norm: bool, l2_normalize: bool,
                   hidden_units: int = 0, multi_label: bool = False,
                   verbose="auto") -> Result:
    """Trains backbone + linear head on augmented train clips for `epochs` (one epoch
    = one pass's worth of batches), the first `warmup_epochs` warming the rate up, with
    the `optimizer` spec at `data.batch_size`; then scores every test video by its views.

    owner: the protocol's gin name, for error messages naming its bindings (the spec's
    are `owner`/OptimizerSpec.<field>).
    """
    if num_classes < 2:
        raise ValueError(f"{owner}.num_classes={num_classes}: expected at least 2 classes")
    if not isinstance(optimizer, optim.OptimizerSpec):
        raise ValueError(f"{owner}.optimizer: expected an OptimizerSpec (@{owner}/"
                         f"OptimizerSpec() with {owner}/OptimizerSpec.<field> bindings), "
                         f"got {optimizer!r}")
    if verbose == "auto":  # Keras' own 'auto' writes its live bar into files too
        verbose = console.progress_verbosity()
    steps_per_epoch = max(1, data.num_train_videos // data.batch_size)
    total_steps = epochs * steps_per_epoch
    model = build_classifier(backbone, num_classes, train_backbone=train_backbone,
                             dropout=dropout, batch_norm=batch_norm, l2_normalize=l2_normalize,
                             hidden_units=hidden_units)
    scaled = [(backbone.trainable_variables, backbone_lr_scale)] if train_backbone else []
    opt = optimizer.build(global_batch_size=data.batch_size, total_steps=total_steps,
                          warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
                          steps_per_epoch=steps_per_epoch, variable_lr_multipliers=scaled,
                          owner=f"{owner}/OptimizerSpec",
                          warmup_binding=f"{owner}.warmup_epochs={warmup_epochs!r}")
    if multi_label:
        loss, accuracy = keras.losses.BinaryCrossentropy(from_logits=True), []
        target = "labels"
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        accuracy = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        target = "label"
    model.compile(optimizer=opt, loss=loss, metrics=accuracy, jit_compile=False)
    clips = data.train(num_classes=num_classes, label_sets=multi_label).map(
        lambda batch: (batch[data.key][:, 0], batch[target]))
    history = model.fit(clips, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        verbose=verbose, shuffle=False, callbacks=optim.schedule_callbacks(opt))
    scores, labels = predict_videos(model, data, num_classes=num_classes,
                                    multi_label=multi_label, verbose=verbose != 0)
    metrics, confusion = score_metrics(scores, labels, num_classes)
    metrics.update(train_loss=float(history.history["loss"][-1]),
                   train_loss_per_epoch=[float(x) for x in history.history["loss"]],
                   steps=total_steps,
                   learning_rate=optimizer.learning_rate_at(data.batch_size))
    if accuracy:
        metrics["train_accuracy"] = float(history.history["accuracy"][-1])
    # An uncompiled twin sharing the layers: saves without the optimizer.
    exported = keras.Model(model.inputs, model.outputs, name=model.name)
    return Result(metrics=metrics, settings={}, scores=scores, labels=labels,
                  confusion=confusion, model=exported)
