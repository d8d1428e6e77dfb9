"""TF Model Garden's CVRL checkpoints (official/projects/video_ssl) as SimCLR runs.

CVRL (Qian et al. 2021) is SimCLR on two clips of one video; its released R3D-50
checkpoints (Kinetics-400 200 and 800 epochs, Kinetics-600 800 epochs, and the
ImageNet-inflated baseline; the project's README) are TF2 object-based checkpoints.
`--input` is the checkpoint prefix (`.../ckpt-71488`, or one of its files) or a folder
holding one (the newest is taken); it is read with `tf.train.load_checkpoint`.

The file. Model Garden's trainer saves `tf.train.Checkpoint(global_step, model,
optimizer, **model.checkpoint_items)` (core/base_trainer.py:200-208 of
tf-models-official 2.20, the version line numbers here refer to), and the CVRL model's
checkpoint_items are its backbone (projects/video_ssl/modeling/video_ssl_model.py:
130-133), which is also all linear evaluation reads (tasks/linear_eval.py:42). A
variable is saved once, under its shortest object path, each key ending in
`/.ATTRIBUTES/VARIABLE_VALUE`:

  backbone/layer_with_weights-0/kernel     the stem conv, (5, 7, 7, 3, 64)
  backbone/layer_with_weights-1/*          its BatchNorm (gamma, beta, moving_mean,
                                           moving_variance)
  backbone/layer_with_weights-<2+i>/*      bottleneck block i of 16, a BottleneckBlock3D
                                           (vision/modeling/layers/nn_blocks_3d.py:
                                           140-212): `_shortcut_conv` + `_norm0` (a
                                           stage's first block), `_temporal_conv` t×1×1
                                           + `_norm1`, `_spatial_conv` 1×3×3 (the
                                           spatial stride) + `_norm2`, `_expand_conv`
                                           1×1×1 + `_norm3`
  model/layer_with_weights-<k>/*           the head, k >= 1 (k = 0 is the backbone):
                                           (Dense, BatchNorm) x hidden_layer_num, then
                                           Dense (video_ssl_model.py:112-126)
  optimizer/*, */.OPTIMIZER_SLOT/*, global_step, save_counter   training state

The backbone is `r3d_50` (not `slow_r50`: see models/backbones/resnet3d.py), its width
read from the stem. The depth and every temporal kernel are read and checked; the
temporal strides leave no trace in the weights, so CVRL's are assumed (stem conv 2,
stem pool 1, blocks 1: configs/experiments/cvrl_pretrain_k600_200ep.yaml).

The run is this project's SimCLR with ρ = 2 (`simclr_rho2.gin`) with CVRL's clip bound
over it: 16 frames 2 stored frames apart (no frame-rate resampling), 224² crops
(configs/video_ssl.py:89-96 and 126-133), values in [0, 1] without mean/std
(zero_centering_image False, vision/configs/video_classification.py:53;
vision/ops/preprocess_ops_3d.py:429-449). The recipe's augmentation and clip sampling
stay this project's. CVRL's head, Dense -> BN -> ReLU three times then Dense 2048 ->
128 (configs/video_ssl.py:43-49, BN epsilon 1e-5), is this project's SimCLR projector
with 4 layers; the Dense biases before a BN are folded into its moving mean (the
same function; only BN momentum, 0.997 there and 0.9 here, differs, which matters
only to further training). A head without hidden layers is linear evaluation's
classifier (configs/video_ssl.py:118-120) and is left out, as is the optimizer state
(SGD momentum slots, iterations, hyperparameters) and the step counters.
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np
import tensorflow as tf

from video_ssl.importing.run import Converted
from video_ssl.importing.weights import ImportFailure, SourceTensors
from video_ssl.models.backbones import resnet3d
from video_ssl.models.backbones.layers import width

FORMAT = "cvrl"
RECIPE = "simclr_rho2.gin"
VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
STEM_KERNEL = (5, 7, 7)
DEPTH = 50
BLOCKS = sum(resnet3d.DEPTHS[DEPTH])
_BATCH_NORM = ("gamma", "beta", "moving_mean", "moving_variance")

# CVRL's pre-training clip (see the module docstring).
CLIP_BINDINGS = ["train_input.num_frames = 16", "train_input.frame_stride = 2",
                 "train_input.target_fps = None", "train_input.crop_size = 224",
                 "train_input.normalize = False"]


def input_exists(path: str) -> bool:
    """Whether `path` is a checkpoint prefix, one of its files or a folder."""
    return os.path.isdir(path) or os.path.isfile(path) or os.path.isfile(f"{path}.index")


def _key(*parts: str) -> str:
    return "/".join(parts) + VALUE


def _step(prefix: str) -> int:
    match = re.search(r"-(\d+)$", prefix)
    return int(match[1]) if match else -1


def _prefix(path: str) -> str:
    """The checkpoint prefix `path` names: itself, the prefix of one of its files, or
    the newest checkpoint of a folder (by its `checkpoint` file, else by step number)."""
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        prefixes = [p[:-len(".index")] for p in glob.glob(os.path.join(path, "*.index"))]
        if not prefixes:
            raise ImportFailure(f"{path}: no checkpoint in this folder (expected PREFIX.index "
                                "and PREFIX.data-* files of a TF2 checkpoint)")
        return max(prefixes, key=lambda p: (_step(p), p))
    return re.sub(r"\.(index|data-\d+-of-\d+)$", "", path)


def _read(path: str) -> SourceTensors:
    """The checkpoint's variables by key (the object graph itself left aside)."""
    prefix = _prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        tensors = {key: reader.get_tensor(key) for key in shapes if key != OBJECT_GRAPH}
    except (tf.errors.OpError, ValueError, IndexError) as error:  # IndexError: truncated
        reason = (getattr(error, "message", None) or str(error)).strip().splitlines()[0]
        raise ImportFailure(f"{prefix}: not a readable TensorFlow checkpoint ({reason[:200]}); "
                            "expected the prefix of a TF2 checkpoint (PREFIX.index and "
                            "PREFIX.data-*) or a folder holding one") from None
    if OBJECT_GRAPH not in shapes:
        raise ImportFailure(f"{prefix}: a name-based (TF1) checkpoint; expected a TF2 "
                            "object-based checkpoint as TF Model Garden's trainer writes")
    return SourceTensors(prefix, tensors)


def _batch_norm(source: SourceTensors, module: str, layer: str, channels: int,
                bias: np.ndarray | None = None) -> dict:
    """A Keras BatchNormalization's weights; `bias`: a preceding Dense's, folded into
    the moving mean."""
    weights = {f"{layer}/{name}": source.take(_key(module, name), (channels,))
               for name in _BATCH_NORM}
    if bias is not None:
        weights[f"{layer}/moving_mean"] = weights[f"{layer}/moving_mean"] - bias
    return weights


def _conv_bn(source: SourceTensors, block: str, conv: str, norm: str, layer: str,
             shape: tuple) -> dict:
    return {f"{layer}/kernel": source.take(_key(block, conv, "kernel"), shape),
            **_batch_norm(source, f"{block}/{norm}", f"{layer}_bn", shape[-1])}


def _stem_width(source: SourceTensors) -> tuple[np.ndarray, float]:
    """The stem kernel and the network's width multiplier (its width / 64)."""
    key = _key("backbone", "layer_with_weights-0", "kernel")
    if key not in source:
        raise ImportFailure(f"{source.path}: no tensor {key!r}; expected a TF Model Garden "
                            "video model checkpoint (its backbone saved as 'backbone')")
    kernel = source.take(key)
    multiplier = kernel.shape[-1] / 64 if kernel.ndim == 5 else 0
    if kernel.shape[:4] != (*STEM_KERNEL, 3) or width(64, multiplier) != kernel.shape[-1]:
        raise ImportFailure(f"{source.path}: tensor {key!r} has shape {kernel.shape}; expected "
                            f"{(*STEM_KERNEL, 3, 64)} (or another width), the RGB stem conv "
                            "of CVRL's R3D-50 (a 2-D ResNet's is 4-D)")
    return kernel, multiplier


def _backbone(source: SourceTensors) -> tuple[dict, float]:
    """The backbone's weights as `r3d_50`'s, and its width multiplier."""
    kernel, multiplier = _stem_width(source)
    blocks = {int(m[1]) for key in source.keys()
              if (m := re.match(r"backbone/layer_with_weights-(\d+)/_temporal_conv/", key))}
    if len(blocks) != BLOCKS:
        raise ImportFailure(f"{source.path}: {len(blocks)} bottleneck blocks under 'backbone/'; "
                            f"expected {BLOCKS}, CVRL's R3D-50 (r3d_50; this project builds no "
                            "other depth of Model Garden's ResNet3D)")
    channels = kernel.shape[-1]
    weights = {"conv1/kernel": kernel,
               **_batch_norm(source, "backbone/layer_with_weights-1", "conv1_bn", channels)}
    number = 2
    for stage, blocks, base, temporal in zip(resnet3d.STAGES, resnet3d.DEPTHS[DEPTH],
                                             resnet3d.BASE_WIDTHS, resnet3d.TEMPORAL_KERNELS):
        inner = width(base, multiplier)
        for index in range(blocks):
            block, name = f"backbone/layer_with_weights-{number}", f"{stage}_{index}"
            if index == 0:
                weights.update(_conv_bn(source, block, "_shortcut_conv", "_norm0",
                                        f"{name}_proj", (1, 1, 1, channels, inner * 4)))
            weights.update(_conv_bn(source, block, "_temporal_conv", "_norm1", f"{name}_a",
                                    (temporal, 1, 1, channels, inner)))
            weights.update(_conv_bn(source, block, "_spatial_conv", "_norm2", f"{name}_b",
                                    (1, 3, 3, inner, inner)))
            weights.update(_conv_bn(source, block, "_expand_conv", "_norm3", f"{name}_c",
                                    (1, 1, 1, inner, inner * 4)))
            channels = inner * 4
            number += 1
    return weights, multiplier


def _projector(source: SourceTensors, feature_dim: int) -> tuple[dict, list[str], str]:
    """CVRL's head under `model/` as the SimCLR projector: (its weights, bindings, what
    became of it); none when the file has no head, or it is a linear classifier."""
    layers = sorted({int(m[1]) for key in source.keys()
                     if (m := re.match(r"model/layer_with_weights-(\d+)/", key))})
    if not layers:
        return {}, [], "no projection head"
    if layers == [1]:
        source.drop(r"^model/", "the linear classifier of Model Garden's linear evaluation "
                               "(a head without hidden layers), not a projection head")
        return {}, [], "not its linear classifier"
    if layers != list(range(1, len(layers) + 1)) or len(layers) % 2 == 0:
        raise ImportFailure(f"{source.path}: the head under 'model/' has weighted layers "
                            f"{layers}; expected CVRL's (Dense, BatchNorm) x hidden layers, "
                            "then Dense: 1..2n+1")
    hidden_layers = len(layers) // 2
    weights, fan_in = {}, feature_dim
    for index in range(hidden_layers + 1):
        dense = f"model/layer_with_weights-{2 * index + 1}"
        kernel = source.take(_key(dense, "kernel"))
        if kernel.ndim != 2 or kernel.shape[0] != fan_in:
            raise ImportFailure(f"{source.path}: tensor {_key(dense, 'kernel')!r} has shape "
                                f"{kernel.shape}; expected ({fan_in}, units)")
        bias = source.take(_key(dense, "bias"), kernel.shape[1:])
        layer = f"projector/projector_linear{index}"
        weights[f"{layer}/kernel"] = kernel
        if index == hidden_layers:
            weights[f"{layer}/bias"] = bias
        else:
            weights.update(_batch_norm(source, f"model/layer_with_weights-{2 * index + 2}",
                                       f"projector/projector_bn{index}", kernel.shape[1], bias))
        hidden_dim, fan_in = fan_in, kernel.shape[1]
    bindings = [f"SimCLR.num_layers = {hidden_layers + 1}", f"SimCLR.hidden_dim = {hidden_dim}",
                f"SimCLR.embedding_dim = {fan_in}"]
    return weights, bindings, f"its {hidden_layers + 1}-layer projection head"


def convert(path: str, *, encoder: str | None = None) -> Converted:
    """Converts a CVRL checkpoint (see the module docstring); `encoder`: None or
    "backbone" (the file holds one network). Raises ImportFailure naming the file when
    it is not such a checkpoint or its network is not CVRL's R3D-50."""
    if encoder not in (None, "backbone"):
        raise ImportFailure(f"{path}: --encoder={encoder}: a CVRL checkpoint holds one "
                            "network; expected no --encoder (or 'backbone')")
    source = _read(path)
    source.drop(r"/\.OPTIMIZER_SLOT/", "optimizer slots (SGD momentum)")
    source.drop(r"^optimizer/", "optimizer state (iterations, hyperparameters)")
    source.drop(r"^(global_step|save_counter)/", "step counters")
    backbone, multiplier = _backbone(source)
    head, head_bindings, head_note = _projector(source, width(512, multiplier) * 4)
    bindings = ["BACKBONE = 'r3d_50'"]
    if multiplier != 1:
        bindings.append(f"BACKBONE_KWARGS = {{'width_multiplier': {multiplier!r}}}")
    return Converted(
        format=FORMAT, source=source, method="SimCLR", gin_files=[RECIPE],
        bindings=bindings + CLIP_BINDINGS + head_bindings, encoders={"rgb": backbone},
        heads={"projector": head} if head else {},
        description=(f"TF Model Garden CVRL checkpoint: R3D-50 x{multiplier:g}, {head_note}; "
                     "16 frames 2 apart at 224^2, values in [0, 1]"))
