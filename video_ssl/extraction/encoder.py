"""The model features are extracted with: a training run's encoder (through
`pretrained.load_encoder`) or a SavedModel of `video_ssl.export` (its `serve`
signature and the clip settings its metadata records). Either way the clips' shape,
frame rate and normalization are the model's, never the user's."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import tensorflow as tf

from video_ssl import serving
from video_ssl.data import views as views_lib
from video_ssl.pretrained import load_encoder


class ModelError(ValueError):
    """--model is neither a training run nor an exported SavedModel."""


@dataclasses.dataclass
class Encoder:
    """forward: clips (B, ...) float32 -> features (B, D). view: the evaluation view of
    the trained clip (one clip, one centre crop; the sampling replaces both)."""
    forward: Callable[[tf.Tensor], tf.Tensor]
    modality: str
    view: views_lib.ViewSpec
    facts: dict  # what meta.json records about the model
    flow: dict | None = None  # a flow encoder's flow settings, when recorded


def load_model(path: str, encoder: str | None = None) -> Encoder:
    """The encoder of a training run (the primary one unless `encoder` names another)
    or of an exported SavedModel directory."""
    if os.path.exists(os.path.join(path, serving.METADATA)):
        if encoder:
            raise ModelError(f"--encoder={encoder}: {path} is an exported SavedModel of one "
                             "encoder; --encoder applies to training runs")
        return _exported(path)
    if os.path.exists(os.path.join(path, "operative_config.gin")):
        return _trained(path, encoder)
    raise ModelError(f"--model={path}: neither a training run (no operative_config.gin) nor "
                     f"a SavedModel of video_ssl.export (no {serving.METADATA})")


def _trained(path: str, encoder: str | None) -> Encoder:
    pretrained = load_encoder(path, encoder=encoder)
    view = serving.eval_view(pretrained.clip, pretrained.normalization)
    view = dataclasses.replace(view, modalities=(pretrained.modality,),
                               **({"audio": pretrained.audio} if pretrained.audio else {}))
    backbone = pretrained.backbone
    forward = tf.function(lambda clips: backbone(clips, training=False), reduce_retracing=True)
    return Encoder(forward, pretrained.modality, view, {
        "model": path, "kind": "training run", "method": pretrained.method_name,
        "encoder": pretrained.encoder, "checkpoint": pretrained.checkpoint_path},
        flow=pretrained.flow)


def _exported(path: str) -> Encoder:
    with open(os.path.join(path, serving.METADATA)) as f:
        metadata = json.load(f)
    modality = metadata.get("modality", "rgb")
    if modality == "audio" and "audio" not in metadata:
        # Exports before the log-mel settings were recorded.
        raise ModelError(f"--model={path}: this exported audio encoder records no log-mel "
                         "settings; export it again or pass its training run directory")
    view = serving.eval_view(metadata["clip"], metadata["normalization"])
    view = dataclasses.replace(view, modalities=(modality,), **(
        {"audio": views_lib.AudioSpec(**metadata["audio"])} if modality == "audio" else {}))
    serve = tf.saved_model.load(path).signatures["serve"]
    return Encoder(lambda clips: serve(frames=clips)["features"], modality, view, {
        "model": path, "kind": "SavedModel", **metadata.get("source", {})},
        flow=metadata.get("flow"))
