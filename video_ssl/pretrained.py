"""A pre-trained encoder from a training run's `model_dir`, for evaluation and export.

`load_encoder(model_dir)` reads `model_dir/operative_config.gin` (written by
`video_ssl.train`), builds the method it names under gin, restores the newest
checkpoint of `model_dir/checkpoints/` (or a given one) and returns one of the
method's encoders (the primary one unless named) with what an evaluation needs to cut
clips the way training did, read from the run's `input_spec.json`.

Gin: the training bindings are parsed into gin's global config only while the method
is built; gin's config is cleared afterwards. Because of that, gin must hold no
bindings when `load_encoder` is called (it refuses otherwise, rather than wiping
them): load the backbone first, then parse evaluation gin files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import re

import gin
import keras
import tensorflow as tf

from video_ssl import config
from video_ssl.data import input_spec
from video_ssl.data.views import AudioSpec
from video_ssl.methods.base import read_input_spec


class CheckpointError(ValueError):
    """A training directory, its operative config or a checkpoint is missing, or the
    checkpoint does not fit the configured model."""


@dataclasses.dataclass
class Pretrained:
    """An encoder and the facts about its training run an evaluation needs.

    backbone: keras.Model from clips (B, T, H, W, C) (audio: (B, frames, bins, 1)) to
      pooled features (B, D).
    encoder: its name in the method (e.g. "rgb", "flow", "narrow").
    modality: what it takes: "rgb", "flow" or "audio".
    method_name: the training method's class name (e.g. "MoCo").
    clip: num_frames, frame_stride, crop_size and target_fps of the training clips.
    normalization: mean and std the training pipeline normalized clips with
      (mean 0, std 1 when it did not normalize).
    checkpoint_path: the restored checkpoint, None for `random_init`.
    step: the optimizer step the checkpoint was saved at (0 for `random_init`).
    audio: for an audio encoder, the log-mel settings (`AudioSpec`) of its training
      view, which evaluation clips must share; None otherwise.
    flow: for a flow encoder, the settings its shards' flow was computed with
      (`optical_flow.SETTINGS_KEYS`), when the run recorded them; None otherwise.
    """
    backbone: keras.Model
    encoder: str
    modality: str
    method_name: str
    clip: dict
    normalization: dict
    checkpoint_path: str | None
    step: int
    audio: AudioSpec | None = None
    flow: dict | None = None


def _checkpoint_step(path: str) -> int | None:
    match = re.search(r"-(\d+)$", path)
    return int(match.group(1)) if match else None


def _resolve_checkpoint(model_dir: str, checkpoint: str | None) -> str:
    """The checkpoint prefix to restore: `checkpoint` (a prefix, or a directory whose
    newest checkpoint is taken), else the newest one of `model_dir/checkpoints`."""
    directory = checkpoint or os.path.join(model_dir, "checkpoints")
    if tf.io.gfile.isdir(directory):
        latest = tf.train.latest_checkpoint(directory)
        if latest is None:
            raise CheckpointError(f"{directory}: no checkpoint found (expected the "
                                  "checkpoints/ folder that video_ssl.train writes)")
        return latest
    if checkpoint is None:
        raise CheckpointError(f"{directory}: no such folder (expected the checkpoints/ "
                              "folder that video_ssl.train writes)")
    if not tf.io.gfile.exists(f"{checkpoint}.index"):
        raise CheckpointError(f"{checkpoint}: no such checkpoint (expected a checkpoint "
                              "prefix such as MODEL_DIR/checkpoints/ckpt-1000, or a folder)")
    return checkpoint


def _build_method(config_path: str, method_name: str) -> keras.Model:
    """Builds the method class `method_name` with its bindings in the (already parsed)
    operative config."""
    try:
        method_class = config.method_configurable(method_name)
    except ValueError:
        raise ValueError(f"{config_path}: the run trained {method_name!r}, which this version "
                         "of video_ssl does not know") from None
    return method_class()


@contextlib.contextmanager
def _quiet_tensorflow_warnings():
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def _restore(method: keras.Model, checkpoint_path: str) -> str | None:
    """Restores the method's variables (not the optimizer's) from `checkpoint_path`;
    returns why that failed, or None."""
    try:
        status = tf.train.Checkpoint(model=method).restore(checkpoint_path)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        return str(error).strip().splitlines()[0][:300]
    return None


def load_encoder(model_dir: str, checkpoint: str | None = None, *, encoder: str | None = None,
                 random_init: bool = False) -> Pretrained:
    """An encoder of the training run in `model_dir`.

    checkpoint: a checkpoint prefix (or a folder of checkpoints) to restore instead of
      the newest one in `model_dir/checkpoints/`.
    encoder: the encoder's name (`--encoder`); default the method's primary encoder.
    random_init: build the same encoder (same config, the caller's Keras seed) without
      restoring anything: the baseline a trained encoder is compared against.

    Raises CheckpointError (a ValueError) naming the path when model_dir, its
    operative config or the checkpoint is missing, and naming both files when the
    checkpoint does not fit the configured model. Gin: see the module docstring.
    """
    if not tf.io.gfile.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: no such training directory")
    config_path = os.path.join(model_dir, "operative_config.gin")
    if not tf.io.gfile.exists(config_path):
        raise CheckpointError(f"{config_path}: no such file (video_ssl.train writes it "
                              "after the first training step)")
    checkpoint_path = None if random_init else _resolve_checkpoint(model_dir, checkpoint)
    spec = read_input_spec(model_dir)
    name = encoder or spec["primary_encoder"]
    if name not in spec["encoders"]:
        raise CheckpointError(f"--encoder={name}: {model_dir} ({spec['method']}) has no such "
                              f"encoder; expected one of {sorted(spec['encoders'])}")
    source = spec["encoders"][name]
    view = input_spec.view_from_json(spec["views"][source["view"]])
    clip, normalization = input_spec.clip_settings(view)
    if gin.config_str():
        raise ValueError("load_encoder: gin already holds bindings; call it before parsing "
                         "other gin files (it parses the training config and clears gin)")
    with tf.io.gfile.GFile(config_path) as f:
        config_text = f.read()

    config.register_configurables()
    try:
        # Unknown configurables (e.g. a user's callback module) do not matter here.
        gin.parse_config(config_text, skip_unknown=True)
        method = _build_method(config_path, spec["method"])
    finally:
        gin.clear_config()

    step = 0
    if checkpoint_path is not None:
        with _quiet_tensorflow_warnings():
            failure = _restore(method, checkpoint_path)
            if failure:
                # Dropped now: collected later, a half-restored model logs a warning
                # for every value it did not take.
                method = None
                gc.collect()
        if failure:
            raise CheckpointError(f"checkpoint {checkpoint_path} does not match the model "
                                  f"configured by {config_path}: {failure}")
        step = _checkpoint_step(checkpoint_path) or 0
    return Pretrained(backbone=method.encoder_model(name), encoder=name,
                      modality=source["modality"], method_name=type(method).__name__,
                      clip=clip, normalization=normalization,
                      checkpoint_path=checkpoint_path, step=step,
                      audio=view.audio if source["modality"] == "audio" else None,
                      flow=spec.get("flow") if source["modality"] == "flow" else None)
