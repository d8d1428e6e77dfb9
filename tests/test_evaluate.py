"""`video_ssl.pretrained.load_encoder` and `python -m video_ssl.evaluate` on a training
run of one step (tiny MoCo), with the paper configs made tiny by an overlay."""
import glob
import json
import os
import shutil

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import CONFIGS, EVAL_CONFIGS, eval_overlay, runnable_eval_configs, shard_pattern
from video_ssl import config as config_lib, evaluate as evaluate_lib, train as train_lib
from video_ssl.pretrained import CheckpointError, load_encoder


@pytest.fixture(scope="module")
def shards(make_shards):
    """This module's splits: 8 train videos in 4 shards (both classes in each), 4 test
    videos, and an unlabeled one."""
    return {"train": shard_pattern(make_shards("train", [0, 0, 0, 0, 1, 1, 1, 1], 4)),
            "test": make_shards("test", [0, 1, 0, 1])[0],
            "unlabeled": make_shards("unlabeled", [None, 1])[0]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shards):
    """A tiny ρMoCo run (slow_r18 / 8, 4 x 32^2 clips) of one step."""
    directory = tmp_path_factory.mktemp("run") / "model"
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, "moco_rho2.gin")], [
        f"train.train_files={shards['train']!r}", "train.global_batch_size=4",
        "train.epochs=1", "train.steps_per_epoch=1", "train.warmup_epochs=0",
        "train.verbose=0", "BACKBONE='slow_r18'", "BACKBONE_KWARGS={'width_multiplier': 0.125}",
        "MoCo.queue_size=16", "MoCo.hidden_dim=16", "MoCo.embedding_dim=8",
        "train_input.num_frames=4", "train_input.frame_stride=2", "train_input.crop_size=32",
        "train_input.std=0.25"])
    train_lib.train(str(directory))
    gin.clear_config()
    return str(directory)


def run(capsys, model_dir, *gin_files, extra=()):
    argv = [f"--gin_file={f}" for f in gin_files] + [f"--checkpoint={model_dir}", *extra]
    code = evaluate_lib.main(argv)
    return code, capsys.readouterr()


# ------------------------------------------------------------------- load_encoder


def test_load_encoder_restores_the_trained_backbone(model_dir):
    pretrained = load_encoder(model_dir)
    assert gin.config_str() == ""  # the training bindings are gone
    assert pretrained.method_name == "MoCo" and pretrained.step == 1
    assert pretrained.checkpoint_path.endswith("ckpt-1")
    assert pretrained.clip == {"num_frames": 4, "frame_stride": 2, "crop_size": 32,
                               "target_fps": None}
    assert pretrained.normalization == {"mean": 0.45, "std": 0.25}
    clips = tf.random.stateless_uniform([2, 4, 32, 32, 3], seed=[1, 2])
    saved_model = tf.saved_model.load(os.path.join(model_dir, "export"))
    exported = saved_model.serve(clips)["features"]
    np.testing.assert_allclose(pretrained.backbone(clips, training=False), exported,
                               atol=1e-5)
    baseline = load_encoder(model_dir, random_init=True)
    assert baseline.checkpoint_path is None and baseline.step == 0
    assert not np.allclose(baseline.backbone(clips, training=False), exported, atol=1e-3)


def test_load_encoder_errors_name_the_path(model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere: no such training directory"):
        load_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="operative_config.gin: no such file"):
        load_encoder(str(tmp_path))
    with pytest.raises(CheckpointError, match="ckpt-99: no such checkpoint"):
        load_encoder(model_dir, os.path.join(model_dir, "checkpoints", "ckpt-99"))
    no_checkpoints = tmp_path / "untrained"
    no_checkpoints.mkdir()
    shutil.copy(os.path.join(model_dir, "operative_config.gin"), no_checkpoints)
    with pytest.raises(CheckpointError, match="checkpoints: no such folder"):
        load_encoder(str(no_checkpoints))
    gin.bind_parameter("train.epochs", 3)
    with pytest.raises(ValueError, match="gin already holds bindings"):
        load_encoder(model_dir)


def mismatched_copy(model_dir, tmp_path):
    """The run with its config edited to a wider backbone than its checkpoint holds."""
    copy = str(tmp_path / "mismatched")
    shutil.copytree(model_dir, copy)
    config = os.path.join(copy, "operative_config.gin")
    with open(config) as f:
        text = f.read().replace("'width_multiplier': 0.125", "'width_multiplier': 0.25")
    with open(config, "w") as f:
        f.write(text)
    return copy, config


def test_checkpoint_config_mismatch_is_one_clear_line(model_dir, tmp_path, capsys):
    copy, config = mismatched_copy(model_dir, tmp_path)
    with pytest.raises(CheckpointError, match="does not match the model configured by"):
        load_encoder(copy)
    code, out = run(capsys, copy, os.path.join(EVAL_CONFIGS, "linear_ucf101.gin"))
    assert code == 1
    assert out.err.count("\n") == 1 and "Traceback" not in out.err
    assert "ckpt-1 does not match" in out.err and config in out.err


# ------------------------------------------------------------------------ the CLI


def test_linear_probe_cli_writes_report_figure_and_model(model_dir, shards, tmp_path, capsys):
    code, out = run(capsys, model_dir, os.path.join(EVAL_CONFIGS, "linear_ucf101.gin"),
                    eval_overlay(tmp_path, shards), extra=[f"--output_dir={tmp_path}"])
    assert code == 0, out.err
    assert "linear_ucf101: top1=" in out.out
    report = json.loads((tmp_path / "eval_linear_ucf101.json").read_text())
    assert report["checkpoint"].endswith("ckpt-1") and report["step"] == 1
    assert not report["random_init"] and report["method"] == "MoCo"
    assert 0.0 <= report["metrics"]["top1"] <= 1.0 and report["metrics"]["num_videos"] == 4
    protocol = report["settings"]["protocol"]
    assert protocol["num_classes"] == 2 and protocol["epochs"] == 2
    assert report["settings"]["inputs"]["test"]["eval_crops"] == 3  # the paper's 3 crops
    assert report["settings"]["inputs"]["train"]["std"] == 0.25  # the run's normalization
    # §B.2, at batch 512
    assert "linear_probe/OptimizerSpec.base_learning_rate = 4.0" in report["gin_config"]
    assert not glob.glob(str(tmp_path / "*.tmp*")) and not glob.glob(str(tmp_path / "*/*.tmp*"))

    outputs = tmp_path / "eval_linear_ucf101"
    with Image.open(outputs / "confusion.png") as image:
        assert image.format == "PNG" and image.width >= 600
    scores = np.load(outputs / "test_scores.npz")
    assert scores["scores"].shape == (4, 2) and scores["labels"].tolist() == [0, 1, 0, 1]
    model = keras.saving.load_model(outputs / "model.keras")
    logits = model(tf.zeros([1, 4, 32, 32, 3]))
    assert logits.shape == (1, 2)


def test_retrieval_cli_random_init_writes_neighbour_sheet(model_dir, shards, tmp_path,
                                                          capsys):
    code, out = run(capsys, model_dir, os.path.join(EVAL_CONFIGS, "retrieval_ucf101.gin"),
                    eval_overlay(tmp_path, shards),
                    extra=["--random_init", f"--output_dir={tmp_path}"])
    assert code == 0, out.err
    report = json.loads((tmp_path / "eval_retrieval_ucf101_random_init.json").read_text())
    assert report["random_init"] and report["checkpoint"] is None and report["step"] == 0
    recalls = [report["metrics"][f"recall@{k}"] for k in (1, 5, 10, 20, 50)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0
    assert report["settings"]["inputs"]["test"]["window_overlap"] == 0.5
    assert [e["label"] for e in report["examples"]] == [0, 1]
    with Image.open(tmp_path / "eval_retrieval_ucf101_random_init" / "neighbours.png") as image:
        # 2 query rows of 4 tiles (query + 3 neighbours) of 112 pixels.
        assert image.width > 4 * 112 and 2 * 112 < image.height < 3 * 112
    # Saved for two-stream fusion: features, labels and the test x train similarity.
    saved = np.load(tmp_path / "eval_retrieval_ucf101_random_init" / "retrieval_features.npz")
    assert saved["similarity"].shape == (4, 8) and saved["query_labels"].tolist() == [0, 1, 0, 1]
    assert report["outputs"]["retrieval_features"].endswith("retrieval_features.npz")
    # --random_init=SEED draws another backbone (a bare --random_init is seed 0).
    other = tmp_path / "seed3"
    code, out = run(capsys, model_dir, os.path.join(EVAL_CONFIGS, "retrieval_ucf101.gin"),
                    eval_overlay(tmp_path, shards), extra=["--random_init=3",
                                                          f"--output_dir={other}"])
    assert code == 0, out.err
    drawn = np.load(other / "eval_retrieval_ucf101_random_init" / "retrieval_features.npz")
    assert np.abs(drawn["query_features"] - saved["query_features"]).max() > 1e-3


def test_unlabeled_shards_are_one_clear_line(model_dir, shards, tmp_path, capsys):
    overlay = eval_overlay(tmp_path, shards, test="unlabeled")
    code, out = run(capsys, model_dir, os.path.join(EVAL_CONFIGS, "retrieval_hmdb51.gin"),
                    overlay, extra=[f"--output_dir={tmp_path}"])
    assert code == 1 and out.err.count("\n") == 1
    assert f"evaluate.test_files={shards['unlabeled']}: a video has no label" in out.err
    assert not glob.glob(str(tmp_path / "eval_*.json"))


@pytest.mark.parametrize("param, message", [
    ("evaluate.train_files=None", "evaluate.train_files is not set"),
    ("evaluate.test_files='/nowhere/*.tfrecord'", "evaluate.test_files='/nowhere/*.tfrecord' "
                                                  "matches no files"),
    ("linear_probe.epochs=3", "--gin_param=linear_probe.epochs=3: has no effect, "
                              "evaluate.protocol is @linear_svm"),
])
def test_missing_data_names_the_binding(model_dir, shards, capsys, param, message):
    code, out = run(capsys, model_dir, os.path.join(EVAL_CONFIGS, "svm_ucf101.gin"),
                    extra=[f"--gin_param=evaluate.train_files={shards['train']!r}",
                           f"--gin_param={param}"])
    assert code == 1 and message in out.err and out.err.count("\n") == 1


@pytest.fixture(scope="module")
def pretrained(model_dir):
    gin.clear_config()
    return load_encoder(model_dir)


@pytest.mark.parametrize("config", runnable_eval_configs())
def test_every_eval_config_parses_with_the_demo_overlay(pretrained, tmp_path, config):
    config_lib.parse_gin([os.path.join(EVAL_CONFIGS, config)], [])
    assert gin.query_parameter("evaluate.name") == config[:-len(".gin")]
    # Paper configs leave the dataset to the user.
    with pytest.raises(ValueError, match="evaluate.train_files is not set"):
        evaluate_lib.evaluate(pretrained, str(tmp_path))
    gin.clear_config()
    config_lib.parse_gin([os.path.join(EVAL_CONFIGS, config), os.path.join(EVAL_CONFIGS, "demo.gin")],
                  [])
    assert gin.query_parameter("eval_input.num_frames") == 4
    assert gin.query_parameter("%NUM_CLASSES") == 8
