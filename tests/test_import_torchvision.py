"""torchvision's video models (video_ssl.importing.torchvision) against torchvision itself:
r2plus1d_18 and s3d with random weights and BatchNorm statistics, saved as torchvision
releases them (a plain state_dict, torch.save), imported, features compared."""
import functools
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
video_models = pytest.importorskip("torchvision.models.video")

from helpers import randomize_reference  # noqa: E402
from video_ssl.import_checkpoint import import_checkpoint  # noqa: E402
from video_ssl.pretrained import load_encoder  # noqa: E402

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# (B, T, H, W): R(2+1)D takes any size; S3D at least 5 frames of 17x17. H != W catches a
# transposed layout.
CLIPS = {"r2plus1d_18": (2, 4, 32, 40), "s3d": (2, 8, 32, 40)}
EXPECTED_CLIP = {"r2plus1d_18": {"num_frames": 16, "frame_stride": 1, "crop_size": 112,
                                 "target_fps": 15.0},
                 "s3d": {"num_frames": 64, "frame_stride": 1, "crop_size": 224,
                         "target_fps": 15.0}}


def _reference(architecture: str, seed: int):
    """torchvision's model with random weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    model = getattr(video_models, architecture)()
    return randomize_reference(model, functools.partial(_pooled, model),
                               torch.randn(2, 3, *CLIPS[architecture][1:]))


def _pooled(model, x):
    """The global average of the last feature map: the input of r2plus1d_18's fc."""
    with torch.no_grad():
        if isinstance(model, video_models.S3D):
            return model.features(x).mean(dim=(2, 3, 4))
        for stage in (model.stem, model.layer1, model.layer2, model.layer3, model.layer4):
            x = stage(x)
        return model.avgpool(x).flatten(1)


@pytest.fixture(scope="module", params=sorted(CLIPS))
def imported(request, tmp_path_factory):
    architecture = request.param
    model = _reference(architecture, seed=len(architecture))
    folder = tmp_path_factory.mktemp(architecture)
    path = str(folder / f"{architecture}-kinetics400.pth")
    torch.save(model.state_dict(), path)
    out = str(folder / "run")
    import_checkpoint("torchvision", path, out)
    return architecture, model, out


@pytest.mark.slow
def test_features_match_torchvision(imported):
    architecture, model, out = imported
    encoder = load_encoder(out)
    assert (encoder.encoder, encoder.modality, encoder.method_name) == ("rgb", "rgb", "InfoNCE")
    assert encoder.clip == EXPECTED_CLIP[architecture]
    assert encoder.normalization == {"mean": KINETICS_MEAN, "std": KINETICS_STD}
    clip, other = (_clip(architecture, seed) for seed in (0, 1))
    reference = _pooled(model, _torch_layout(clip)).numpy()
    assert _relative(_pooled(model, _torch_layout(other)).numpy(), reference) > 0.1
    assert _relative(encoder.backbone(clip, training=False), reference) < 1e-3


def _clip(architecture: str, seed: int) -> np.ndarray:
    frames = np.random.default_rng(seed).integers(0, 256, (*CLIPS[architecture], 3))
    return ((frames / 255.0 - KINETICS_MEAN) / KINETICS_STD).astype(np.float32)


def _torch_layout(clip: np.ndarray):
    return torch.from_numpy(clip.transpose(0, 4, 1, 2, 3).copy())


def _relative(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


def test_classifier_is_left_out_with_a_reason(imported):
    architecture, _, out = imported
    with open(os.path.join(out, "import.json")) as f:
        record = json.load(f)
    assert record["recipe"] == ["gin_configs/infonce_rgb.gin"]
    assert f"BACKBONE = '{architecture}'" in record["bindings"]
    left_out = {item["why"]: item["tensors"] for item in record["left_out"]}
    classifier = [n for why, n in left_out.items() if "classifier" in why]
    assert classifier == [2]  # weight and bias
    assert any("batch counters" in why for why in left_out)


# ---------------------------------------------------------------------------- errors
def _fails(tmp_path, path, match: str, **kwargs):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match) as error:
        import_checkpoint("torchvision", str(path), str(out), **kwargs)
    assert str(path) in str(error.value) or "--encoder" in str(error.value)
    assert "\n" not in str(error.value)
    assert not out.exists() and os.listdir(tmp_path) == [os.path.basename(path)]


@pytest.fixture(scope="module")
def r2plus1d_state():
    return video_models.r2plus1d_18().state_dict()


def test_truncated_file(r2plus1d_state, tmp_path):
    path = tmp_path / "r2plus1d_18.pth"
    torch.save(r2plus1d_state, str(path))
    path.write_bytes(path.read_bytes()[:100_000])
    _fails(tmp_path, path, "corrupt or truncated|not a file torch.save wrote")


def test_checkpoint_dict_is_the_wrong_format(r2plus1d_state, tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": r2plus1d_state, "epoch": 3}, str(path))
    _fails(tmp_path, path, "not a torchvision state_dict")


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "r3d_18.pth"
    torch.save(video_models.r3d_18().state_dict(), str(path))
    _fails(tmp_path, path, r"no backbone here .* r2plus1d_18 or s3d")


def test_encoder_must_match_the_keys(r2plus1d_state, tmp_path):
    path = tmp_path / "r2plus1d_18.pth"
    torch.save(r2plus1d_state, str(path))
    _fails(tmp_path, path, "--encoder=s3d, but the file holds r2plus1d_18's", encoder="s3d")
    _fails(tmp_path, path, "expected a torchvision architecture", encoder="r3d_18")


def test_missing_tensor_is_named(r2plus1d_state, tmp_path):
    state = dict(r2plus1d_state)
    del state["layer3.0.downsample.1.running_mean"]
    path = tmp_path / "r2plus1d_18.pth"
    torch.save(state, str(path))
    _fails(tmp_path, path, r"no tensor 'layer3\.0\.downsample\.1\.running_mean'")


def test_tensor_of_another_shape_is_named(r2plus1d_state, tmp_path):
    state = dict(r2plus1d_state, **{"layer2.0.conv2.0.0.weight": torch.zeros(231, 128, 1, 3, 3)})
    path = tmp_path / "r2plus1d_18.pth"
    torch.save(state, str(path))
    _fails(tmp_path, path, r"'layer2\.0\.conv2\.0\.0\.weight' has shape \(231, 128, 1, 3, 3\), "
                           r"expected \(230, 128, 1, 3, 3\)")
