"""CoCLR's released checkpoints (video_ssl.importing.coclr) against a reference S3D.

The reference: torchvision's S3D (the structure of CoCLR's backbone/s3dg.py) with
CoCLR's BatchNorm (PyTorch's defaults, eps 1e-5) and CoCLR's global average pooling
(model/pretrain.py:49-51), random weights and BatchNorm statistics. Its tensors are
renamed into CoCLR's key names (the named modules and their blockN.i aliases) and saved
as main_nce.py / main_coclr.py save a run, in torch's legacy format (the released
files come from PyTorch 1.4, environment_pt14.yml). The flow network takes 3 channels,
as CoCLR's: the flow JPEG (128, dy, dx), ImageNet-normalized.
"""
import collections
import functools
import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
video_models = pytest.importorskip("torchvision.models.video")

from helpers import randomize_reference  # noqa: E402
from video_ssl.import_checkpoint import import_checkpoint  # noqa: E402
from video_ssl.importing import coclr  # noqa: E402
from video_ssl.models.heads import mlp_head  # noqa: E402
from video_ssl.pretrained import load_encoder  # noqa: E402

# The smallest clips S3D's strides take are 5 frames of 17x17; H != W catches a
# transposed layout.
CLIP = (2, 8, 32, 40)  # (B, T, H, W)
QUEUE = 2048
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# torchvision S3D.features index -> CoCLR's S3D module (backbone/s3dg.py:143-192).
MODULES = {0: "Conv_1a", 2: "Conv_2b", 3: "Conv_2c", 5: "Mixed_3b", 6: "Mixed_3c",
           8: "Mixed_4b", 9: "Mixed_4c", 10: "Mixed_4d", 11: "Mixed_4e", 12: "Mixed_4f",
           14: "Mixed_5b", 15: "Mixed_5c"}
# CoCLR's module -> the blockN Sequential slot that holds it too (s3dg.py:147-197).
ALIASES = {"Conv_1a": "block1.0", "Conv_2b": "block2.1", "Conv_2c": "block2.2",
           "Mixed_3b": "block3.1", "Mixed_3c": "block3.2", "Mixed_4b": "block4.1",
           "Mixed_4c": "block4.2", "Mixed_4d": "block4.3", "Mixed_4e": "block4.4",
           "Mixed_4f": "block4.5", "Mixed_5b": "block5.1", "Mixed_5c": "block5.2"}
# torchvision's layer path inside a module -> CoCLR's: TemporalSeparableConv's
# (conv, BN) pairs .0/.1 are STConv3d's conv1/bn1 and conv2/bn2; a Conv3dNormActivation
# is BasicConv3d's conv/bn; Inception branches are Sequentials of those in both
# (torchvision's branch0 is the bare Conv3dNormActivation, CoCLR's a Sequential of one).
LAYERS = [(r"^0\.0$", "conv1"), (r"^0\.1$", "bn1"), (r"^1\.0$", "conv2"), (r"^1\.1$", "bn2"),
          (r"^0$", "conv"), (r"^1$", "bn"),
          (r"^branch0\.0$", "branch0.0.conv"), (r"^branch0\.1$", "branch0.0.bn"),
          (r"^branch([12])\.0\.0$", r"branch\1.0.conv"), (r"^branch([12])\.0\.1$", r"branch\1.0.bn"),
          (r"^branch([12])\.1\.0\.0$", r"branch\1.1.conv1"),
          (r"^branch([12])\.1\.0\.1$", r"branch\1.1.bn1"),
          (r"^branch([12])\.1\.1\.0$", r"branch\1.1.conv2"),
          (r"^branch([12])\.1\.1\.1$", r"branch\1.1.bn2"),
          (r"^branch3\.1\.0$", "branch3.1.conv"), (r"^branch3\.1\.1$", "branch3.1.bn")]


def _reference_s3d(seed: int):
    """torchvision's S3D as CoCLR's (BatchNorm eps 1e-5), random weights and statistics."""
    torch.manual_seed(seed)
    model = video_models.S3D(norm_layer=functools.partial(torch.nn.BatchNorm3d, eps=1e-5))
    return randomize_reference(model, model.features, torch.randn(8, 3, *CLIP[1:]))


def _reference_head(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1024, 1024, 1), torch.nn.ReLU(),
                               torch.nn.Conv3d(1024, 128, 1)).eval()


def _coclr_keys(model) -> dict:
    """The S3D's state_dict under CoCLR's names, every tensor also under its alias."""
    state = {}
    for key, value in model.features.state_dict().items():
        index, rest = key.split(".", 1)
        path, tensor = rest.rsplit(".", 1)
        for pattern, name in LAYERS:
            if re.match(pattern, path):
                path = re.sub(pattern, name, path)
                break
        else:
            raise AssertionError(f"unmapped torchvision key {key}")
        module = MODULES[int(index)]
        state[f"{module}.{path}.{tensor}"] = value
        state[f"{ALIASES[module]}.{path}.{tensor}"] = value
    return state


def _encoder(backbone, head, prefix: str) -> dict:
    """The keys of one of CoCLR's encoder Sequentials (model/pretrain.py:49-54)."""
    state = {f"{prefix}.0.{k}": v for k, v in _coclr_keys(backbone).items()}
    state.update({f"{prefix}.2.{k}": v for k, v in head[0].state_dict().items()})
    state.update({f"{prefix}.4.{k}": v for k, v in head[2].state_dict().items()})
    return state


def _save_checkpoint(path, state: dict, epoch: int = 182) -> str:
    """As main_coclr.py:329-335 saves a run (Adam's state over a few tensors)."""
    params = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2)]
    optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-5)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    torch.save({"epoch": epoch, "state_dict": collections.OrderedDict(state),
                "best_acc": 0.5, "optimizer": optimizer.state_dict(), "iteration": 1000},
               str(path), _use_new_zipfile_serialization=False)
    return str(path)


def _momentum_copy(state: dict) -> dict:
    """encoder_k: values unlike encoder_q's, so taking it by mistake shows."""
    return {k.replace("encoder_q.", "encoder_k.", 1): v * 0.5 if v.is_floating_point() else v
            for k, v in state.items()}


def _queues(coclr_run: bool) -> dict:
    queue = torch.nn.functional.normalize(torch.randn(128, QUEUE), dim=0)
    state = {"queue": queue, "queue_ptr": torch.zeros(1, dtype=torch.long)}
    if coclr_run:
        state.update(queue_second=queue.clone(), queue_vname=-torch.ones(QUEUE, dtype=torch.long),
                     queue_label=-torch.ones(QUEUE, dtype=torch.long))
    return state


@pytest.fixture(scope="module")
def networks():
    return {"rgb": (_reference_s3d(1), _reference_head(2)),
            "flow": (_reference_s3d(3), _reference_head(4))}


def _coclr_state(networks, trained: str, other: str) -> dict:
    state = _encoder(*networks[trained], "encoder_q")
    state.update(_momentum_copy(state))
    state.update(_encoder(*networks[other], "sampler"))
    state.update(_queues(coclr_run=True))
    return state


@pytest.fixture(scope="module")
def coclr_flow_file(networks, tmp_path_factory):
    """A CoCLR run of the flow network (main_coclr.py --reverse): encoder_q flow,
    sampler RGB; named as the official release names it."""
    folder = tmp_path_factory.mktemp("coclr")
    return _save_checkpoint(folder / "CoCLR-ucf101-flow-128-s3d-epoch109.pth.tar",
                            _coclr_state(networks, "flow", "rgb"), epoch=109)


@pytest.fixture(scope="module")
def coclr_run(coclr_flow_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "coclr_flow")
    import_checkpoint("coclr", coclr_flow_file, out)
    return out


def _rgb_clip(seed: int) -> np.ndarray:
    """(B, T, H, W, 3) frames normalized as CoCLR normalizes them."""
    frames = np.random.default_rng(seed).integers(0, 256, (*CLIP, 3)).astype(np.float32)
    return (frames / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _flow_clip(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ours, CoCLR's) of the same flow: (dx, dy) pixels as this project dequantizes
    its 8-bit flow (bound 20), and the ImageNet-normalized JPEG (128, dy, dx)."""
    q = np.random.default_rng(seed).integers(0, 256, (*CLIP, 2)).astype(np.float32)
    ours = q * (40.0 / 255.0) - 20.0
    image = np.concatenate([np.full_like(q[..., :1], 128.0), q[..., 1:], q[..., :1]], -1)
    return ours, (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _reference_features(model, clip: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 4, 1, 2, 3)))
        return model.features(x).mean(dim=(2, 3, 4)).numpy()


def _relative(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


@pytest.mark.slow
def test_flow_network_matches_reference(coclr_run, networks):
    encoder = load_encoder(coclr_run)
    assert (encoder.encoder, encoder.modality, encoder.method_name) == ("flow", "flow", "CoCLR")
    ours, image = _flow_clip(5)
    reference = _reference_features(networks["flow"][0], image)
    # The reference's features depend on the clip, so a wrong layout would show.
    assert _relative(_reference_features(networks["flow"][0], _flow_clip(6)[1]), reference) > 0.1
    assert _relative(encoder.backbone(ours, training=False), reference) < 1e-3


@pytest.mark.slow
def test_sampler_is_the_rgb_encoder_and_matches_reference(coclr_run, networks):
    encoder = load_encoder(coclr_run, encoder="rgb")
    assert encoder.modality == "rgb"
    assert encoder.clip == {"num_frames": 32, "frame_stride": 1, "crop_size": 128,
                            "target_fps": None}
    assert encoder.normalization == {"mean": (0.485, 0.456, 0.406),
                                     "std": (0.229, 0.224, 0.225)}
    clip = _rgb_clip(6)
    reference = _reference_features(networks["rgb"][0], clip)
    assert _relative(_reference_features(networks["rgb"][0], _rgb_clip(7)), reference) > 0.1
    assert _relative(encoder.backbone(clip, training=False), reference) < 1e-3


def test_run_records_recipe_heads_and_what_was_left_out(coclr_run):
    with open(os.path.join(coclr_run, "import.json")) as f:
        record = json.load(f)
    assert (record["method"], record["recipe"]) == ("CoCLR", ["gin_configs/coclr_ucf101.gin"])
    assert record["encoders"] == ["flow", "rgb"]
    assert record["heads"] == ["projector", "sampler_projector"]
    assert "CoCLR.modality = 'flow'" in record["bindings"]
    reasons = " | ".join(item["why"] for item in record["left_out"])
    for part in ("momentum", "queues", "Adam", "aliases", "batch counters"):
        assert part in reasons


def test_heads_map_to_the_methods_projection_heads(coclr_flow_file, networks):
    converted = coclr.convert(coclr_flow_file)
    features = np.random.default_rng(7).normal(size=(3, 1024)).astype(np.float32)
    for attribute, modality in (("projector", "flow"), ("sampler_projector", "rgb")):
        head = mlp_head(1024, hidden_dim=1024, output_dim=128, num_layers=2, batch_norm=False)
        head.set_weights([converted.heads[attribute][v.path] for v in head.weights])
        with torch.no_grad():
            reference = networks[modality][1](torch.from_numpy(features)[:, :, None, None, None])
        assert _relative(head(features), reference.numpy()[:, :, 0, 0, 0]) < 1e-5


def test_infonce_file_is_an_infonce_run_of_its_modality(networks, tmp_path):
    state = _encoder(*networks["rgb"], "encoder_q")
    state.update(_momentum_copy(state))
    state.update(_queues(coclr_run=False))
    path = _save_checkpoint(tmp_path / "InfoNCE-ucf101-rgb-128-s3d-ep399.pth.tar", state, 399)
    converted = coclr.convert(path)
    assert (converted.method, converted.gin_files) == ("InfoNCE", ["gin_configs/infonce_rgb.gin"])
    assert list(converted.encoders) == ["rgb"] and list(converted.heads) == ["projector"]
    converted.source.check_consumed()
    flow = coclr.convert(path, encoder="flow")
    assert flow.gin_files == ["gin_configs/infonce_flow.gin"] and list(flow.encoders) == ["flow"]
    assert coclr.FLOW_BINDING in flow.bindings and coclr.FLOW_BINDING not in converted.bindings


# ---------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def infonce_state(networks):
    """An InfoNCE run's tensors less its momentum encoder (a smaller file)."""
    return {**_encoder(*networks["rgb"], "encoder_q"), **_queues(coclr_run=False)}


def _fails(tmp_path, path, match: str, **kwargs):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match) as error:
        import_checkpoint("coclr", str(path), str(out), **kwargs)
    assert str(path) in str(error.value) or "--encoder" in str(error.value)
    assert "\n" not in str(error.value)
    assert not out.exists() and os.listdir(tmp_path) == [os.path.basename(path)]


def test_unknown_flow_input_is_refused():
    from video_ssl.models import build_backbone
    with pytest.raises(ValueError, match="flow_input 'rgb_image'"):
        build_backbone("s3d", input_channels=2, flow_input="rgb_image")


def test_dataparallel_prefix_is_accepted(infonce_state, tmp_path):
    state = {f"module.{k}": v for k, v in infonce_state.items()}
    path = _save_checkpoint(tmp_path / "InfoNCE-ucf101-rgb.pth.tar", state)
    converted = coclr.convert(path)
    converted.source.check_consumed()
    assert list(converted.encoders) == ["rgb"]


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "model.pth.tar"
    path.write_bytes(b"not a checkpoint")
    _fails(tmp_path, path, "not a file torch.save wrote")


def test_a_plain_state_dict_is_the_wrong_format(tmp_path):
    path = tmp_path / "s3d-rgb.pth"
    torch.save(video_models.S3D().state_dict(), str(path))
    _fails(tmp_path, path, "not a CoCLR checkpoint")


def test_missing_tensor_is_named(infonce_state, tmp_path):
    state = dict(infonce_state)
    del state["encoder_q.0.Mixed_4d.branch2.1.bn2.running_var"]
    path = _save_checkpoint(tmp_path / "InfoNCE-ucf101-rgb.pth.tar", state)
    _fails(tmp_path, path, r"no tensor 'encoder_q\.0\.Mixed_4d\.branch2\.1\.bn2\.running_var'")


def test_tensor_of_another_shape_is_named(infonce_state, tmp_path):
    state = dict(infonce_state)
    state["encoder_q.0.Conv_2b.conv.weight"] = torch.zeros(64, 64, 1, 3, 3)
    path = _save_checkpoint(tmp_path / "InfoNCE-ucf101-rgb.pth.tar", state)
    _fails(tmp_path, path, r"'encoder_q\.0\.Conv_2b\.conv\.weight' has shape \(64, 64, 1, 3, 3\), "
                           r"expected \(64, 64, 1, 1, 1\)")


def test_alias_unlike_its_module_fails(infonce_state, tmp_path):
    state = dict(infonce_state)
    state["encoder_q.0.block2.1.bn.bias"] = state["encoder_q.0.Conv_2b.bn.bias"] + 1.0
    path = _save_checkpoint(tmp_path / "InfoNCE-ucf101-rgb.pth.tar", state)
    _fails(tmp_path, path, r"'encoder_q\.0\.block2\.1\.bn\.bias' is not a copy")


def test_other_backbone_is_unsupported(infonce_state, tmp_path):
    state = {k: v for k, v in infonce_state.items() if not k.startswith("encoder_q.0.")}
    state["encoder_q.0.conv1.weight"] = torch.zeros(64, 3, 1, 7, 7)  # resnet_2d3d's r50
    path = _save_checkpoint(tmp_path / "InfoNCE-ucf101-rgb.pth.tar", state)
    _fails(tmp_path, path, "only CoCLR's S3D")


def test_unknown_tensor_is_named(infonce_state, tmp_path):
    state = dict(infonce_state, **{"encoder_q.5.weight": torch.zeros(3)})
    path = _save_checkpoint(tmp_path / "InfoNCE-ucf101-rgb.pth.tar", state)
    _fails(tmp_path, path, r"'encoder_q\.5\.weight' of shape \(3,\) has no place")


def test_modality_needs_the_name_or_encoder(infonce_state, tmp_path):
    path = _save_checkpoint(tmp_path / "checkpoint.pth.tar", infonce_state)
    _fails(tmp_path, path, "pass --encoder=rgb or --encoder=flow")
    _fails(tmp_path, path, "expected the modality", encoder="depth")
