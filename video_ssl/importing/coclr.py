"""CoCLR's released checkpoints (TengdaHan/CoCLR, `.pth.tar`): InfoNCE, UberNCE and
CoCLR runs of S3D at 128x128, RGB or flow, as a run of this project's recipe.

What a file holds (file:line refer to the official code): `torch.save` of {epoch,
state_dict, best_acc, optimizer, iteration} (main_nce.py:271-277, main_coclr.py:329-335,
utils/utils.py:13), `state_dict` being the whole model's (model/pretrain.py):
- `encoder_q` (pretrain.py:49-54): 0 the S3D (backbone/s3dg.py), 1 global average
  pooling, 2 a 1x1x1 conv 1024 -> 1024, 3 ReLU, 4 a 1x1x1 conv 1024 -> 128: the trained
  network and its projection head, on pooled features the same map as this project's
  head (FC-1024, ReLU, FC-128, no BN) -> the method's encoder and "projector";
- `encoder_k` (pretrain.py:57-62), its momentum copy -> left out: the run's momentum
  encoder starts as a copy of encoder_q, as main_coclr.py:283-290 does when it starts
  a stage from a checkpoint;
- `queue`, `queue_ptr` (pretrain.py:69-71); UberNCE's and CoCLR's `queue_label`
  (pretrain.py:208, 316); CoCLR's `queue_second`, `queue_vname` (pretrain.py:310-314)
  -> left out, training state that training refills (main_coclr.py:263-267, 277-281
  drop them too);
- CoCLR only: `sampler` (pretrain.py:300-305), the frozen network of the other
  modality, laid out as encoder_q -> the CoCLR run's other encoder and
  "sampler_projector".
The S3D names every tensor twice: its modules are attributes (`Conv_1a`, `Mixed_3b`,
...) and also members of the `block1` ... `block5` Sequentials (s3dg.py:143-197). The
named set is read; each `blockN.i` alias is checked to hold the same values, then left
out. The file says neither the dataset nor the modality: the queue size gives the
recipe (16384: K400, else UCF101's; the size is bound either way), `--encoder` the
modality of encoder_q ("rgb" or "flow"; by default read from the released file names,
e.g. `...-rgb-...`, `InfoNCE-ucf101-f-...`, `...-flow-...`).

Input (main_nce.py:43, 45, 59, 207-209; the same in main_coclr.py): 32 consecutive
frames (ds = 1) at 128x128, values in [0, 1] normalized with ImageNet's mean and std.
Flow networks take 3 channels (backbone/select_backbone.py:4-7, never called with
another `first_channel`): the flow JPEG (128, dy, dx) normalized the same way, which
this project's 2-channel flow becomes inside the backbone (`s3d(flow_input=
"coclr_image")`, `CoCLRFlowImage`; bound for every stream, RGB unaffected).
"""
from __future__ import annotations

import functools
import os
import re

import numpy as np

from video_ssl.importing import s3d_layout, torch_file
from video_ssl.importing.run import Converted
from video_ssl.importing.torch_layers import (BATCHES_TRACKED, BATCHES_TRACKED_REASON,
                                              KerasWeights, is_tensor, keras_shapes,
                                              tensors_in)
from video_ssl.importing.weights import ImportFailure, SourceTensors

MODALITIES = ("rgb", "flow")
CHECKPOINT_KEYS = ("epoch", "state_dict")
# The networks in a state_dict: encoder_q and, in CoCLR files, the sampler.
TRAINED, SAMPLER = "encoder_q", "sampler"
BACKBONE, PROJECTION = ".0.", (".2", ".4")  # encoder_q's Sequential (pretrain.py:49-54)
FEATURES, HIDDEN, EMBEDDING = 1024, 1024, 128  # pretrain.py:32, 47-54; select_backbone:5
K400_QUEUE = 16384  # the official README's K400 commands (--moco-k 16384)

# Our S3D block -> CoCLR's module (s3dg.py:143-192).
_BLOCKS = {"conv1a": "Conv_1a", "conv2b": "Conv_2b", "conv2c": "Conv_2c",
           **{block: f"Mixed_{block[5:]}" for block in s3d_layout.INCEPTION_WIDTHS}}
# A unit's (conv, BatchNorm) under its block's module: STConv3d's conv1/bn1 (spatial)
# and conv2/bn2 (temporal) (s3dg.py:39-47), BasicConv3d's conv/bn (s3dg.py:11-16), the
# Inception branches' Sequentials (s3dg.py:93-107).
_PARTS = {"spatial": ("conv1", "bn1"), "temporal": ("conv2", "bn2"), None: ("conv", "bn"),
          "b0": ("branch0.0.conv", "branch0.0.bn"), "b1a": ("branch1.0.conv", "branch1.0.bn"),
          "b1b_spatial": ("branch1.1.conv1", "branch1.1.bn1"),
          "b1b_temporal": ("branch1.1.conv2", "branch1.1.bn2"),
          "b2a": ("branch2.0.conv", "branch2.0.bn"),
          "b2b_spatial": ("branch2.1.conv1", "branch2.1.bn1"),
          "b2b_temporal": ("branch2.1.conv2", "branch2.1.bn2"),
          "b3b": ("branch3.1.conv", "branch3.1.bn")}
# blockN.i -> the module it holds (s3dg.py:147, 155-158, 166-169, 180-186, 194-197).
ALIASES = {"block1.0": "Conv_1a", "block2.1": "Conv_2b", "block2.2": "Conv_2c",
           "block3.1": "Mixed_3b", "block3.2": "Mixed_3c",
           **{f"block4.{i}": f"Mixed_4{c}" for i, c in enumerate("bcdef", start=1)},
           "block5.1": "Mixed_5b", "block5.2": "Mixed_5c"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_BINDINGS = ["train_input.num_frames = 32", "train_input.frame_stride = 1",
                  "train_input.crop_size = 128", f"train_input.mean = {IMAGENET_MEAN}",
                  f"train_input.std = {IMAGENET_STD}"]
FLOW_BINDING = "BACKBONE_KWARGS = {'flow_input': 'coclr_image'}"


def convert(path: str, *, encoder: str | None = None) -> Converted:
    """The run of `path` (see the module); `encoder`: the modality of its encoder_q,
    "rgb" or "flow" (default: from the file's name)."""
    checkpoint = torch_file.load(path)
    state, source = _source_tensors(path, checkpoint)
    method = _method(path, state)
    modality = _modality(path, encoder)
    shapes = _s3d_shapes()
    networks = {modality: TRAINED}
    heads = {"projector": _head(source, TRAINED)}
    if method == "CoCLR":
        networks["flow" if modality == "rgb" else "rgb"] = SAMPLER
        heads["sampler_projector"] = _head(source, SAMPLER)
    encoders = {}
    for name, network in networks.items():
        encoders[name] = _backbone(source, network, shapes)
        _drop_aliases(source, state, network)
    _drop_training_state(source)
    queue = state["queue"].shape[-1]
    roles = ", ".join(f"{network} the {name} network" for name, network in networks.items())
    return Converted(format="coclr", source=source, method=method,
                     gin_files=[_recipe(method, modality, queue)],
                     bindings=_bindings(method, modality, queue, "flow" in networks),
                     encoders=encoders, heads=heads,
                     description=f"CoCLR's {method} (model/pretrain.py) of S3D networks, "
                                 f"{roles}; queue {queue}; epoch {checkpoint.get('epoch')}")


def _source_tensors(path: str, checkpoint) -> tuple[dict, SourceTensors]:
    """The state_dict (a DataParallel "module." prefix removed) and every tensor of the
    file: the state_dict's under their names, the optimizer's under "optimizer.*"."""
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in CHECKPOINT_KEYS):
        raise ImportFailure(f"{path}: not a CoCLR checkpoint (expected the dict main_nce.py "
                            f"and main_coclr.py save, with {list(CHECKPOINT_KEYS)}; got "
                            f"{_describe(checkpoint)})")
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not state or not all(map(is_tensor, state.values())):
        raise ImportFailure(f"{path}: state_dict is {_describe(state)}, expected a dict of "
                            "tensors")
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel model
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, SourceTensors(path, {**state, **tensors_in(checkpoint.get("optimizer"),
                                                             "optimizer")})


def _describe(value) -> str:
    return f"keys {list(value)[:6]}" if isinstance(value, dict) else type(value).__name__


def _method(path: str, state: dict) -> str:
    """InfoNCE, UberNCE or CoCLR, from the model's parts; fails unless its networks
    are CoCLR's S3D."""
    if not any(k.startswith(f"{TRAINED}.") for k in state) or "queue" not in state:
        raise ImportFailure(f"{path}: not a checkpoint of CoCLR's InfoNCE, UberNCE or CoCLR "
                            "model (model/pretrain.py: expected encoder_q.* and queue tensors)")
    stem = f"{TRAINED}{BACKBONE}Conv_1a.conv1.weight"
    gated = any(".gating_" in k for k in state)
    if stem not in state or gated:
        found = "S3D-G ('s3dg')" if gated else "another backbone"
        raise ImportFailure(f"{path}: encoder_q is {found}; only CoCLR's S3D ('s3d', "
                            f"backbone/s3dg.py without gating, expected {stem!r}) is supported")
    if any(k.startswith(f"{SAMPLER}.") for k in state):
        return "CoCLR"
    return "UberNCE" if "queue_label" in state else "InfoNCE"


def _modality(path: str, encoder: str | None) -> str:
    if encoder is not None:
        if encoder not in MODALITIES:
            raise ImportFailure(f"--encoder={encoder}: expected the modality of the file's "
                                f"encoder_q, one of {MODALITIES}")
        return encoder
    words = set(re.split(r"[^a-z0-9]+", os.path.basename(path).lower()))
    found = {m for m, names in (("rgb", {"rgb"}), ("flow", {"flow", "f"})) if words & names}
    if len(found) != 1:
        raise ImportFailure(f"{path}: the file does not say whether encoder_q is the RGB or "
                            "the flow network and its name does not either (the released "
                            "names hold -rgb-, -flow- or -f-); pass --encoder=rgb or "
                            "--encoder=flow")
    return found.pop()


@functools.cache
def _s3d_shapes() -> dict[str, tuple]:
    from video_ssl.models import build_backbone
    return keras_shapes(build_backbone("s3d"))


def _backbone(source: SourceTensors, network: str, shapes) -> dict[str, np.ndarray]:
    """Our S3D's weights from the named modules of `network`'s S3D."""
    prefix = f"{network}{BACKBONE}"
    weights = KerasWeights(source, shapes)
    for layer, block, part in s3d_layout.units():
        conv, bn = (f"{prefix}{_BLOCKS[block]}.{name}" for name in _PARTS[part])
        weights.conv(f"{conv}.weight", layer)
        weights.batch_norm(bn, f"{layer}_bn")
    return weights.weights


def _drop_aliases(source: SourceTensors, state: dict, network: str) -> None:
    """Leaves out `network`'s blockN.i tensors, each checked to equal its named one."""
    prefix = f"{network}{BACKBONE}"
    aliases = set()
    for alias, module in ALIASES.items():
        for key in (k for k in state if k.startswith(f"{prefix}{alias}.")):
            named = f"{prefix}{module}.{key[len(f'{prefix}{alias}.'):]}"
            if named not in state or not np.array_equal(state[key], state[named]):
                raise ImportFailure(f"{source.path}: {key!r} is not a copy of {named!r} "
                                    "(backbone/s3dg.py registers each module twice)")
            aliases.add(key)
    source.drop(aliases.__contains__, "aliases of the named S3D modules (backbone/s3dg.py "
                "registers each module twice)")


def _head(source: SourceTensors, network: str) -> dict[str, np.ndarray]:
    """The projection head of `network` (1x1x1 convs 2 and 4 of its Sequential) as the
    method's two-layer head."""
    shapes = {"projector/projector_linear0/kernel": (FEATURES, HIDDEN),
              "projector/projector_linear1/kernel": (HIDDEN, EMBEDDING)}
    weights = KerasWeights(source, shapes)
    for index, module in enumerate(PROJECTION):
        weights.dense(f"{network}{module}", f"projector/projector_linear{index}",
                      pointwise_conv=True)
    return weights.weights


def _drop_training_state(source: SourceTensors) -> None:
    source.drop(r"^encoder_k\.", "the momentum (key) encoder: the run's starts as a copy of "
                "encoder_q, as main_coclr.py:283-290 starts a stage")
    source.drop(r"^queue", "queues (training state that training refills; main_coclr.py "
                "drops them too)")
    source.drop(r"^optimizer/", "Adam's state (training state)")
    source.drop(rf"\.{BATCHES_TRACKED}$", BATCHES_TRACKED_REASON)


def _recipe(method: str, modality: str, queue: int) -> str:
    if method == "CoCLR":
        return "gin_configs/coclr_k400.gin" if queue == K400_QUEUE else "gin_configs/coclr_ucf101.gin"
    if method == "UberNCE":
        return "gin_configs/ubernce_rgb.gin"
    return f"gin_configs/infonce_{modality}.gin"


def _bindings(method: str, modality: str, queue: int, has_flow: bool) -> list[str]:
    bindings = [f"QUEUE_SIZE = {queue}", *INPUT_BINDINGS]
    if method == "CoCLR":
        bindings.append(f"CoCLR.modality = '{modality}'")
    elif method == "UberNCE":
        bindings.append(f"pair_views.modality = '{modality}'")
    if has_flow:
        bindings.append(FLOW_BINDING)
    return bindings
