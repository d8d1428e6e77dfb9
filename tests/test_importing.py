"""The importers' shared parts: the torch.save reader (against torch itself), the
exactly-once weight mapping and the run writer (against `pretrained.load_encoder`)."""
import argparse
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import EVAL_CONFIGS, eval_overlay, run_main  # noqa: E402
from video_ssl import evaluate, export, pretrained  # noqa: E402
from video_ssl.importing import torch_file  # noqa: E402
from video_ssl.importing.run import Converted, write_run  # noqa: E402
from video_ssl.importing.weights import ImportFailure, SourceTensors, assign  # noqa: E402
from video_ssl.models.backbones import build_backbone  # noqa: E402


def _saved_object():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4))
    return {"epoch": 7, "state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.1),
            "transposed": torch.arange(12.0).reshape(3, 4).t(),
            "view": torch.arange(10.0)[3:7],
            "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
            "half": torch.tensor([0.25], dtype=torch.float16),
            "long": torch.arange(3), "flag": torch.tensor([True, False]),
            "optimizer": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9).state_dict()}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_file_reads_what_torch_save_wrote(tmp_path, zip_format):
    obj = _saved_object()
    path = str(tmp_path / "model.pth.tar")
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    loaded = torch_file.load(path)
    assert loaded["epoch"] == 7
    assert list(loaded["state_dict"]) == list(obj["state_dict"])
    for key, value in obj["state_dict"].items():
        np.testing.assert_array_equal(loaded["state_dict"][key], value.numpy(), err_msg=key)
    for key in ("transposed", "view", "half", "long", "flag"):
        np.testing.assert_array_equal(loaded[key], obj[key].numpy(), err_msg=key)
        assert loaded[key].dtype == obj[key].numpy().dtype
    np.testing.assert_array_equal(loaded["bf16"], [1.5, -2.0])
    # Other classes come back inert, their state readable, nothing of theirs executed.
    assert isinstance(loaded["args"], torch_file.Opaque)
    assert loaded["args"].state == {"lr": 0.1}


def test_torch_file_rejects_what_is_not_a_whole_torch_file(tmp_path):
    path = tmp_path / "model.pyth"
    torch.save(_saved_object(), str(path))
    data = path.read_bytes()
    cases = {"empty": b"", "text": b"not a checkpoint\n" * 8, "truncated": data[:len(data) // 2]}
    for name, content in cases.items():
        bad = tmp_path / f"{name}.pyth"
        bad.write_bytes(content)
        with pytest.raises(torch_file.TorchFileError) as error:
            torch_file.load(str(bad))
        message = str(error.value)
        assert str(bad) in message and "\n" not in message, (name, message)


def test_source_tensors_are_consumed_exactly_once():
    source = SourceTensors("f.pth", {"a": np.zeros(2), "b": np.ones((2, 3)), "opt.x": np.ones(1)})
    assert source.take("b", (2, 3)).shape == (2, 3)
    with pytest.raises(ImportFailure, match=r"f.pth: tensor 'b' consumed twice"):
        source.take("b")
    with pytest.raises(ImportFailure, match=r"f.pth: no tensor 'c'"):
        source.take("c")
    with pytest.raises(ImportFailure, match=r"'a' has shape \(2,\), expected \(3,\)"):
        source.take("a", (3,))
    assert source.drop(r"^opt\.", "optimizer state") == 1
    with pytest.raises(ImportFailure, match=r"tensor 'a' of shape \(2,\) has no place"):
        source.check_consumed()
    source.take("a")
    source.check_consumed()


def test_assign_needs_every_weight_once_with_its_shape():
    model = build_backbone("slow_r18", width_multiplier=0.125)
    weights = {v.path: np.full(v.shape, 0.5, "float32") for v in model.weights}
    assign(model, weights, source="f.pth")
    assert all(np.all(v.numpy() == 0.5) for v in model.weights)
    missing = dict(weights)
    missing.pop("conv1/kernel")
    with pytest.raises(ImportFailure, match=r"nothing for slow_r18 weight 'conv1/kernel'"):
        assign(model, missing, source="f.pth")
    with pytest.raises(ImportFailure, match=r"'head/kernel' has no place"):
        assign(model, {**weights, "head/kernel": np.zeros(1)}, source="f.pth")
    wrong = {**weights, "conv1/kernel": np.zeros((7, 7, 3, 8))}
    with pytest.raises(ImportFailure, match=r"'conv1/kernel' expects shape \(1, 7, 7, 3, 8\)"):
        assign(model, wrong, source="f.pth")


def _converted(path, weights, source_tensors=None):
    source = SourceTensors(path, source_tensors if source_tensors is not None else weights)
    for key in list(source.keys()):
        if key in weights:
            source.take(key)
    return Converted(
        format="test", source=source, method="MoCo", gin_files=["moco_rho2.gin"],
        bindings=["BACKBONE = 'slow_r18'", "BACKBONE_KWARGS = {'width_multiplier': 0.125}",
                  "train_input.num_frames = 4", "train_input.crop_size = 32",
                  "train_input.mean = (0.5, 0.4, 0.3)", "train_input.std = (0.2, 0.2, 0.25)"],
        encoders={"rgb": weights}, description="a test file")


@pytest.mark.slow
def test_write_run_is_a_training_run_for_load_encoder(tmp_path):
    reference = build_backbone("slow_r18", width_multiplier=0.125)
    rng = np.random.default_rng(0)
    weights = {v.path: (v.numpy() + rng.normal(size=v.shape) * 0.1).astype("float32")
               for v in reference.weights}
    out = str(tmp_path / "imported")
    prefix = write_run(_converted("f.pth", weights), out)
    assert prefix == os.path.join(out, "checkpoints", "ckpt-0")
    assert sorted(os.listdir(out)) == ["checkpoints", "import.json", "input_spec.json",
                                       "operative_config.gin"]
    encoder = pretrained.load_encoder(out)
    assert (encoder.method_name, encoder.modality, encoder.step) == ("MoCo", "rgb", 0)
    assert encoder.clip["num_frames"] == 4 and encoder.clip["crop_size"] == 32
    assert encoder.normalization == {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.25)}
    for variable in encoder.backbone.weights:
        np.testing.assert_allclose(variable.numpy(), weights[variable.path], err_msg=variable.path)

    # A tensor neither taken nor dropped: one line naming the file, nothing written.
    failed = str(tmp_path / "failed")
    extra = {**weights, "head.fc.weight": np.zeros((2, 3))}
    with pytest.raises(ImportFailure, match=r"^f.pth: tensor 'head.fc.weight' of shape \(2, 3\)"):
        write_run(_converted("f.pth", weights, extra), failed)
    missing = dict(weights)
    missing.pop("res5_1_b/kernel")
    with pytest.raises(ImportFailure, match=r"nothing for .* weight 'res5_1_b/kernel'"):
        write_run(_converted("f.pth", missing), failed)
    assert not os.path.exists(failed) and not os.path.exists(failed + ".tmp")


@pytest.mark.slow
def test_an_imported_run_evaluates_fuses_and_exports_unchanged(tmp_path, shards):
    """What every consumer of a training run does, on a written run: retrieval with
    two-stream fusion (`--fuse_with`) and a SavedModel export."""
    reference = build_backbone("slow_r18", width_multiplier=0.125)
    weights = {v.path: v.numpy() for v in reference.weights}
    run = str(tmp_path / "imported")
    write_run(_converted("f.pth", weights), run)
    code, out, err = run_main(evaluate, [
        f"--gin_file={os.path.join(EVAL_CONFIGS, 'retrieval_ucf101.gin')}",
        f"--gin_file={eval_overlay(tmp_path, {'train': shards, 'test': shards})}",
        f"--checkpoint={run}",
        f"--fuse_with={run}", f"--output_dir={tmp_path / 'eval'}"])
    assert code == 0, err
    fused = json.loads((tmp_path / "eval" / "eval_retrieval_ucf101_fused.json").read_text())
    assert 0.0 <= fused["metrics"]["recall@1"] <= 1.0
    code, out, err = run_main(export, [f"--model_dir={run}", f"--output={tmp_path / 'saved'}"])
    assert code == 0, err
    assert (tmp_path / "saved" / "saved_model.pb").exists()
