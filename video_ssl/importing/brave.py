"""BraVe's released checkpoints (deepmind/brave, README.md:29-36: V/AF TSM ×1 and ×2,
V/A, V/VVV) as runs of this project's BraVe recipes.

The file: `np.save` of {"params", "state", "config"}, which the official evaluation
loads with `np.load(path, allow_pickle=True).item()` and feeds to
`brave.get_model(BraveConfig(**config))` (brave/evaluate_video_embeddings.py:97-104).
`params` and `state` are Haiku trees {module path: {name: array}} (dicts, or the
FlatMapping containers of older dm-haiku versions; requirements.txt pins 0.0.4);
`npy_file` reads them without pickle's permission to run code. The modules, as
`brave/models/brave/brave.py:159-217` and `modules.py` name them:

  narrow_video_embedding/TSMResNetV2/...   the narrow network (tsm_resnet.py)
  broad_video_embedding/TSMResNetV2/...    a broad visual network: RGB (3 input
                                           channels) or flow (2) here
  broad_audio_embedding/res_net_v2/...     the broad log-mel network (resnet.py)
  shared_project/{projector,predictor}/... the projector and predictor, one for every
                                           view (brave.py:159-161)
  shared_project_1, _2, _3                 copies `init` creates (brave.py:191-204)
                                           that no apply function uses: dropped

A ResNet-50 v2 tree maps onto `layers.resnet50_v2_2d`'s layers: the stem conv
(tsm_resnet_stem / initial_conv) -> conv1; unit u block b -> res{u+2}_{b} with
batch_norm -> _preact_bn, shortcut_conv -> _proj, conv_0 / batch_norm_1 -> _a / _a_bn,
conv_1 / batch_norm_2 -> _b / _b_bn, conv_2 -> _c; the last batch_norm -> final_bn.
Haiku's 2-D conv kernels are (kh, kw, in, out) as Keras'; BN scale/offset (1, 1, 1, C)
-> gamma/beta, the running statistics `<bn>/~/mean_ema|var_ema/average` ->
moving_mean/variance (the EMAs' `hidden` and `counter` are dropped: BN at inference
reads `average`). Paths are matched with or without Haiku's "~" segments. The TSM
networks are built with BraVe's channel-shift layout (`tsm.py`, `shift_layout`); BN
decay 0.9 and eps 1e-5 are those of the recipes already.

The projector (Linear -> BN -> ReLU -> Linear -> BN) and predictor (Linear -> BN ->
ReLU -> Linear) have the structure of this project's heads, whose linear layers before
a BN have no bias: that bias is folded into the BN's moving mean (exact: BN subtracts
the batch mean in training). The official code applies the one shared pair to every
view; the recipes (like the paper, §3.1, eq. 5) give each broad modality and each
narrow-broad pair its own, so the shared pair is copied into every one of them (and
dropped, the reason recorded, where the views' feature widths differ: one shared head
cannot take them all, nor could the official code's).

The run: the recipe of the views the file holds (`RECIPES`), with bindings for the
widths, the shift layout, the heads' sizes and the file's `config` (narrow/broad
frames, frame rate = input_video_sample_rate / step, crop; the log-mel settings) and
`train_input.normalize = False`: BraVe feeds frames in [0, 1] (augmentations.py:29-34).
`encoder="narrow"` imports the narrow network alone (the one the paper evaluates) and
drops the rest of the file, for files that hold networks this layout does not know.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from video_ssl.importing import npy_file
from video_ssl.importing.run import Converted
from video_ssl.importing.weights import ImportFailure, SourceTensors

FORMAT = "brave"
NARROW, BROAD_VIDEO, BROAD_AUDIO, HEADS = (
    "narrow_video_embedding", "broad_video_embedding", "broad_audio_embedding",
    "shared_project")
TSM_TRUNK = ("TSMResNetV2", "tsm_resnet_stem", "tsm_resnet_unit_{}")
AUDIO_TRUNK = ("res_net_v2", "initial_conv", "block_group_{}")
BLOCKS = (3, 4, 6, 3)  # ResNet-50, the depth of every released network
CHANNELS = (256, 512, 1024, 2048)
VISUAL_MODALITIES = {3: "rgb", 2: "flow"}  # a broad visual network's input channels
ENCODERS = ("narrow",)
# The recipe of each set of broad views: V/VVV (three RGB views with random
# convolutions, Table 5), V/A, V/F, V/FA (Table 5; ×2: its TSM-50x2 row).
RECIPES = {("rgb",): "brave_v_vrc_x3.gin", ("audio",): "brave_v_a.gin",
           ("flow",): "brave_v_f.gin", ("flow", "audio"): "brave_v_fa.gin",
           ("rgb", "audio"): "brave_v_a.gin"}
# V/VA (the official trainer with video and audio broad views, brave.py:196-204) has no
# recipe of its own: V/A's with the RGB+RC view added.
EXTRA_BINDINGS = {("rgb", "audio"): ["brave_views.broad = ('rgb', 'audio')",
                                     "broad_rgb/train_input.random_conv = True"]}
EMA_INTERNALS = (r"/(mean|var)_ema/(hidden|counter)$",
                 "Haiku's BatchNorm EMA accumulator before zero-debiasing and its step "
                 "count (BatchNorm at inference reads `average`)")


def _canonical(key: str) -> str:
    return key.replace("/~/", "/")


class _Tree:
    """The file's params and state as one SourceTensors keyed "<module>/<name>"."""

    def __init__(self, path: str, params: Mapping, state: Mapping):
        flat = {}
        for what, tree in (("params", params), ("state", state)):
            for module, values in tree.items():
                if not isinstance(values, Mapping):
                    raise ImportFailure(f"{path}: {what}[{module!r}] is a "
                                        f"{type(values).__name__}, expected a Haiku "
                                        "module's {name: array}")
                for name, value in values.items():
                    key = f"{module}/{name}"
                    if not isinstance(value, (np.ndarray, np.generic)):
                        raise ImportFailure(f"{path}: {what} entry {key!r} is "
                                            f"{type(value).__name__}, expected one array")
                    if key in flat:
                        raise ImportFailure(f"{path}: {key!r} appears twice in the "
                                            "params and state trees")
                    flat[key] = value
        self.path = path
        self.source = SourceTensors(path, flat)
        self._shapes = {_canonical(k): tuple(np.shape(v)) for k, v in flat.items()}
        self._keys = {_canonical(k): k for k in flat}

    def modules(self) -> set[str]:
        """The top-level modules (the model's networks and heads)."""
        return {k.split("/")[0] for k in self._keys}

    def children(self, module: str) -> set[str]:
        """The names of `module`'s direct submodules."""
        depth = module.count("/") + 1
        return {k.split("/")[depth] for k in self._keys if k.startswith(f"{module}/")
                and k.count("/") > depth}

    def key(self, canonical: str) -> str:
        """The file's key for a path given without Haiku's "~" segments."""
        return self._keys.get(canonical, canonical)

    def has(self, canonical: str) -> bool:
        return canonical in self._keys

    def shape(self, canonical: str) -> tuple:
        if not self.has(canonical):
            raise ImportFailure(f"{self.path}: no tensor {canonical!r} (expected by "
                                "deepmind/brave's layout; is the file another model's?)")
        return self._shapes[canonical]

    def take(self, canonical: str, shape: tuple) -> np.ndarray:
        return np.asarray(self.source.take(self.key(canonical), shape), np.float32)

    def batch_norm(self, module: str, channels: int, rank: int = 4) -> dict:
        """Keras BatchNormalization weights of Haiku BatchNorm `module`."""
        shape = (1,) * (rank - 1) + (channels,)
        return {"gamma": self.take(f"{module}/scale", shape).reshape(channels),
                "beta": self.take(f"{module}/offset", shape).reshape(channels),
                "moving_mean": self.take(f"{module}/mean_ema/average", shape).reshape(channels),
                "moving_variance": self.take(f"{module}/var_ema/average",
                                             shape).reshape(channels)}


def _layer(weights: dict, layer: str, values: Mapping) -> None:
    weights.update({f"{layer}/{name}": value for name, value in values.items()})


def _resnet50_v2(tree: _Tree, root: str, trunk: tuple) -> tuple[dict, float, int]:
    """(Keras weights of `layers.resnet50_v2_2d`, width multiplier, input channels) of
    the Haiku ResNet-50 v2 under `root` (TSMResNetV2 or the audio ResNetV2)."""
    trunk_name, stem_name, unit_name = trunk
    base = f"{root}/{trunk_name}"
    stem = f"{base}/{stem_name}/w"
    kh, kw, in_channels, stem_channels = tree.shape(stem)
    if (kh, kw) != (7, 7):
        raise ImportFailure(f"{tree.path}: {stem} is {kh}x{kw}, expected BraVe's 7x7 stem")
    blocks = tuple(len(tree.children(f"{base}/{unit_name.format(u)}")) for u in range(4))
    if blocks != BLOCKS:
        raise ImportFailure(f"{tree.path}: {base} has {blocks} blocks per stage; only "
                            f"ResNet-50's {BLOCKS} is supported (every released BraVe network)")
    multiplier = stem_channels / 64
    weights = {"conv1/kernel": tree.take(stem, (7, 7, in_channels, stem_channels))}
    previous = stem_channels
    for unit, (count, channels) in enumerate(zip(BLOCKS, CHANNELS)):
        out = int(channels * multiplier)
        inner = out // 4
        for block in range(count):
            haiku = f"{base}/{unit_name.format(unit)}/block_{block}"
            keras_name = f"res{unit + 2}_{block}"
            cin = previous if block == 0 else out
            _layer(weights, f"{keras_name}_preact_bn", tree.batch_norm(f"{haiku}/batch_norm", cin))
            if block == 0:
                weights[f"{keras_name}_proj/kernel"] = tree.take(
                    f"{haiku}/shortcut_conv/w", (1, 1, cin, out))
            for conv, bn, suffix, shape in (
                    ("conv_0", "batch_norm_1", "a", (1, 1, cin, inner)),
                    ("conv_1", "batch_norm_2", "b", (3, 3, inner, inner))):
                weights[f"{keras_name}_{suffix}/kernel"] = tree.take(f"{haiku}/{conv}/w", shape)
                _layer(weights, f"{keras_name}_{suffix}_bn",
                       tree.batch_norm(f"{haiku}/{bn}", inner))
            weights[f"{keras_name}_c/kernel"] = tree.take(f"{haiku}/conv_2/w", (1, 1, inner, out))
        previous = out
    _layer(weights, "final_bn", tree.batch_norm(f"{base}/batch_norm", previous))
    return weights, multiplier, in_channels


def _head(tree: _Tree, module: str, name: str, dims: tuple, output_bn: bool) -> dict:
    """Keras `mlp_head` weights (2 layers) of the Haiku Projector/Predictor `module`:
    each linear bias before a BN folded into the BN's moving mean."""
    in_dim, hidden, out_dim = dims
    weights = {}
    for index, (linear, bn, shape) in enumerate(
            (("linear", "batch_norm", (in_dim, hidden)),
             ("linear_1", "batch_norm_1" if output_bn else None, (hidden, out_dim)))):
        layer = f"{name}/{name}_linear{index}"
        weights[f"{layer}/kernel"] = tree.take(f"{module}/{linear}/w", shape)
        bias = tree.take(f"{module}/{linear}/b", shape[-1:])
        if bn is None:
            weights[f"{layer}/bias"] = bias
            continue
        norm = tree.batch_norm(f"{module}/{bn}", shape[-1], rank=2)
        norm["moving_mean"] = norm["moving_mean"] - bias
        _layer(weights, f"{name}/{name}_{'bn0' if index == 0 else 'bn_out'}", norm)
    return weights


def _heads(tree: _Tree, broad: tuple, feature_dims: dict) -> tuple[dict, int, int]:
    """({head attribute: weights} for every BraVe head, hidden, embedding dims) of the
    shared projector/predictor; ({}, 0, 0) with its tensors dropped when the views'
    features differ in width, which one shared head cannot take."""
    projector, predictor = f"{HEADS}/projector", f"{HEADS}/predictor"
    in_dim, hidden = tree.shape(f"{projector}/linear/w")
    embedding = tree.shape(f"{projector}/linear_1/w")[1]
    wrong = sorted(name for name, dim in feature_dims.items() if dim != in_dim)
    if wrong:
        tree.source.drop(lambda k: k.startswith(f"{HEADS}/"),
                         f"{HEADS} takes {in_dim}-d features but {', '.join(wrong)} gives "
                         f"{feature_dims[wrong[0]]}-d ones: the one head deepmind/brave "
                         "shares across views cannot serve this file's views")
        return {}, 0, 0
    shared = {"projector": _head(tree, projector, "@", (in_dim, hidden, embedding), True),
              "predictor": _head(tree, predictor, "@", (embedding, hidden, embedding), False)}
    heads = {}
    for m in broad:
        for side in (f"broad_{m}", f"narrow_{m}"):
            for kind, weights in shared.items():
                name = f"{side}_{kind}"
                heads[name] = {k.replace("@", name): v for k, v in weights.items()}
    return heads, hidden, embedding


def _read(path: str) -> tuple[_Tree, Mapping | None]:
    checkpoint = npy_file.load(path)
    expected = ("expected deepmind/brave's checkpoint, np.save of {'params', 'state', "
                "'config'} (brave/evaluate_video_embeddings.py:97-101)")
    if not isinstance(checkpoint, Mapping):
        raise ImportFailure(f"{path}: holds {type(checkpoint).__name__}; {expected}")
    missing = [k for k in ("params", "state") if not isinstance(checkpoint.get(k), Mapping)]
    if missing:
        raise ImportFailure(f"{path}: no {missing[0]!r} tree among {sorted(checkpoint)}; "
                            f"{expected}")
    config = checkpoint.get("config")
    return (_Tree(path, checkpoint["params"], checkpoint["state"]),
            config if isinstance(config, Mapping) else None)


def _view_bindings(config: Mapping, broad: tuple) -> list[str]:
    """The source model's training views from its BraveConfig (brave.py:59-86)."""
    def get(key, kind):
        value = config.get(key)
        return kind(value) if isinstance(value, (int, float, np.number)) else None

    rate = get("input_video_sample_rate", float)
    bindings = []
    for view, frames, crop, step in (
            ("narrow", "num_frames_narrow", "image_size_narrow", "step_narrow"),
            *((f"broad_{m}", "num_frames_broad", "image_size_broad", "step_broad")
              for m in broad if m != "audio")):
        for key, value in (("num_frames", get(frames, int)), ("crop_size", get(crop, int)),
                           ("target_fps", rate / get(step, int)
                            if rate and get(step, int) else None)):
            if value is not None:
                bindings.append(f"{view}/train_input.{key} = {value!r}")
    if "audio" in broad:
        for key, value in (("sample_rate", get("input_audio_sample_rate", float)),
                           ("num_mel_bins", get("num_spectrogram_bins", int)),
                           ("frame_step", get("fft_step", int))):
            if value is not None:
                bindings.append(f"AudioSpec.{key} = {value!r}")
        frames, step = get("num_frames_broad", int), get("step_broad", int)
        if rate and frames and step:
            # The official audio view spans the broad video frames (brave.py:406-408).
            bindings.append(f"AudioSpec.duration = {frames * step / rate!r}")
    return bindings


def _tsm_backbone(multiplier: float) -> tuple[str, dict]:
    """(registry name, extra kwargs) of a TSM network of `multiplier`."""
    if multiplier == 2:
        return "tsm_r50x2", {}
    return "tsm_r50", {} if multiplier == 1 else {"width_multiplier": multiplier}


def _broad_views(tree: _Tree, config: Mapping | None) -> tuple[tuple, tuple]:
    """(the broad modalities of the file's networks, those of the run's recipe): the
    file's, else (a file of the narrow network alone) its config's, else RGB."""
    held = []
    stem = f"{BROAD_VIDEO}/{TSM_TRUNK[0]}/{TSM_TRUNK[1]}/w"
    if tree.has(stem):
        channels = tree.shape(stem)[2]
        if channels not in VISUAL_MODALITIES:
            raise ImportFailure(f"{tree.path}: {BROAD_VIDEO} takes {channels} input channels; "
                                "expected 3 (RGB) or 2 (flow)")
        held.append(VISUAL_MODALITIES[channels])
    if BROAD_AUDIO in tree.modules():
        held.append("audio")
    flags = [m for m, flag in (("rgb", "include_video_in_broad_view"),
                               ("audio", "include_audio_in_broad_view"))
             if config is not None and config.get(flag)]
    return tuple(held), tuple(held or flags or ["rgb"])


def convert(path: str, *, encoder: str | None = None) -> Converted:
    """Converts a BraVe `.npy` checkpoint (see the module docstring). `encoder`: None
    for every network the file holds, "narrow" for the narrow one alone."""
    if encoder is not None and encoder not in ENCODERS:
        raise ImportFailure(f"{path}: --encoder={encoder}: expected 'narrow' (the narrow "
                            "video network alone) or none (every network the file holds)")
    tree, config = _read(path)
    source = tree.source
    if not tree.has(f"{NARROW}/{TSM_TRUNK[0]}/{TSM_TRUNK[1]}/w"):
        raise ImportFailure(f"{path}: no {NARROW}/{TSM_TRUNK[0]} network (its modules: "
                            f"{sorted(tree.modules())}); expected deepmind/brave's narrow "
                            "TSM-ResNet")
    unknown = sorted(m for m in tree.modules() - {NARROW, BROAD_VIDEO, BROAD_AUDIO, HEADS}
                     if not m.startswith(f"{HEADS}_"))
    if unknown and encoder is None:
        raise ImportFailure(f"{path}: module {unknown[0]!r} is not part of deepmind/brave's "
                            "model (brave/models/brave/brave.py); --encoder=narrow imports "
                            "the narrow network alone")
    held, broad = _broad_views(tree, config)
    source.drop(*EMA_INTERNALS)
    source.drop(lambda k: k.startswith(f"{HEADS}_"),
                "copies of shared_project that BraVe's init creates and no apply function "
                "uses (brave/models/brave/brave.py:159-161, :191-217)")
    if encoder == "narrow":
        source.drop(lambda k: not k.startswith(f"{NARROW}/"),
                    "--encoder=narrow: only the narrow video network was imported")
        held = ()

    narrow, narrow_width, _ = _resnet50_v2(tree, NARROW, TSM_TRUNK)
    name, kwargs = _tsm_backbone(narrow_width)
    encoders = {"narrow": narrow}
    bindings = [f"BACKBONE = {name!r}",
                f"BraVe.narrow_backbone_kwargs = {({**kwargs, 'shift_layout': 'brave'})!r}"]
    what = [f"narrow TSM-ResNet-50 x{narrow_width:g}"]
    # Feature widths the heads take; a broad network the file lacks keeps the recipe's.
    feature_dims = {"narrow": int(2048 * narrow_width), **{f"broad_{m}": 2048 for m in broad}}
    broad_kwargs = {}
    for m in held:
        root, trunk = (BROAD_AUDIO, AUDIO_TRUNK) if m == "audio" else (BROAD_VIDEO, TSM_TRUNK)
        encoders[f"broad_{m}"], width, _ = _resnet50_v2(tree, root, trunk)
        feature_dims[f"broad_{m}"] = int(2048 * width)
        if m == "audio":
            kwargs = {} if width == 1 else {"width_multiplier": width}
            what.append(f"broad audio ResNet-50 x{width:g}")
        else:
            name, kwargs = _tsm_backbone(width)
            kwargs = {**kwargs, "shift_layout": "brave"}
            bindings.append(f"BROAD_BACKBONE = {name!r}")
            what.append(f"broad {m} TSM-ResNet-50 x{width:g}")
        if kwargs:
            broad_kwargs[m] = kwargs
    if broad_kwargs:
        bindings.append(f"BraVe.broad_backbone_kwargs = {broad_kwargs!r}")
    heads = {}
    if encoder is None and tree.has(f"{HEADS}/projector/linear/w"):
        heads, hidden, embedding = _heads(tree, broad, feature_dims)
        if heads:
            bindings += [f"BraVe.hidden_dim = {hidden}", f"BraVe.embedding_dim = {embedding}"]
            what.append("the shared projector and predictor, copied into every head")
        else:
            what.append("not its shared projector and predictor (see left_out)")

    recipe = RECIPES[broad]
    if recipe == "brave_v_fa.gin" and narrow_width == 2:
        recipe = "brave_v_fa_tsm50x2.gin"
    bindings += EXTRA_BINDINGS.get(broad, [])
    if config is not None:
        bindings += _view_bindings(config, broad)
    bindings.append("train_input.normalize = False")  # frames in [0, 1]
    return Converted(
        format=FORMAT, source=source, method="BraVe", gin_files=[recipe], bindings=bindings,
        encoders=encoders, heads=heads,
        description=(f"deepmind/brave checkpoint: {', '.join(what)}; BraVe's channel-shift "
                     f"layout{'' if config is not None else '; no config: the recipe clips'}"))
