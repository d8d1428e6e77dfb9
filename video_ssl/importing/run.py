"""Writes a converted checkpoint as a training run directory.

An imported checkpoint becomes a run of the method the paper trained it with, built
from this project's recipe for that run (e.g. `moco_rho2.gin` for a ρMoCo ρ=2 Slow
R-50), with the source model's clip and normalization bound over the recipe's. So
`pretrained.load_encoder`, `evaluate` (also `--fuse_with`), `export`, feature
extraction and `init_checkpoints` take it as they take a run of `video_ssl.train`:

  DIR/operative_config.gin   the bindings that build the method
  DIR/input_spec.json        its views and encoders (the source model's input)
  DIR/checkpoints/ckpt-0     the method's weights, the imported encoders (and heads)
                             among them (momentum encoders copied from them)
  DIR/import.json            the source file, its format, what was imported and
                             which of its tensors were left out, and why

DIR is written under a temporary name and renamed when complete: a failed import
leaves nothing.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os

import gin
import keras
import numpy as np
import tensorflow as tf

from video_ssl import atomic, config
from video_ssl.importing.weights import ImportFailure, SourceTensors, assign

IMPORT_FILE = "import.json"


@dataclasses.dataclass
class Converted:
    """One checkpoint file converted for this project's architectures.

    format: the importer's format name ("pyslowfast", "coclr", ...).
    source: the file's tensors, each taken by the converter or dropped with a reason.
    method: the class name of the method the run is written as (e.g. "MoCo").
    gin_files: this project's recipe(s) for the paper's run (e.g. ["moco_rho2.gin"]).
    bindings: gin bindings over the recipe: the source model's clip, normalization
      and backbone options (e.g. "train_input.crop_size = 224").
    encoders: {encoder name: {Keras variable path: array}}: the weights of each of the
      method's encoders the file holds, in Keras layout.
    description: one line saying what the file holds.
    heads: {method attribute: {Keras variable path: array}}: the weights of the
      method's projection heads (or other parts that are Keras models) the file holds.
    """
    format: str
    source: SourceTensors
    method: str
    gin_files: list[str]
    bindings: list[str]
    encoders: dict[str, dict[str, np.ndarray]]
    description: str
    heads: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


def _build_method(converted: Converted):
    if gin.config_str():
        raise ValueError("write_run: gin already holds bindings; call it before parsing "
                         "other gin files (it parses the recipe and clears gin)")
    # The recipe's train.* bindings do not concern the method.
    config.parse_gin(converted.gin_files, converted.bindings, skip_unknown=True)
    method = config.method_configurable(converted.method)()
    return method, gin.operative_config_str()


def _head(method, name: str, source: str) -> keras.Model:
    head = getattr(method, name, None)
    if not isinstance(head, keras.Model):
        raise ImportFailure(f"{source}: converted head {name!r} is not a part of "
                            f"{type(method).__name__}")
    return head


def write_run(converted: Converted, output_dir: str, *, overwrite: bool = False) -> str:
    """Writes `converted` as a run in `output_dir` (see the module); returns the
    checkpoint prefix. Raises `weights.ImportFailure` naming the file when a source
    tensor was neither taken nor dropped, or an encoder weight is missing or of
    another shape; nothing is written then."""
    converted.source.check_consumed()
    try:
        method, operative = _build_method(converted)
        for name, weights in converted.encoders.items():
            assign(method.encoder_model(name), weights, source=converted.source.path)
        for name, weights in converted.heads.items():
            assign(_head(method, name, converted.source.path), weights,
                   source=converted.source.path)
        method.after_initialization()
    finally:
        gin.clear_config()
    dropped = collections.Counter(converted.source.dropped.values())
    record = {"format": converted.format, "source": os.path.abspath(converted.source.path),
              "description": converted.description, "method": converted.method,
              "recipe": converted.gin_files, "bindings": converted.bindings,
              "encoders": sorted(converted.encoders), "heads": sorted(converted.heads),
              "left_out": [{"tensors": n, "why": why} for why, n in dropped.items()]}
    prefix = []

    def write(tmp: str) -> None:
        tf.io.gfile.makedirs(tmp)
        for name, text in (("operative_config.gin", operative),
                           ("input_spec.json", json.dumps(method.input_spec(), indent=1)),
                           (IMPORT_FILE, json.dumps(record, indent=1))):
            with tf.io.gfile.GFile(os.path.join(tmp, name), "w") as f:
                f.write(text)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=method),
                                             os.path.join(tmp, "checkpoints"), max_to_keep=1)
        prefix.append(os.path.basename(manager.save(checkpoint_number=0)))

    atomic.write_directory(output_dir, write, overwrite=overwrite)
    return os.path.join(output_dir, "checkpoints", prefix[0])
