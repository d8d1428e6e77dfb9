"""The `pyslowfast` importer against pytorchvideo's Slow R-50 (PySlowFast's architecture)
saved as PySlowFast's `projects/contrastive_ssl` checkpoints.

The reference: `pytorchvideo.models.resnet.create_resnet` as PySlowFast's Slow R-50
(stem 1x7x7, res4-res5 inflated 3x1x1) at a quarter of the width (WIDTH_PER_GROUP 16,
which the importer binds as `width_multiplier`), random weights, perturbed BatchNorm
statistics (`helpers.randomize_reference`). Its state dict is renamed into PySlowFast's module names and wrapped as
PySlowFast's `ContrastiveModel` holds it, in the dict `save_checkpoint` writes (see
`pyslowfast_checkpoint`); the heads are torch MLPs in the layout of PySlowFast's
`MLPHead`.
"""
import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytorchvideo_resnet = pytest.importorskip("pytorchvideo.models.resnet")
yaml = pytest.importorskip("yaml")
import tensorflow as tf  # noqa: E402

from helpers import randomize_reference  # noqa: E402
from video_ssl import pretrained  # noqa: E402
from video_ssl.import_checkpoint import import_checkpoint  # noqa: E402
from video_ssl.importing import pyslowfast  # noqa: E402
from video_ssl.importing.torch_file import TorchFileError  # noqa: E402
from video_ssl.importing.weights import ImportFailure, assign  # noqa: E402
from video_ssl.models.heads import Prototypes, mlp_head  # noqa: E402

WIDTH_PER_GROUP = 16  # a quarter-width R-50: 512-d features
FEATURES = 32 * WIDTH_PER_GROUP
MLP_DIM, DIM = 64, 32  # CONTRASTIVE.MLP_DIM, .DIM
CLIP = (2, 3, 4, 64, 64)  # torch layout (B, C, T, H, W): a 2x2 res5 map

# pytorchvideo's create_resnet names -> PySlowFast's ResNet names: the stem
# s1.pathway0_stem.{conv,bn} (stem_helper.py), stage k's block i s<k+1>.pathway0_res<i>
# with branch1/branch1_bn and branch2.{a,b,c}/{a,b,c}_bn (resnet_helper.py).
RENAMES = [(r"^blocks\.0\.conv\.", "s1.pathway0_stem.conv."),
           (r"^blocks\.0\.norm\.", "s1.pathway0_stem.bn."),
           (r"^blocks\.(\d)\.res_blocks\.(\d+)\.",
            lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}."),
           (r"\.branch1_conv\.", ".branch1."), (r"\.branch1_norm\.", ".branch1_bn."),
           (r"\.branch2\.conv_([abc])\.", r".branch2.\1."),
           (r"\.branch2\.norm_([abc])\.", r".branch2.\1_bn.")]


def pyslowfast_name(key: str) -> str:
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def perturbed(module):
    """Random BatchNorm statistics, scales and offsets, so that every one of them shows."""
    generator = torch.Generator().manual_seed(1)
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            n = layer.num_features
            layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            layer.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return module.eval()


def mlp_head_torch(sizes, batch_norm):
    """PySlowFast's MLPHead layers (head_helper.py): Linear, then per further layer
    [BN ->] ReLU -> Linear, no bias before a BN."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = index == len(sizes) - 2
        layers.append(torch.nn.Linear(fan_in, fan_out, bias=last or not batch_norm))
        if not last:
            layers += [torch.nn.BatchNorm1d(fan_out)] if batch_norm else []
            layers.append(torch.nn.ReLU())
    return perturbed(torch.nn.Sequential(*layers))


def reference_network(seed):
    torch.manual_seed(seed)
    network = pytorchvideo_resnet.create_resnet(
        model_depth=50, stem_dim_out=WIDTH_PER_GROUP, stem_conv_kernel_size=(1, 7, 7),
        head=None)
    return randomize_reference(network, network, torch.randn(8, *CLIP[1:]))


def reference_heads(kind, seed):
    """{PySlowFast head prefix: torch module} of a method as configs/contrastive_ssl
    builds it: MoCo 3 layers, no BN; BYOL 2 layers, BN, predictor of depth 2; SimCLR 3
    layers, no BN; SwAV 3 layers, BN, prototypes."""
    torch.manual_seed(seed)
    projector = {"moco": ([FEATURES, MLP_DIM, MLP_DIM, DIM], False),
                 "byol": ([FEATURES, MLP_DIM, DIM], True),
                 "simclr": ([FEATURES, MLP_DIM, MLP_DIM, DIM], False),
                 "swav": ([FEATURES, MLP_DIM, MLP_DIM, DIM], True)}[kind]
    heads = {"head.projection.projection": mlp_head_torch(*projector)}
    if kind == "byol":
        heads["head.predictors.0.projection"] = mlp_head_torch([DIM, MLP_DIM, DIM], True)
    return heads


def cfg_yaml(kind, **changes):
    """The cfg keys the importer reads, as `cfg.dump()` writes them (nested YAML)."""
    layers = {"moco": 3, "byol": 2, "simclr": 3, "swav": 3}.get(kind, 1)
    cfg = {"MODEL": {"MODEL_NAME": "ContrastiveModel", "ARCH": "slow"},
           "CONTRASTIVE": {"TYPE": kind, "DIM": DIM, "MLP_DIM": MLP_DIM,
                           "NUM_MLP_LAYERS": layers, "BN_MLP": kind in ("byol", "swav"),
                           "PREDICTOR_DEPTHS": [2] if kind == "byol" else []},
           "RESNET": {"DEPTH": 50, "WIDTH_PER_GROUP": WIDTH_PER_GROUP},
           "DATA": {"NUM_FRAMES": 4, "SAMPLING_RATE": 8, "TRAIN_CROP_SIZE": 64,
                    "TRAIN_CROP_NUM_TEMPORAL": 2, "MEAN": [0.45, 0.45, 0.45],
                    "STD": [0.225, 0.225, 0.225], "TARGET_FPS": 30}}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    return yaml.safe_dump(cfg)


def model_state(kind, online, online_heads, momentum, momentum_heads):
    """A ContrastiveModel's state dict (contrastive.py): backbone.* (the ResNet with its
    head), backbone_hist.* for MoCo/BYOL, their queue and counters, SwAV's prototypes,
    the kNN monitor's memory."""
    state = {}
    for prefix, network, heads in (("backbone.", online, online_heads),
                                   ("backbone_hist.", momentum, momentum_heads)):
        if prefix == "backbone_hist." and kind not in ("moco", "byol"):
            continue
        state.update({prefix + pyslowfast_name(k): v for k, v in network.state_dict().items()})
        for head, module in heads.items():
            state.update({f"{prefix}{head}.{k}": v for k, v in module.state_dict().items()})
    if kind in ("moco", "byol"):
        state.update(queue_x=torch.randn(16, DIM), ptr=torch.tensor([0]),
                     iter=torch.tensor([5]))
    if kind == "swav":
        state["swav_prototypes.weight"] = torch.nn.functional.normalize(torch.randn(10, DIM))
    state["knn_mem.memory"] = torch.randn(8, 1, DIM)
    return state


def pyslowfast_checkpoint(state, cfg, params):
    """The dict save_checkpoint writes (checkpoint.py:133-144)."""
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    return {"epoch": 199, "model_state": state, "optimizer_state": optimizer.state_dict(),
            "cfg": cfg}


@pytest.fixture(scope="module")
def reference():
    online, momentum = reference_network(0), reference_network(1)
    heads = {kind: (reference_heads(kind, 2), reference_heads(kind, 3))
             for kind in pyslowfast.METHODS}
    return online, momentum, heads


@pytest.fixture(scope="module")
def files(reference, tmp_path_factory):
    """{kind: path} of one checkpoint per method."""
    online, momentum, heads = reference
    folder = tmp_path_factory.mktemp("pyslowfast")
    paths = {}
    for kind in pyslowfast.METHODS:
        state = model_state(kind, online, heads[kind][0], momentum, heads[kind][1])
        params = list(heads[kind][0]["head.projection.projection"].parameters())
        paths[kind] = str(folder / f"{kind}.pyth")
        torch.save(pyslowfast_checkpoint(state, cfg_yaml(kind), params), paths[kind])
    return paths


def save(path, state, cfg=None):
    """A checkpoint of `state` with `cfg` (default: MoCo's)."""
    torch.save({"epoch": 0, "model_state": state, "cfg": cfg or cfg_yaml("moco")}, str(path))
    return str(path)


def relative_difference(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def torch_features(network, clip):
    with torch.no_grad():
        return network(torch.from_numpy(clip)).mean(dim=(2, 3, 4)).numpy()


@pytest.mark.slow
def test_byol_checkpoint_gives_the_reference_features_and_heads(files, reference, tmp_path):
    online, _, heads = reference
    out = str(tmp_path / "byol_run")
    prefix = import_checkpoint("pyslowfast", files["byol"], out)
    encoder = pretrained.load_encoder(out)
    assert (encoder.method_name, encoder.encoder, encoder.modality) == ("BYOL", "rgb", "rgb")
    assert encoder.clip == {"num_frames": 4, "frame_stride": 8, "crop_size": 64,
                            "target_fps": 30.0}
    assert encoder.normalization == {"mean": 0.45, "std": 0.225}
    clip, other = np.random.default_rng(0).normal(size=(2, *CLIP)).astype("float32")
    ours = encoder.backbone(np.transpose(clip, (0, 2, 3, 4, 1)), training=False).numpy()
    theirs = torch_features(online, clip)
    # The reference's features depend on its input (so a wrong layout would show) ...
    assert relative_difference(torch_features(online, other), theirs) > 0.1
    # ... and ours are the same.
    assert relative_difference(ours, theirs) < 1e-3

    # The heads are in the run: its projector's (and the momentum projector's copy) and
    # predictor's output biases are the file's.
    saved = tf.train.load_checkpoint(prefix)
    shapes = saved.get_variable_to_shape_map()
    for head, holders in (("head.projection.projection", ["momentum/projector", "projector"]),
                          ("head.predictors.0.projection", ["predictor"])):
        bias = heads["byol"][0][head][-1].bias.detach().numpy()
        assert sorted(name.split("/_functional")[0].removeprefix("model/") for name in shapes
                      if shapes[name] == list(bias.shape)
                      and np.array_equal(saved.get_tensor(name), bias)) == holders

    record = json.load(open(os.path.join(out, "import.json")))
    assert record["recipe"] == ["byol_rho2.gin"] and record["heads"] == ["predictor",
                                                                          "projector"]
    assert "BACKBONE_KWARGS = {'width_multiplier': 0.25}" in record["bindings"]
    reasons = {entry["why"] for entry in record["left_out"]}
    assert any("momentum encoder" in why for why in reasons)
    assert any("optimizer" in why for why in reasons)


def keras_heads(converted):
    """Keras heads holding what the converter made of the file's heads."""
    built = {}
    for name, weights in converted.heads.items():
        if name == "prototypes":
            layer = Prototypes(weights["prototypes/kernel"].shape[0], name="prototypes")
            layer.build((None, DIM))
        else:
            dense = sorted(k for k in weights if k.endswith("/kernel"))
            sizes = [weights[dense[0]].shape[0]] + [weights[k].shape[1] for k in dense]
            layer = mlp_head(sizes[0], hidden_dim=sizes[1], output_dim=sizes[-1],
                             num_layers=len(dense), name=name,
                             batch_norm=any("_bn" in k for k in weights))
        assign(layer, weights, source=converted.source.path)
        built[name] = layer
    return built


@pytest.mark.parametrize("kind", sorted(pyslowfast.METHODS))
def test_each_method_becomes_its_recipe_with_the_heads_it_shares(files, reference, kind):
    _, _, heads = reference
    converted = pyslowfast.convert(files[kind])
    converted.source.check_consumed()
    method = pyslowfast.METHODS[kind]
    assert (converted.method, converted.gin_files) == (method.name, [f"{kind}_rho2.gin"])
    assert "train_input.frame_stride = 8" in converted.bindings
    expected = {"moco": ["projector"], "byol": ["predictor", "projector"], "simclr": [],
                "swav": ["projector", "prototypes"]}[kind]
    assert sorted(converted.heads) == expected
    if kind == "simclr":  # no BN in PySlowFast's SimCLR MLP, BN in this project's
        assert any("has BatchNorm" in why for why in converted.source.dropped.values())
        return

    features = np.random.default_rng(1).normal(size=(4, FEATURES)).astype("float32")
    ours, theirs = keras_heads(converted), heads[kind][0]
    projected = ours["projector"](features, training=False).numpy()
    with torch.no_grad():
        reference_projected = theirs["head.projection.projection"](torch.from_numpy(features))
    assert relative_difference(projected, reference_projected.numpy()) < 1e-5
    if kind == "byol":
        with torch.no_grad():
            predicted = theirs["head.predictors.0.projection"](reference_projected).numpy()
        assert relative_difference(ours["predictor"](projected, training=False).numpy(),
                                   predicted) < 1e-5
    if kind == "swav":
        prototypes = torch.load(files[kind])["model_state"]["swav_prototypes.weight"].numpy()
        np.testing.assert_allclose(ours["prototypes"](projected).numpy(),
                                   projected @ prototypes.T, rtol=1e-5, atol=1e-6)
        assert "SwAV.num_prototypes = 10" in converted.bindings


def test_encoder_backbone_hist_imports_the_momentum_encoder(files, reference):
    _, momentum, _ = reference
    converted = pyslowfast.convert(files["moco"], encoder="backbone_hist")
    converted.source.check_consumed()
    stem = momentum.state_dict()["blocks.0.conv.weight"].numpy()
    np.testing.assert_array_equal(converted.encoders["rgb"]["conv1/kernel"],
                                  np.transpose(stem, (2, 3, 4, 1, 0)))
    assert any("online encoder" in why for why in converted.source.dropped.values())
    with pytest.raises(ImportFailure, match=r"swav.pyth: --encoder=backbone_hist: a SwAV "):
        pyslowfast.convert(files["swav"], encoder="backbone_hist")
    with pytest.raises(ImportFailure, match=r"moco.pyth: --encoder=key: expected 'backbone'"):
        pyslowfast.convert(files["moco"], encoder="key")


def test_a_bgr_network_takes_rgb_clips_and_a_linear_projection_is_kept(reference, tmp_path):
    online, _, _ = reference
    state = {"backbone." + pyslowfast_name(k): v for k, v in online.state_dict().items()}
    # NUM_MLP_LAYERS 1: the projection is one nn.Linear (head_helper.py).
    state["backbone.head.projection.weight"] = torch.randn(DIM, FEATURES)
    state["backbone.head.projection.bias"] = torch.randn(DIM)
    converted = pyslowfast.convert(save(tmp_path / "bgr.pyth", state, cfg_yaml(
        "moco", CONTRASTIVE__NUM_MLP_LAYERS=1, DATA__REVERSE_INPUT_CHANNEL=True)))
    converted.source.check_consumed()
    stem = np.transpose(online.state_dict()["blocks.0.conv.weight"].numpy(), (2, 3, 4, 1, 0))
    np.testing.assert_array_equal(converted.encoders["rgb"]["conv1/kernel"],
                                  stem[:, :, :, ::-1, :])
    np.testing.assert_array_equal(converted.heads["projector"]["projector/projector_linear0/bias"],
                                  state["backbone.head.projection.bias"].numpy())
    assert "MoCo.num_layers = 1" in converted.bindings


def failing(path, tmp_path, match):
    """Importing `path` fails with one line naming it, matching `match`; nothing written."""
    out = tmp_path / "out"
    with pytest.raises((ImportFailure, TorchFileError)) as error:
        import_checkpoint("pyslowfast", str(path), str(out))
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    assert re.search(match, message), message
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_what_is_not_such_a_checkpoint_fails_in_one_line(files, reference, tmp_path):
    online, _, _ = reference
    data = open(files["moco"], "rb").read()
    truncated = tmp_path / "truncated.pyth"
    truncated.write_bytes(data[:len(data) // 3])
    failing(truncated, tmp_path, "corrupt or truncated")
    no_model = tmp_path / "no_model.pyth"
    torch.save({"epoch": 0, "cfg": cfg_yaml("moco")}, str(no_model))
    failing(no_model, tmp_path, "no 'model_state' dict")
    no_cfg = tmp_path / "no_cfg.pyth"
    state = {"backbone." + pyslowfast_name(k): v for k, v in online.state_dict().items()}
    torch.save({"epoch": 0, "model_state": state}, str(no_cfg))
    failing(no_cfg, tmp_path, "no 'cfg' YAML string")


def test_a_checkpoint_that_does_not_fit_fails_in_one_line(reference, tmp_path):
    online, momentum, heads = reference
    state = model_state("moco", online, heads["moco"][0], momentum, heads["moco"][1])
    key = "backbone.s4.pathway0_res2.branch2.a.weight"
    failing(save(tmp_path / "shape.pyth", {**state, key: state[key][:, :, :1]}), tmp_path,
            rf"tensor '{key}' has shape \(64, 256, 1, 1, 1\), expected \(64, 256, 3, 1, 1\)")
    missing = dict(state)
    missing.pop("backbone.s5.pathway0_res2.branch2.c_bn.running_var")
    failing(save(tmp_path / "missing.pyth", missing), tmp_path,
            r"no tensor 'backbone.s5.pathway0_res2.branch2.c_bn.running_var'")
    extra = {**state, "backbone.head.projection.projection.6.weight": torch.ones(2, 2)}
    failing(save(tmp_path / "extra.pyth", extra), tmp_path,
            r"'backbone.head.projection.projection.6.weight' of shape \(2, 2\) has no place")


def test_an_unsupported_architecture_fails_in_one_line(reference, tmp_path):
    online, momentum, heads = reference
    state = model_state("moco", online, heads["moco"][0], momentum, heads["moco"][1])
    # A SlowFast: a second (Fast) pathway beside the Slow one.
    fast = {k.replace("pathway0", "pathway1"): v for k, v in state.items() if "pathway0" in k}
    slowfast = {**state, **fast}
    failing(save(tmp_path / "slowfast.pyth", slowfast, cfg_yaml(
        "moco", MODEL__ARCH="slowfast")), tmp_path, r"cfg MODEL.ARCH = 'slowfast'; expected 'slow'")
    failing(save(tmp_path / "fast_pathway.pyth", slowfast), tmp_path,
            r"tensor 'backbone.s1.pathway1_stem.conv.weight' .* has no place")
    failing(save(tmp_path / "r101.pyth", state, cfg_yaml("moco", RESNET__DEPTH=101)), tmp_path,
            r"NUM_BLOCK_TEMP_KERNEL = \[\[3\], \[4\], \[6\], \[3\]\] .* slow_r101 .*"
            r"\[\[3\], \[4\], \[23\], \[3\]\]")
    failing(save(tmp_path / "memory.pyth", state, cfg_yaml("mem")), tmp_path,
            r"cfg CONTRASTIVE.TYPE = 'mem'")
    failing(save(tmp_path / "rho9.pyth", state, cfg_yaml(
        "moco", DATA__TRAIN_CROP_NUM_TEMPORAL=9)), tmp_path, r"no recipe moco_rho9.gin")
