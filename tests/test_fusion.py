"""Flow encoders in the evaluation protocols and two-stream fusion (CoCLR's †): a tiny
CoCLR stage whose primary (trained) encoder is flow and whose sampler is RGB, on tiny
shards with RGB and flow, evaluated through `python -m video_ssl.evaluate
--fuse_with=RUN:rgb`. The fused outputs are checked against the per-stream outputs
with NumPy: mean softmax scores (linear probe), mean of the cosine similarities of
each stream's L2-normalized features (retrieval)."""
import glob
import json
import os
from dataclasses import replace

import gin
import numpy as np
import pytest
from PIL import Image

import video_ssl.train  # noqa: F401  (registers train_input)
from helpers import CONFIGS, EVAL_CONFIGS, save_run, shard_pattern
from video_ssl import config as config_lib, evaluate as evaluate_lib
from video_ssl.evaluation import finetune, fusion
from video_ssl.evaluation.protocol import EvalData, Result
from video_ssl.pretrained import load_encoder

SIZE = 32


@pytest.fixture(scope="module")
def shards(make_shards):
    """RGB and flow; class = red level and horizontal motion, plus per-video noise."""
    content = dict(modalities=("rgb", "flow"), noise=True)
    return {"train": shard_pattern(make_shards("train", [0, 1] * 4, 2, **content)),
            "test": make_shards("test", [0, 1, 0, 1], videos=[10, 11, 12, 13], **content)[0],
            # The same test videos in another order (as from a different conversion).
            "reordered": make_shards("reordered", [1, 0, 0, 1], videos=[11, 10, 12, 13],
                                     **content)[0]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A CoCLR stage of the flow stream (primary encoder "flow") with its frozen RGB
    sampler ("rgb"): slow_r18 / 8 on 4 x 32^2 clips, saved untrained."""
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, "coclr_common.gin")], [
        "CoCLR.modality = 'flow'", "BACKBONE = 'slow_r18'",
        "BACKBONE_KWARGS = {'width_multiplier': 0.125}", "HEAD_HIDDEN_DIM = 16",
        "EMBEDDING_DIM = 8", "QUEUE_SIZE = 8", "BN_GROUP_SIZE = None",
        "train_input.num_frames = 4", "train_input.frame_stride = 2",
        "train_input.crop_size = 32"])
    directory = save_run(config_lib.method_configurable("CoCLR")(),
                         tmp_path_factory.mktemp("coclr") / "cycle1_flow")
    gin.clear_config()
    return directory


def overlay(tmp_path, shards, *extra):
    lines = [f"evaluate.train_files = {shards['train']!r}",
             f"evaluate.test_files = {shards['test']!r}", "NUM_CLASSES = 2",
             "evaluate.batch_size = 4", "evaluate.eval_batch_size = 2",
             "eval_input.num_frames = 4", "eval_input.frame_stride = 2",
             "eval_input.crop_size = 32", "test/eval_input.num_clips = 2",
             "test/eval_input.crop_size = 32", "test/eval_input.short_side = 32",
             "train/eval_input.short_side_range = (36, 46)",
             "linear_probe.epochs = 2", "linear_probe.warmup_epochs = 0",
             "linear_probe.verbose = 0", "retrieval.num_examples = 2",
             "retrieval.verbose = False", *extra]
    path = tmp_path / "tiny_eval.gin"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(capsys, *argv):
    code = evaluate_lib.main([str(a) for a in argv])
    return code, capsys.readouterr()


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------ flow encoders


def test_flow_is_the_primary_encoder_and_fine_tunes(run_dir, shards):
    flow = load_encoder(run_dir)
    assert (flow.encoder, flow.modality) == ("flow", "flow")
    assert flow.backbone.input_shape[-1] == 2
    rgb = load_encoder(run_dir, encoder="rgb")
    assert (rgb.modality, rgb.backbone.input_shape[-1]) == ("rgb", 3)
    clip = dict(num_frames=4, frame_stride=2, crop_size=SIZE)
    data = EvalData(sorted(glob.glob(shards["train"])), [shards["test"]], key="flow",
                    train_input={**clip, "short_side_range": (36, 46), "crop": "scale_jitter"},
                    test_input={**clip, "num_clips": 2, "short_side": SIZE},
                    batch_size=4, eval_batch_size=2)
    before = [w.numpy().copy() for w in flow.backbone.trainable_weights]
    result = finetune.finetune(flow.backbone, data, num_classes=2, epochs=1,
                               optimizer=replace(finetune.DEFAULT_OPTIMIZER, decay_epochs=()),
                               dropout=0.0, verbose=0)
    assert any(not np.array_equal(a, b.numpy())
               for a, b in zip(before, flow.backbone.trainable_weights))
    assert result.scores.shape == (4, 2) and result.labels.tolist() == [0, 1, 0, 1]


# ------------------------------------------------------------------------ fusion


def test_fused_linear_probe_is_the_mean_of_the_streams_softmax(run_dir, shards, tmp_path,
                                                                capsys):
    code, out = run(capsys, f"--gin_file={os.path.join(EVAL_CONFIGS, 'linear_ucf101.gin')}",
                    f"--gin_file={overlay(tmp_path, shards)}", f"--checkpoint={run_dir}",
                    f"--fuse_with={run_dir}:rgb", f"--output_dir={tmp_path}")
    assert code == 0, out.err
    assert "linear_ucf101 (flow): top1=" in out.out and "linear_ucf101 (fused): top1=" in out.out
    streams = {}
    for stream, modality in (("flow", "flow"), ("rgb", "rgb")):
        report = json.loads((tmp_path / f"eval_linear_ucf101_{stream}.json").read_text())
        assert report["stream"] == stream and report["modality"] == modality
        assert report["encoder"] == stream and report["method"] == "CoCLR"
        saved = np.load(tmp_path / f"eval_linear_ucf101_{stream}" / "test_scores.npz")
        np.testing.assert_allclose(saved["scores"].sum(axis=1), 1.0, atol=1e-5)  # softmax
        assert report["metrics"]["top1"] == np.mean(saved["scores"].argmax(1) == saved["labels"])
        streams[stream] = saved
    fused_dir = tmp_path / "eval_linear_ucf101_fused"
    fused = np.load(fused_dir / "test_scores.npz")
    mean = (streams["flow"]["scores"] + streams["rgb"]["scores"]) / 2
    np.testing.assert_allclose(fused["scores"], mean, atol=1e-6)
    np.testing.assert_array_equal(fused["labels"], [0, 1, 0, 1])
    report = json.loads((tmp_path / "eval_linear_ucf101_fused.json").read_text())
    assert report["fused"] and [s["stream"] for s in report["streams"]] == ["flow", "rgb"]
    assert report["metrics"]["top1"] == np.mean(mean.argmax(axis=1) == [0, 1, 0, 1])
    assert report["settings"]["fusion"]["fusion"] == "mean of the per-video scores"
    assert report["outputs"]["confusion"] == "eval_linear_ucf101_fused/confusion.png"
    with Image.open(fused_dir / "confusion.png") as image:
        assert image.format == "PNG" and image.width >= 600
    assert not glob.glob(str(tmp_path / "*.tmp*")) and not glob.glob(str(tmp_path / "*/*.tmp*"))


def test_fused_retrieval_is_the_mean_of_the_cosine_similarities(run_dir, shards, tmp_path,
                                                                 capsys):
    code, out = run(capsys, f"--gin_file={os.path.join(EVAL_CONFIGS, 'retrieval_ucf101.gin')}",
                    f"--gin_file={overlay(tmp_path, shards)}", f"--checkpoint={run_dir}",
                    f"--fuse_with={run_dir}:rgb", f"--output_dir={tmp_path}")
    assert code == 0, out.err
    similarities = []
    for stream in ("flow", "rgb"):
        saved = np.load(tmp_path / f"eval_retrieval_ucf101_{stream}" / "retrieval_features.npz")
        similarity = unit(saved["query_features"]) @ unit(saved["gallery_features"]).T
        np.testing.assert_allclose(saved["similarity"], similarity, atol=1e-5)
        similarities.append(similarity)
    mean = (similarities[0] + similarities[1]) / 2
    fused_dir = tmp_path / "eval_retrieval_ucf101_fused"
    fused = np.load(fused_dir / "retrieval_features.npz")
    np.testing.assert_allclose(fused["similarity"], mean, atol=1e-5)
    gallery_labels = fused["gallery_labels"]
    assert sorted(gallery_labels.tolist()) == [0] * 4 + [1] * 4
    assert fused["query_labels"].tolist() == [0, 1, 0, 1]
    report = json.loads((tmp_path / "eval_retrieval_ucf101_fused.json").read_text())
    top1 = gallery_labels[np.argmax(mean, axis=1)] == fused["query_labels"]
    assert report["metrics"]["recall@1"] == pytest.approx(top1.mean())
    assert report["metrics"]["recall@50"] == 1.0
    nearest = [int(np.argsort(-mean[e["query"]], kind="stable")[0]) for e in report["examples"]]
    assert [e["neighbours"][0] for e in report["examples"]] == nearest
    with Image.open(fused_dir / "neighbours.png") as image:
        assert image.width > 4 * 112 and 2 * 112 < image.height < 3 * 112


@pytest.mark.parametrize("param, message", [
    # The RGB stream reads the test videos in another order.
    ("rgb/evaluate.test_files={reordered!r}",
     "two-stream fusion: the test splits differ: stream 'flow' reads "
     "evaluate.test_files={test} (stream flow), stream 'rgb' "
     "evaluate.test_files={reordered} (stream rgb); video 0 (evaluation order) is "
     "'video_10' (labels [0]) in one and 'video_11' (labels [1]) in the other"),
    ("rgb/evaluate.protocol=@linear_svm", "two-stream fusion: stream 'rgb' runs "
                                          "linear_ucf101 (@linear_svm)"),
])
def test_streams_over_other_videos_or_protocols_are_one_clear_line(run_dir, shards, tmp_path,
                                                                   capsys, param, message):
    code, out = run(capsys, f"--gin_file={os.path.join(EVAL_CONFIGS, 'linear_ucf101.gin')}",
                    f"--gin_file={overlay(tmp_path, shards)}", f"--checkpoint={run_dir}",
                    f"--fuse_with={run_dir}:rgb", f"--output_dir={tmp_path}",
                    f"--gin_param={param.format(**shards)}")
    assert code == 1 and out.err.count("\n") == 1, out.err
    assert message.format(**shards) in out.err
    assert not glob.glob(str(tmp_path / "eval_*"))  # checked before anything ran


def test_split_source_and_stream_names():
    assert evaluate_lib.split_source("runs/coclr/cycle2_rgb:flow") == ("runs/coclr/cycle2_rgb",
                                                                      "flow")
    assert evaluate_lib.split_source("runs/coclr/cycle2_flow") == ("runs/coclr/cycle2_flow",
                                                                  None)
    assert evaluate_lib.split_source("gs://bucket/run") == ("gs://bucket/run", None)


def test_fuse_results_needs_the_same_videos_and_kinds():
    a = Result({}, {}, scores=np.array([[0.8, 0.2], [0.4, 0.6]]), labels=np.array([0, 1]))
    b = Result({}, {}, scores=np.array([[0.2, 0.8], [0.2, 0.8]]), labels=np.array([0, 1]))
    fused = fusion.fuse_results([a, b], names=["rgb", "flow"])
    np.testing.assert_allclose(fused.scores, [[0.5, 0.5], [0.3, 0.7]])
    assert fused.metrics["top1"] == 1.0 and fused.confusion.tolist() == [[1, 0], [0, 1]]
    c = Result({}, {}, scores=b.scores, labels=np.array([1, 1]))
    with pytest.raises(ValueError, match="the test labels of 'flow' differ from those of 'rgb'"):
        fusion.fuse_results([a, c], names=["rgb", "flow"])
    retrieval_result = Result({}, {"ks": [1]}, arrays={"retrieval_features": {}})
    with pytest.raises(ValueError, match="expected results with per-video scores"):
        fusion.fuse_results([a, retrieval_result])
