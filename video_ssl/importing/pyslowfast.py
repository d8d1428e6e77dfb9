"""PySlowFast `projects/contrastive_ssl` checkpoints (`.pyth`) as runs of the ρ-methods.

The file (slowfast/utils/checkpoint.py:133-144, `save_checkpoint`) is a `torch.save`d
dict: `epoch` (0-based: the file of epoch 200 says 199, :142), `model_state`,
`optimizer_state`, `cfg` (`cfg.dump()`, the whole training config as YAML) and, with
mixed precision, `scaler_state`. The model is a `ContrastiveModel`
(slowfast/models/contrastive.py:37-123); its state dict holds

  backbone.*               the online network: a `ResNet` (video_model_builder.py:445-643)
                           whose `head` (head_helper.py:198-303) holds the projection MLP
                           (`head.projection`) and BYOL's predictor (`head.predictors.0`)
  backbone_hist.*          MoCo's and BYOL's momentum encoder, a copy of all of that
  queue_x, ptr, iter       MoCo's and BYOL's queue of keys and counters
  swav_prototypes.weight   SwAV's prototypes; queue_swav its queue
  knn_mem.memory           the memory bank of the training-time kNN monitor

The cfg chooses the run: CONTRASTIVE.TYPE the method and DATA.TRAIN_CROP_NUM_TEMPORAL
ρ, so the recipe is gin_configs/<method>_rho<ρ>.gin. Bound over it: the backbone
(MODEL.ARCH "slow", RESNET.DEPTH 50 or 101: `slow_r50` / `slow_r101`, width from
RESNET.WIDTH_PER_GROUP), the source's clip (DATA.NUM_FRAMES frames, DATA.SAMPLING_RATE
apart at DATA.TARGET_FPS, DATA.TRAIN_CROP_SIZE) and its normalization ((x / 255 -
DATA.MEAN) / DATA.STD, datasets/kinetics.py:375-405; a BGR network, DATA.
REVERSE_INPUT_CHANNEL, gets its stem's input channels reversed). R-101 fits `slow_r101`
only when RESNET.NUM_BLOCK_TEMP_KERNEL gives every res4 block its temporal kernel
(PySlowFast's default gives it to the first 6 of 23). A file without a cfg is refused:
its weights do not say ρ nor the clip.

Heads go into the method's heads where they have the same layers (Linear [-> BN] ->
ReLU ... -> Linear; their sizes are bound from the cfg): MoCo's and BYOL's projectors,
BYOL's predictor, SwAV's projector and prototypes. PySlowFast's SimCLR projector has no
BatchNorm (CONTRASTIVE.BN_MLP False in configs/contrastive_ssl) while this project's
SimCLR projector has, so it is left out, as is any head of another layout. Left out
too: the momentum encoder (the run's starts as a copy of the online one), the queues,
counters, kNN memory and the optimizer state.

--encoder: "backbone" (default) imports the online encoder; "backbone_hist" imports
MoCo's or BYOL's momentum encoder (backbone and heads) in its place.
"""
from __future__ import annotations

import dataclasses

import yaml

from video_ssl import config
from video_ssl.importing import torch_file
from video_ssl.importing.run import Converted
from video_ssl.importing.torch_layers import (BATCHES_TRACKED, BATCHES_TRACKED_REASON,
                                              batch_norm, conv_kernel, linear, tensors_in)
from video_ssl.importing.weights import ImportFailure, SourceTensors
from video_ssl.models.backbones import resnet3d
from video_ssl.models.backbones.layers import width

ENCODERS = ("backbone", "backbone_hist")
BACKBONES = {50: "slow_r50", 101: "slow_r101"}

# PySlowFast's defaults (slowfast/config/defaults.py) of the cfg keys read here; a
# dumped cfg holds every key, older ones may lack some.
_DEFAULTS = {
    "MODEL.MODEL_NAME": "SlowFast",                       # :396
    "MODEL.ARCH": "slowfast",                             # :393
    "CONTRASTIVE.TYPE": "mem",                            # :42
    "CONTRASTIVE.DIM": 128,                               # :27
    "CONTRASTIVE.NUM_MLP_LAYERS": 1,                      # :54
    "CONTRASTIVE.MLP_DIM": 2048,                          # :57
    "CONTRASTIVE.BN_MLP": False,                          # :60
    "CONTRASTIVE.PREDICTOR_DEPTHS": [],                   # :78
    "RESNET.TRANS_FUNC": "bottleneck_transform",          # :296
    "RESNET.NUM_GROUPS": 1,                               # :299
    "RESNET.WIDTH_PER_GROUP": 64,                         # :302
    "RESNET.STRIDE_1X1": False,                           # :308
    "RESNET.DEPTH": 50,                                   # :317
    "RESNET.NUM_BLOCK_TEMP_KERNEL": [[3], [4], [6], [3]],  # :321
    "RESNET.SPATIAL_STRIDES": [[1], [2], [2], [2]],       # :324
    "RESNET.SPATIAL_DILATIONS": [[1], [1], [1], [1]],     # :327
    "DETECTION.ENABLE": False,                            # :950
    "DATA.NUM_FRAMES": 8,                                 # :666
    "DATA.SAMPLING_RATE": 8,                              # :669
    "DATA.MEAN": [0.45, 0.45, 0.45],                      # :687
    "DATA.STD": [0.225, 0.225, 0.225],                    # :693
    "DATA.TRAIN_CROP_SIZE": 224,                          # :713
    "DATA.TARGET_FPS": 30,                                # :720
    "DATA.REVERSE_INPUT_CHANNEL": False,                  # :746
    "DATA.TRAIN_CROP_NUM_TEMPORAL": 1,                    # :749
}

# The cfg of a Slow-only ResNet that is this project's slow_r50 / slow_r101: no
# temporal kernel in the stem, res2-res3, 3 in res4-res5 ("slow",
# video_model_builder.py:77-83), bottlenecks with the stride on the 3x3 conv.
_SLOW_RESNET = {
    "MODEL.ARCH": "slow",
    "RESNET.TRANS_FUNC": "bottleneck_transform",
    "RESNET.NUM_GROUPS": 1,
    "RESNET.STRIDE_1X1": False,
    "RESNET.SPATIAL_STRIDES": [[s] for s in resnet3d.SPATIAL_STRIDES],
    "RESNET.SPATIAL_DILATIONS": [[1], [1], [1], [1]],
    "DETECTION.ENABLE": False,
}


@dataclasses.dataclass(frozen=True)
class _Method:
    """A CONTRASTIVE.TYPE as this project's method: its class, recipe prefix, whether
    it has a momentum encoder, and its projector's bindings (`batch_norm`: the binding
    of the projector's BatchNorm, or True when the method always has it)."""
    name: str
    recipe: str
    momentum: bool
    projector_layers: str
    batch_norm: str | bool = True
    predictor_layers: str | None = None
    prototypes: str | None = None


METHODS = {
    "moco": _Method("MoCo", "moco", momentum=True, projector_layers="MoCo.num_layers",
                    batch_norm="MoCo.batch_norm_in_head"),
    "byol": _Method("BYOL", "byol", momentum=True, projector_layers="BYOL.projector_layers",
                    predictor_layers="BYOL.predictor_layers"),
    "simclr": _Method("SimCLR", "simclr", momentum=False, projector_layers="SimCLR.num_layers"),
    "swav": _Method("SwAV", "swav", momentum=False, projector_layers="SwAV.num_layers",
                    prototypes="SwAV.num_prototypes"),
}

def convert(path: str, *, encoder: str | None = None) -> Converted:
    """The run of the checkpoint at `path` (see the module); `encoder` "backbone"
    (default) or "backbone_hist". Raises ImportFailure (or TorchFileError) naming the
    file when it is not such a checkpoint or its model is not one this maps."""
    encoder = encoder or "backbone"
    if encoder not in ENCODERS:
        raise ImportFailure(f"{path}: --encoder={encoder}: expected 'backbone' (the online "
                            "encoder) or 'backbone_hist' (MoCo's or BYOL's momentum encoder)")
    checkpoint = torch_file.load(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model_state"), dict):
        raise ImportFailure(f"{path}: no 'model_state' dict (expected what PySlowFast's "
                            "save_checkpoint writes: epoch, model_state, optimizer_state, cfg)")
    cfg = _Config(path, checkpoint.get("cfg"))
    method = _method(cfg)
    if encoder == "backbone_hist" and not method.momentum:
        raise ImportFailure(f"{path}: --encoder=backbone_hist: a {method.name} checkpoint has "
                            "no momentum encoder; expected --encoder=backbone")
    depth, multiplier = _architecture(cfg)
    rho = int(cfg["DATA.TRAIN_CROP_NUM_TEMPORAL"])
    recipe = f"{method.recipe}_rho{rho}.gin"
    try:
        config.resolve_gin_file(recipe)
    except ValueError:
        raise ImportFailure(f"{path}: ρ = {rho} (cfg DATA.TRAIN_CROP_NUM_TEMPORAL) has no "
                            f"recipe {recipe} in gin_configs/") from None

    source = _source_tensors(path, checkpoint)
    backbone = _backbone(source, f"{encoder}.", depth, multiplier,
                         bool(cfg["DATA.REVERSE_INPUT_CHANNEL"]))
    heads, head_bindings = _heads(source, f"{encoder}.", cfg, method,
                                  feature_dim=width(512, multiplier) * 4)
    _drop_the_rest(source, encoder, method)
    bindings = [f"BACKBONE = {BACKBONES[depth]!r}"]
    if multiplier != 1:
        bindings.append(f"BACKBONE_KWARGS = {{'width_multiplier': {multiplier!r}}}")
    bindings += _clip_bindings(cfg) + head_bindings
    epoch = checkpoint.get("epoch")
    trained = f", {int(epoch) + 1} epochs" if isinstance(epoch, int) else ""
    return Converted(
        format="pyslowfast", source=source, method=method.name, gin_files=[recipe],
        bindings=bindings, encoders={"rgb": backbone}, heads=heads,
        description=(f"PySlowFast ContrastiveModel: {cfg['CONTRASTIVE.TYPE']} ρ={rho}{trained}, "
                     f"Slow R-{depth} {cfg['DATA.NUM_FRAMES']}x{cfg['DATA.SAMPLING_RATE']} "
                     f"at {cfg['DATA.TRAIN_CROP_SIZE']}^2 ({encoder})"))


class _Config:
    """The checkpoint's cfg (the YAML `cfg.dump()` wrote), read by dotted key with
    PySlowFast's defaults for keys it lacks."""

    def __init__(self, path: str, text):
        if not isinstance(text, str):
            raise ImportFailure(f"{path}: no 'cfg' YAML string (expected the training config "
                                "PySlowFast's save_checkpoint stores: it gives the method, ρ "
                                "and the clip, which the weights alone do not)")
        try:
            self._tree = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ImportFailure(f"{path}: cfg is not YAML ({str(error).splitlines()[0]})") from None
        if not isinstance(self._tree, dict):
            raise ImportFailure(f"{path}: cfg is not a YAML mapping of PySlowFast's config")
        self.path = path

    def __getitem__(self, key: str):
        node = self._tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return _DEFAULTS[key]
            node = node[part]
        return node

    def expect(self, key: str, expected, what: str) -> None:
        if self[key] != expected:
            raise ImportFailure(f"{self.path}: cfg {key} = {self[key]!r}; expected {expected!r} "
                                f"({what})")


def _method(cfg: _Config) -> _Method:
    cfg.expect("MODEL.MODEL_NAME", "ContrastiveModel", "a projects/contrastive_ssl checkpoint")
    kind = cfg["CONTRASTIVE.TYPE"]
    if kind not in METHODS:
        raise ImportFailure(f"{cfg.path}: cfg CONTRASTIVE.TYPE = {kind!r}; expected one of "
                            f"{sorted(METHODS)} (the ρ-methods)")
    return METHODS[kind]


def _architecture(cfg: _Config) -> tuple[int, float]:
    """(depth, width multiplier) of the checkpoint's Slow ResNet, when it is one."""
    what = "a Slow-only ResNet: slow_r50 / slow_r101"
    for key, expected in _SLOW_RESNET.items():
        cfg.expect(key, expected, what)
    depth = cfg["RESNET.DEPTH"]
    if depth not in BACKBONES:
        raise ImportFailure(f"{cfg.path}: cfg RESNET.DEPTH = {depth!r}; expected one of "
                            f"{sorted(BACKBONES)} ({what})")
    # ResStage (resnet_helper.py:611-614): a stage's first NUM_BLOCK_TEMP_KERNEL blocks
    # take its temporal kernel, the others 1; here every res4-res5 block has 3.
    temporal = cfg["RESNET.NUM_BLOCK_TEMP_KERNEL"]
    blocks = resnet3d.DEPTHS[depth]
    if any(kernel > 1 and first[0] < n for first, n, kernel in zip(
            temporal, blocks, resnet3d.TEMPORAL_KERNELS)):
        raise ImportFailure(
            f"{cfg.path}: cfg RESNET.NUM_BLOCK_TEMP_KERNEL = {temporal!r} leaves later res4/res5 "
            f"blocks without their temporal kernel; {BACKBONES[depth]} has it in every block "
            f"(expected {[[n] for n in blocks]!r})")
    return depth, cfg["RESNET.WIDTH_PER_GROUP"] / 64


def _source_tensors(path: str, checkpoint: dict) -> SourceTensors:
    """model_state's tensors under their keys; those of the other entries (optimizer
    and scaler state) as "<entry>/<key>/...", left out."""
    tensors = dict(checkpoint["model_state"])
    for entry, value in checkpoint.items():
        if entry != "model_state":
            tensors.update(tensors_in(value, entry))
    source = SourceTensors(path, tensors)
    source.drop(lambda key: "/" in key, "training state besides the model (optimizer, "
                                        "loss scaler)")
    return source


def _conv_bn(source, prefix: str, conv: str, bn: str, layer: str, shape: tuple) -> dict:
    """`prefix.conv` and `prefix.bn` as Keras `layer` and `layer_bn`."""
    return {f"{layer}/kernel": conv_kernel(source, f"{prefix}.{conv}.weight", shape),
            **batch_norm(source, f"{prefix}.{bn}", f"{layer}_bn", shape[0])}


def _backbone(source: SourceTensors, prefix: str, depth: int, multiplier: float,
              bgr: bool) -> dict:
    """The ResNet under `prefix` as `slow_r<depth>`'s weights. Names: the stem
    `s1.pathway0_stem.{conv,bn}` (stem_helper.py:101-113, 181-190), blocks
    `s<2..5>.pathway0_res<i>` (resnet_helper.py:666-686) with the shortcut
    `branch1`/`branch1_bn` (:484-496) and `branch2.{a,b,c}` + `_bn` (:332-375)."""
    stem = width(64, multiplier)
    weights = _conv_bn(source, f"{prefix}s1.pathway0_stem", "conv", "bn", "conv1",
                       (stem, 3, 1, 7, 7))
    if bgr:  # DATA.REVERSE_INPUT_CHANNEL: the net takes BGR (datasets/utils.py:89-90)
        weights["conv1/kernel"] = weights["conv1/kernel"][:, :, :, ::-1, :]
    channels = stem
    for number, (stage, blocks, base, stride, temporal) in enumerate(zip(
            resnet3d.STAGES, resnet3d.DEPTHS[depth], resnet3d.BASE_WIDTHS,
            resnet3d.SPATIAL_STRIDES, resnet3d.TEMPORAL_KERNELS), start=2):
        inner = width(base, multiplier)
        out = inner * 4
        for index in range(blocks):
            block, name = f"{prefix}s{number}.pathway0_res{index}", f"{stage}_{index}"
            if channels != out or (stride != 1 and index == 0):
                weights.update(_conv_bn(source, block, "branch1", "branch1_bn", f"{name}_proj",
                                        (out, channels, 1, 1, 1)))
            for conv, shape in (("a", (inner, channels, temporal, 1, 1)),
                                ("b", (inner, inner, 1, 3, 3)), ("c", (out, inner, 1, 1, 1))):
                weights.update(_conv_bn(source, f"{block}.branch2", conv, f"{conv}_bn",
                                        f"{name}_{conv}", shape))
            channels = out
    return weights


def _mlp(source: SourceTensors, prefix: str, name: str, sizes: list[int],
         with_bn: bool) -> dict:
    """PySlowFast's MLPHead at `prefix` (head_helper.py:161-187: nn.Sequential of Linear,
    then per further layer [BN ->] ReLU -> Linear; no bias before a BN) as this project's
    `mlp_head` `name` of the same sizes (`sizes`: input, hidden..., output)."""
    weights, index = {}, 0
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = layer == len(sizes) - 2
        weights.update(linear(source, f"{prefix}.{index}", f"{name}/{name}_linear{layer}",
                              fan_in, fan_out, bias=last or not with_bn))
        index += 1
        if not last and with_bn:
            weights.update(batch_norm(source, f"{prefix}.{index}", f"{name}/{name}_bn{layer}",
                                      fan_out))
            index += 1
        index += 1  # the ReLU
    return weights


def _heads(source: SourceTensors, prefix: str, cfg: _Config, method: _Method,
           feature_dim: int) -> tuple[dict, list[str]]:
    """The heads the method shares with the file ({attribute: weights}) and the bindings
    that give them the file's sizes; the other heads are left out, saying why."""
    layers, hidden, dim = (int(cfg[f"CONTRASTIVE.{k}"]) for k in ("NUM_MLP_LAYERS", "MLP_DIM",
                                                                  "DIM"))
    bn_mlp = bool(cfg["CONTRASTIVE.BN_MLP"])
    head = f"{prefix}head"
    heads, bindings = {}, []
    if layers == 1:  # a plain Linear (head_helper.py:261-262), as a 1-layer mlp_head
        heads["projector"] = linear(source, f"{head}.projection", "projector/projector_linear0",
                                     feature_dim, dim)
    elif isinstance(method.batch_norm, bool) and bn_mlp != method.batch_norm:
        source.drop(rf"^{head}\.projection\.",
                    f"the projection MLP (BN_MLP {bn_mlp}): this project's {method.name} "
                    f"projector {'has' if method.batch_norm else 'has no'} BatchNorm, a "
                    "different structure")
    else:
        heads["projector"] = _mlp(source, f"{head}.projection.projection", "projector",
                                  [feature_dim] + [hidden] * (layers - 1) + [dim], bn_mlp)
    if "projector" in heads:
        bindings += [f"{method.projector_layers} = {layers}", f"{method.name}.hidden_dim = "
                     f"{hidden}", f"{method.name}.embedding_dim = {dim}"]
        if isinstance(method.batch_norm, str):
            bindings.append(f"{method.batch_norm} = {bn_mlp and layers > 1}")

    # Predictors (head_helper.py:288-303): MLPHeads from DIM to DIM through MLP_DIM; one
    # of depth >= 2 with BN is this project's BYOL predictor (which shares hidden_dim).
    depths = list(cfg["CONTRASTIVE.PREDICTOR_DEPTHS"] or [])
    if method.predictor_layers and len(depths) == 1 and depths[0] > 1 and bn_mlp \
            and "projector" in heads:
        heads["predictor"] = _mlp(source, f"{head}.predictors.0.projection", "predictor",
                                  [dim] + [hidden] * (depths[0] - 1) + [dim], True)
        bindings.append(f"{method.predictor_layers} = {depths[0]}")
    elif depths:
        source.drop(rf"^{head}\.predictors\.",
                    f"predictor MLPs of depths {depths} (BN_MLP {bn_mlp}): not the "
                    f"structure of a {method.name} predictor here")

    if method.prototypes:  # nn.Linear(DIM, 1000, bias=False) (contrastive.py:96-100)
        prototypes = source.take("swav_prototypes.weight")
        if prototypes.ndim != 2 or prototypes.shape[1] != dim:
            raise ImportFailure(f"{source.path}: tensor 'swav_prototypes.weight' has shape "
                                f"{prototypes.shape}, expected (prototypes, {dim})")
        heads["prototypes"] = {"prototypes/kernel": prototypes}
        bindings.append(f"{method.prototypes} = {prototypes.shape[0]}")
    return heads, bindings


def _drop_the_rest(source: SourceTensors, encoder: str, method: _Method) -> None:
    if method.momentum and encoder == "backbone":
        source.drop(r"^backbone_hist\.", "the momentum encoder (the run's starts as a copy of "
                    "the online one)")
    elif method.momentum:
        source.drop(r"^backbone\.", "the online encoder (--encoder=backbone_hist imports the "
                    "momentum encoder)")
    source.drop(r"^(queue_x|ptr|iter|queue_swav)$", "queues and counters of training")
    source.drop(r"^knn_mem\.", "the memory bank of the training-time kNN monitor")
    source.drop(rf"\.{BATCHES_TRACKED}$", BATCHES_TRACKED_REASON)


def _clip_bindings(cfg: _Config) -> list[str]:
    """The source's clip and normalization over the recipe's (see the module)."""
    def value(values):
        values = [float(v) for v in values]
        return repr(values[0]) if len(set(values)) == 1 else repr(tuple(values))
    return [f"train_input.num_frames = {int(cfg['DATA.NUM_FRAMES'])}",
            f"train_input.frame_stride = {int(cfg['DATA.SAMPLING_RATE'])}",
            f"train_input.target_fps = {float(cfg['DATA.TARGET_FPS'])!r}",
            f"train_input.crop_size = {int(cfg['DATA.TRAIN_CROP_SIZE'])}",
            "train_input.normalize = True",
            f"train_input.mean = {value(cfg['DATA.MEAN'])}",
            f"train_input.std = {value(cfg['DATA.STD'])}"]
