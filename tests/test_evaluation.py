"""Evaluation protocols on tiny shards and a tiny backbone: recall@k against brute
force, similarity fusion, multi-view averaging (padding included), score fusion,
metrics, settings without effect, each protocol (linear probe, fine-tuning, retrieval,
linear SVM), class names and the confusion figure, and the gin_configs/eval/ tree
(every block included, every config parses, the papers' values)."""
import os
import re
from dataclasses import replace

import gin
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import video_ssl.evaluate  # noqa: F401  (registers the evaluation configurables)
from helpers import EVAL_CONFIGS, eval_gin_files, runnable_eval_configs, write_shards
from video_ssl import config as config_lib, optim
from video_ssl.data import schema
from video_ssl.evaluation import figures, finetune, linear, multiview, retrieval, svm
from video_ssl.evaluation.protocol import EvalData, check_protocol_bindings, classification_metrics
from video_ssl.models import build_backbone

SIZE = 32
CLIP = dict(num_frames=4, frame_stride=2, crop_size=SIZE)
PLAIN = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


@pytest.fixture(scope="module")
def data(make_shards):
    # 4 train shards, each with both classes; 4 test videos in one shard.
    train = make_shards("train", [0, 0, 0, 0, 1, 1, 1, 1], 4)
    test = make_shards("test", [0, 1, 0, 1])
    return EvalData(train, test, train_input={**CLIP, **PLAIN},
                    test_input={**CLIP, "num_clips": 2, "eval_crops": 3},
                    gallery_input=dict(CLIP), batch_size=4, eval_batch_size=2)


def tiny_backbone():
    return build_backbone("slow_r18", width_multiplier=0.125)


# ---------------------------------------------------------------------- retrieval


def brute_force_recall(queries, query_labels, gallery, gallery_labels, k):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    hits = []
    for row, label in zip(q @ g.T, query_labels):
        order = sorted(range(len(row)), key=lambda j: -row[j])[:k]
        hits.append(any(gallery_labels[j] == label for j in order))
    return float(np.mean(hits))


def test_recall_at_k_matches_brute_force():
    rng = np.random.default_rng(1)
    queries, gallery = rng.normal(size=(37, 6)), rng.normal(size=(41, 6))
    query_labels, gallery_labels = rng.integers(0, 7, 37), rng.integers(0, 7, 41)
    ks = (1, 5, 10, 20, 50)  # 50 > gallery: the whole gallery counts
    recalls = retrieval.recall_at_k(queries, query_labels, gallery, gallery_labels, ks)
    assert list(recalls) == list(ks)
    for k in ks:
        assert recalls[k] == pytest.approx(
            brute_force_recall(queries, query_labels, gallery, gallery_labels, k))
    assert recalls[50] == float(np.isin(query_labels, gallery_labels).mean())
    # Chunked search finds the same neighbours.
    np.testing.assert_array_equal(
        retrieval.nearest_neighbours(queries, gallery, 5, chunk_size=4),
        retrieval.nearest_neighbours(queries, gallery, 5))


def test_recall_at_k_uses_cosine_similarity():
    # By dot product the long gallery vector would win; by cosine the aligned one does.
    gallery = np.array([[10.0, 8.0], [1.0, 0.0]])
    recalls = retrieval.recall_at_k([[1.0, 0.0]], [1], gallery, [0, 1], ks=(1, 2))
    assert recalls == {1: 1.0, 2: 1.0}
    assert retrieval.recall_at_k([[0.0, 1.0]], [1], gallery, [0, 1], ks=(1,)) == {1: 0.0}
    with pytest.raises(ValueError, match="positive ks"):
        retrieval.recall_at_k([[1.0, 0.0]], [1], gallery, [0, 1], ks=(0,))
    with pytest.raises(ValueError, match="features"):
        retrieval.recall_at_k([[1.0, 0.0, 0.0]], [1], gallery, [0, 1])


def test_recall_from_similarity_matches_recall_at_k():
    rng = np.random.default_rng(2)
    queries, gallery = rng.normal(size=(9, 4)), rng.normal(size=(13, 4))
    query_labels, gallery_labels = rng.integers(0, 3, 9), rng.integers(0, 3, 13)
    similarity = retrieval.cosine_similarity(queries, gallery)
    assert similarity.shape == (9, 13)
    assert retrieval.recall_from_similarity(similarity, query_labels, gallery_labels) == \
        retrieval.recall_at_k(queries, query_labels, gallery, gallery_labels)
    with pytest.raises(ValueError, match="one label per feature row"):
        retrieval.recall_from_similarity(similarity, query_labels[:3], gallery_labels)


def _saved_retrieval(path, similarity, query_labels, gallery_labels):
    np.savez(path, similarity=np.asarray(similarity, np.float32),
             query_labels=np.asarray(query_labels), gallery_labels=np.asarray(gallery_labels))
    return str(path)


def test_fused_recall_averages_the_saved_similarities(tmp_path):
    # Gallery labels [0, 1, 2]; queries of class 0 and 1. Each stream alone ranks one
    # query's own class second; their mean ranks both first.
    gallery_labels, query_labels = [0, 1, 2], [0, 1]
    rgb = _saved_retrieval(tmp_path / "rgb.npz", [[0.3, 0.1, 0.8], [0.0, 0.9, 0.1]],
                           query_labels, gallery_labels)
    flow = _saved_retrieval(tmp_path / "flow.npz", [[0.9, 0.0, 0.2], [0.0, 0.2, 0.8]],
                            query_labels, gallery_labels)
    assert retrieval.fused_recall([rgb], ks=(1,)) == {1: 0.5}
    assert retrieval.fused_recall([flow], ks=(1,)) == {1: 0.5}
    # Mean: [[0.6, 0.05, 0.5], [0.0, 0.55, 0.45]]: both right at rank 1.
    assert retrieval.fused_recall([rgb, flow], ks=(1, 2)) == {1: 1.0, 2: 1.0}
    # Weighted 1:3 (or 3:1), flow (or RGB) decides and query 1 (or 0) is missed again.
    assert retrieval.fused_recall([rgb, flow], weights=[1, 3], ks=(1,)) == {1: 0.5}
    assert retrieval.fused_recall([rgb, flow], weights=[3, 1], ks=(1,)) == {1: 0.5}
    other = _saved_retrieval(tmp_path / "other.npz", np.zeros((2, 3)), [1, 0], gallery_labels)
    with pytest.raises(ValueError, match="other.npz: its query_labels differ"):
        retrieval.fused_recall([rgb, other])
    np.savez(tmp_path / "scores.npz", scores=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="scores.npz: expected a retrieval_features.npz"):
        retrieval.fused_recall([rgb, str(tmp_path / "scores.npz")])


# -------------------------------------------------------------------- multi-view


def test_average_over_views_skips_padded_views():
    # 2 videos x 3 view slots; video 1 has one padded slot (value 100, mask False).
    views = np.array([[1.0, 2.0, 3.0], [4.0, 8.0, 100.0]], np.float32)
    clips = np.broadcast_to(views[:, :, None, None, None, None], (2, 3, 1, 2, 2, 1))
    dataset = tf.data.Dataset.from_tensors({
        "rgb": tf.constant(clips), "label": tf.constant([3, 5]),
        "clip_mask": tf.constant([[True, True, True], [True, True, False]])})
    seen = []

    def fn(batch):  # per-clip mean pixel and its square
        seen.extend(np.asarray(batch).reshape(len(batch), -1).mean(axis=1).tolist())
        value = tf.reduce_mean(batch, axis=[1, 2, 3, 4])
        return tf.stack([value, value ** 2], axis=1)

    scores, labels = multiview.average_over_views(fn, dataset, verbose=False, chunk=2)
    np.testing.assert_allclose(scores, [[2.0, 14 / 3], [6.0, 40.0]])
    np.testing.assert_array_equal(labels, [3, 5])
    assert sorted(seen) == [1.0, 2.0, 3.0, 4.0, 8.0]  # the padded view was never scored
    with pytest.raises(ValueError, match="no valid view"):
        multiview.masked_view_mean(np.ones((1, 2, 1)), np.zeros((1, 2), bool))


def test_dense_windows_average_is_per_video(tmp_path):
    """Videos of different lengths have different window counts; in a padded batch each
    is averaged over its own windows only, as when evaluated alone."""
    files = write_shards(tmp_path / "dense", [0, 1, 0], 1, lengths=[10, 30, 18])
    fn = lambda clips: tf.reduce_mean(clips, axis=[1, 2, 3])  # mean colour per clip  # noqa
    results = []
    for batch_size in (3, 1):
        data = EvalData(files, files, test_input={**CLIP, "window_overlap": 0.5,
                                                  "eval_crops": 3},
                        eval_batch_size=batch_size)
        results.append(multiview.average_over_views(fn, data.test(), verbose=False))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
    # Green = 8 x frame index: longer videos have later windows, so a larger mean.
    green = results[0][0][:, 1]
    assert green[0] < green[2] < green[1]


def test_fuse_averages_streams():
    rgb, flow = np.array([[0.6, 0.4], [0.2, 0.8]]), np.array([[0.2, 0.8], [0.4, 0.6]])
    np.testing.assert_allclose(multiview.fuse([rgb, flow]), [[0.4, 0.6], [0.3, 0.7]])
    np.testing.assert_allclose(multiview.fuse([rgb, flow], weights=[3, 1]),
                               [[0.5, 0.5], [0.25, 0.75]])
    with pytest.raises(ValueError, match="one shape"):
        multiview.fuse([rgb, flow[:1]])
    with pytest.raises(ValueError, match="weights"):
        multiview.fuse([rgb, flow], weights=[1, -1])


def test_classification_metrics():
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([0, 1, 1, 2])
    metrics, confusion = classification_metrics(scores, labels, num_classes=3)
    assert metrics["top1"] == 0.5 and metrics["top5"] == 1.0 and metrics["num_videos"] == 4
    # Per class: 1/1, 0/2, 1/1.
    assert metrics["mean_class_accuracy"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(confusion, [[1, 0, 0], [1, 0, 1], [0, 0, 1]])


# ------------------------------------------------- optimizer settings (optim.py)


def test_a_schedule_setting_without_effect_names_the_binding(data):
    with pytest.raises(ValueError, match="linear_probe/OptimizerSpec.decay_epochs=\\(6, 8\\) "
                                         "has no effect with linear_probe/OptimizerSpec."
                                         "schedule='cosine'"):
        linear.linear_probe(tiny_backbone(), data, num_classes=2, verbose=0,
                            optimizer=replace(linear.DEFAULT_OPTIMIZER, decay_epochs=(6, 8)))
    with pytest.raises(ValueError, match="finetune/OptimizerSpec.momentum=0.5 has no effect "
                                         "with finetune/OptimizerSpec.name='adam'"):
        finetune.finetune(tiny_backbone(), data, num_classes=2, verbose=0,
                          optimizer=replace(finetune.DEFAULT_OPTIMIZER, name="adam",
                                            momentum=0.5))
    with pytest.raises(ValueError, match="linear_probe.warmup_epochs=8.0 has no effect with "
                                         "linear_probe/OptimizerSpec.schedule='plateau'"):
        linear.linear_probe(tiny_backbone(), data, num_classes=2, verbose=0,
                            optimizer=replace(linear.DEFAULT_OPTIMIZER, schedule="plateau"))
    with pytest.raises(ValueError, match="linear_probe.optimizer: expected an OptimizerSpec"):
        linear.linear_probe(tiny_backbone(), data, num_classes=2, optimizer="sgd", verbose=0)


def test_a_probe_builds_the_optimizer_pretraining_builds_from_the_same_bindings(
        data, monkeypatch):
    """One set of names: `build_optimizer.<field>` (pre-training) and
    `linear_probe/OptimizerSpec.<field>` (the probe) bound to the same values give
    optimizers with the same hyperparameters for the same run."""
    values = {"name": "'lars'", "base_learning_rate": "2.0", "reference_batch_size": "256",
              "schedule": "'step'", "decay_epochs": "(1,)", "decay_factor": "0.5",
              "weight_decay": "1e-4", "exclude_patterns": "('feature_bn',)",
              "lr_multipliers": "{'logits': 2.0}", "momentum": "0.8", "nesterov": "True",
              "trust_coefficient": "0.002"}
    lines = ["linear_probe.optimizer = @linear_probe/OptimizerSpec()"]
    for field, value in values.items():
        lines += [f"build_optimizer.{field} = {value}",
                  f"linear_probe/OptimizerSpec.{field} = {value}"]
    built = []  # (spec, run arguments, optimizer) of every OptimizerSpec.build
    build = optim.OptimizerSpec.build

    def recording_build(spec, **run):
        built.append((spec, run, build(spec, **run)))
        return built[-1][2]

    monkeypatch.setattr(optim.OptimizerSpec, "build", recording_build)
    gin.clear_config()
    try:
        gin.parse_config("\n".join(lines))
        linear.linear_probe(tiny_backbone(), data, num_classes=2, epochs=2, warmup_epochs=1,
                            verbose=0)
        [(spec, run, probe)] = built
        pretraining = optim.build_optimizer(**{k: run[k] for k in (
            "global_batch_size", "total_steps", "warmup_steps", "steps_per_epoch")})
    finally:
        gin.clear_config()
    assert spec == optim.OptimizerSpec(
        "lars", 2.0, reference_batch_size=256, schedule="step", decay_epochs=(1,),
        decay_factor=0.5, weight_decay=1e-4, exclude_patterns=("feature_bn",),
        lr_multipliers={"logits": 2.0}, momentum=0.8, nesterov=True, trust_coefficient=0.002)
    assert run["warmup_steps"] == 2 and run["global_batch_size"] == data.batch_size
    assert type(probe) is type(pretraining) is optim.LARS
    assert probe.get_config() == pretraining.get_config()


def test_a_command_line_binding_of_another_protocol_is_an_error():
    params = ["evaluate.protocol=@retrieval", "retrieval.ks=(1, 5)",
              "train/eval_input.crop_size=32"]
    gin.clear_config()
    try:
        config_lib.parse_gin([], params + ["linear_probe.epochs=3"])
        check_protocol_bindings(params)  # the protocol's own and clip bindings pass
        with pytest.raises(ValueError, match="--gin_param=linear_probe.epochs=3: has no "
                                             "effect, evaluate.protocol is @retrieval"):
            check_protocol_bindings(params + ["linear_probe.epochs=3"])
        # A probe's optimizer spec is the probe's too.
        spec = "finetune/OptimizerSpec.base_learning_rate=0.1"
        with pytest.raises(ValueError, match=f"--gin_param={spec}: has no effect"):
            check_protocol_bindings(params + [spec])
    finally:
        gin.clear_config()


# --------------------------------------------------------------------- protocols


def test_linear_probe_freezes_the_backbone(data):
    backbone = tiny_backbone()
    before = [w.numpy().copy() for w in backbone.weights]  # BN statistics included
    result = linear.linear_probe(backbone, data, num_classes=2, epochs=3, warmup_epochs=1,
                                 optimizer=replace(linear.DEFAULT_OPTIMIZER,
                                                   base_learning_rate=2.0),
                                 batch_norm=True, l2_normalize=True, verbose=0)
    for old, new in zip(before, backbone.weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert result.metrics["top1"] == 1.0  # red level separates the classes
    assert result.confusion.sum() == 4 and result.scores.shape == (4, 2)
    np.testing.assert_allclose(result.scores.sum(axis=1), 1.0, atol=1e-5)  # mean softmax
    assert result.settings["batch_norm"] and result.metrics["steps"] == 6
    logits = result.model(tf.zeros([2, 4, SIZE, SIZE, 3]))
    assert logits.shape == (2, 2)


def test_finetune_trains_backbone_at_a_scaled_rate(data, capsys):
    """With its default verbose ('auto') into a captured stdout (no terminal): plain
    progress lines, no live bar's colour codes or carriage returns."""
    backbone = tiny_backbone()
    before = [w.numpy().copy() for w in backbone.trainable_weights]
    adam = replace(finetune.DEFAULT_OPTIMIZER, name="adam", base_learning_rate=1e-3,
                   reference_batch_size=None, decay_epochs=())
    result = finetune.finetune(backbone, data, num_classes=2, epochs=1, optimizer=adam,
                               backbone_lr_scale=0.1, dropout=0.5)
    out = capsys.readouterr().out
    assert "loss:" in out and "4/4" in out  # the epoch's line and the test videos' line
    assert not {"\x1b", "\r", "\b"} & set(out), repr(out)
    changed = [not np.array_equal(old, new.numpy())
               for old, new in zip(before, backbone.trainable_weights)]
    assert all(changed)
    assert 0.0 <= result.metrics["top1"] <= 1.0 and result.settings["backbone_lr_scale"] == 0.1
    with pytest.raises(ValueError, match="finetune.num_classes is not set"):
        finetune.finetune(backbone, data)


def test_finetune_backbone_rate_reaches_only_the_backbone(data):
    backbone = tiny_backbone()
    before = [w.numpy().copy() for w in backbone.trainable_weights]
    sgd = replace(finetune.DEFAULT_OPTIMIZER, base_learning_rate=0.1,
                  reference_batch_size=None, weight_decay=0.0)
    result = finetune.finetune(backbone, data, num_classes=2, epochs=1, optimizer=sgd,
                               backbone_lr_scale=0.0, dropout=0.0, verbose=0)
    for old, new in zip(before, backbone.trainable_weights):
        np.testing.assert_array_equal(old, new.numpy())
    head = result.model.get_layer("logits").kernel.numpy()
    assert np.abs(head).max() > 0.05  # moved from N(0, 0.01)


def test_retrieval_protocol(data):
    result = retrieval.retrieval(tiny_backbone(), data, ks=(1, 3, 50), num_examples=2,
                                 verbose=False)
    recalls = [result.metrics[f"recall@{k}"] for k in (1, 3, 50)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0
    assert recalls[0] == 1.0  # videos of a class are identical up to JPEG noise
    assert result.metrics["num_queries"] == 4 and result.metrics["num_gallery"] == 8
    assert [e["label"] for e in result.neighbours] == [0, 1]
    for example in result.neighbours:
        assert len(example["neighbours"]) == retrieval.NEIGHBOURS_SHOWN
        assert example["neighbour_labels"] == [example["label"]] * 3
    saved = result.arrays["retrieval_features"]
    assert saved["similarity"].shape == (4, 8)
    assert saved["query_features"].shape[0] == 4 and saved["gallery_features"].shape[0] == 8
    np.testing.assert_array_equal(saved["query_labels"], [0, 1, 0, 1])
    np.testing.assert_allclose(saved["similarity"], retrieval.cosine_similarity(
        saved["query_features"], saved["gallery_features"]), atol=1e-6)
    # Indices follow the evaluation order: the frames shown are those videos' frames.
    shown = data.first_frames("train", result.neighbours[1]["neighbours"], size=16)
    for frame in shown.values():
        assert abs(int(frame[..., 0].mean()) - 200) < 10  # class 1 is red level 200


def test_linear_svm_chooses_c_on_held_out_shards(data):
    result = svm.linear_svm(tiny_backbone(), data, num_classes=2, regularization=(1e-3, 1.0),
                            train_epochs=2, verbose=False)
    assert result.metrics["top1"] == 1.0
    assert set(result.metrics["validation_accuracy"]) == {"0.001", "1.0"}
    assert result.metrics["regularization"] in (1e-3, 1.0)
    assert result.metrics["num_train_clips"] == 16  # 2 passes over 8 videos
    assert result.scores.shape == (4, 2) and result.confusion.trace() == 4


def test_linear_svm_default_is_the_official_fixed_c(data):
    """deepmind/brave fits one SVM at C = 1e-4 (README.md:27-28, :68): no held-out split."""
    result = svm.linear_svm(tiny_backbone(), data, num_classes=2, train_epochs=2,
                            verbose=False)
    assert result.metrics["regularization"] == 1e-4 == svm.DEFAULT_REGULARIZATION
    assert "validation_accuracy" not in result.metrics
    assert result.metrics["num_train_clips"] == 16  # 2 passes over all 8 train videos
    assert result.metrics["top1"] == 1.0


def test_svm_validation_split_needs_two_shards():
    assert svm.split_validation(["a", "b", "c", "d"], 0.25) == (["a", "b", "c"], ["d"])
    assert svm.split_validation(["a", "b"], 0.9) == (["a"], ["b"])
    with pytest.raises(ValueError, match="at least 2 train shards"):
        svm.split_validation(["a"], 0.1)


def test_unlabeled_videos_are_rejected(tmp_path):
    files = write_shards(tmp_path / "unlabeled", [0, None], 1)
    data = EvalData(files, files, train_input=dict(CLIP), test_input=dict(CLIP),
                    test_source="evaluate.test_files=x", eval_batch_size=2)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="evaluate.test_files=x: a video has no label"):
        list(data.test())
    out_of_range = write_shards(tmp_path / "labeled", [0, 3], 1)
    data = EvalData(out_of_range, out_of_range, test_input=dict(CLIP))
    with pytest.raises(tf.errors.InvalidArgumentError, match="label is >= num_classes=2"):
        list(data.test(num_classes=2))


def test_first_frames_are_the_videos_first_frames(data):
    frames = data.first_frames("train", [0, 5], size=16)
    assert sorted(frames) == [0, 5]
    for frame in frames.values():
        assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
        assert frame[..., 1].max() <= 4  # green 8 x index: frame 0


# ------------------------------------------------------------ gin_configs/eval/


def test_every_eval_block_is_included_and_every_config_parses():
    texts = eval_gin_files()
    included = {m for text in texts.values() for m in re.findall(r"^include '(.+)'", text, re.M)}
    blocks = set(texts) - set(runnable_eval_configs()) - {"demo.gin"}
    assert blocks and blocks <= included, f"blocks included nowhere: {blocks - included}"
    assert included <= set(texts), f"includes of missing files: {included - set(texts)}"
    for name in runnable_eval_configs():
        for overlay in ([], ["demo.gin"]):
            gin.clear_config()
            config_lib.parse_gin([os.path.join(EVAL_CONFIGS, f) for f in [name, *overlay]], [])
            assert gin.query_parameter("evaluate.name") == name[:-len(".gin")]
    gin.clear_config()


RHO_FINETUNE = {  # ρ-paper §B.6 (UCF101) = §B.7 (HMDB51), with §B.2's augmentation and views
    "evaluate.batch_size": 64, "finetune.epochs": 200,
    "finetune/OptimizerSpec.base_learning_rate": 0.025,
    "finetune/OptimizerSpec.reference_batch_size": 64,
    "finetune/OptimizerSpec.schedule": "step",
    "finetune/OptimizerSpec.decay_epochs": (60, 120, 180),
    "finetune/OptimizerSpec.weight_decay": 0.0,
    "finetune.dropout": 0.8, "finetune.warmup_epochs": 0,
    "train/eval_input.crop": "scale_jitter", "train/eval_input.short_side_range": (256, 320),
    "train/eval_input.flip_prob": 0.5, "train/eval_input.color_jitter_prob": 0.0,
    "train/eval_input.grayscale_prob": 0.0, "train/eval_input.blur_prob": 0.0,
    "test/eval_input.num_clips": 10, "test/eval_input.eval_crops": 3,
    "test/eval_input.crop_size": 256, "test/eval_input.short_side": 256}
RHO_LINEAR = {  # ρ-paper §B.2
    "linear_probe.epochs": 60, "linear_probe/OptimizerSpec.schedule": "cosine",
    "linear_probe/OptimizerSpec.base_learning_rate": 4.0,
    "linear_probe/OptimizerSpec.reference_batch_size": 512,
    "linear_probe.warmup_epochs": 8, "linear_probe/OptimizerSpec.weight_decay": 0.0,
    "train/eval_input.crop": "scale_jitter", "train/eval_input.color_jitter_prob": 0.0,
    "test/eval_input.num_clips": 10, "test/eval_input.eval_crops": 3,
    "test/eval_input.crop_size": 256}


@pytest.mark.parametrize("config,expected", [
    ("finetune_ucf101.gin", {**RHO_FINETUNE, "%NUM_CLASSES": 101}),
    ("finetune_hmdb51.gin", {**RHO_FINETUNE, "%NUM_CLASSES": 51}),
    ("linear_kinetics400.gin", {**RHO_LINEAR, "%NUM_CLASSES": 400}),
    ("linear_coclr_hmdb51.gin", {"%NUM_CLASSES": 51, "linear_probe.l2_normalize": True,
                                 "test/eval_input.window_overlap": 0.5,
                                 "test/eval_input.eval_crops": 10, "eval_input.num_frames": 32}),
    ("finetune_coclr_hmdb51.gin", {"%NUM_CLASSES": 51, "finetune/OptimizerSpec.name": "adam",
                                   "finetune.backbone_lr_scale": 0.1,
                                   "train/eval_input.blur_prob": 0.0}),
    # BraVe §4: 32 frames sampled at 12.5 fps; the official code's C = 1e-4.
    ("svm_hmdb51.gin", {"eval_input.target_fps": 12.5, "eval_input.num_frames": 32,
                        "eval_input.frame_stride": 1, "linear_svm.train_epochs": 10,
                        "linear_svm.regularization": 1e-4}),
    # BraVe §4.2: fine-tuning on 32-frame clips at 12.5 fps, 10 x 3 test views of 224^2;
    # the optimizer the ρ-paper's (§B.6).
    ("finetune_brave_hmdb51.gin", {**RHO_FINETUNE, "%NUM_CLASSES": 51,
                                   "eval_input.num_frames": 32, "eval_input.target_fps": 12.5,
                                   "eval_input.crop_size": 224,
                                   "test/eval_input.crop_size": 224}),
])
def test_eval_recipes_hold_the_papers_values(config, expected):
    gin.clear_config()
    config_lib.parse_gin([os.path.join(EVAL_CONFIGS, config)], [])
    try:
        for binding, value in expected.items():
            assert gin.query_parameter(binding) == value, binding
    finally:
        gin.clear_config()


# ----------------------------------------------------------------------- figures


def test_class_names_from_the_records_or_the_label_map(tmp_path):
    names = ["apply_eye_makeup", "basketball_dunk", "cliff_diving"]
    files = write_shards(tmp_path / "named", [0, 1, 0, 2], 2, class_names=names)
    data = EvalData(files, files)
    assert data.class_names(3) == names
    assert data.class_names(4) is None  # class 3 has no video, so no name
    unnamed = write_shards(tmp_path / "unnamed", [0, 1], 1)
    assert EvalData(unnamed, unnamed).class_names(2) is None
    # The converter's PREFIX.labels.txt beside the train shards comes first.
    (tmp_path / "unnamed.labels.txt").write_text("walk\nrun\njump\n")
    assert EvalData(unnamed, unnamed).class_names(2) == ["walk", "run"]


def _ink(image: np.ndarray) -> int:
    """Non-white pixels."""
    return int((image.min(axis=-1) < 200).sum())


def test_confusion_png_is_readable_and_labeled_with_class_names(tmp_path):
    confusion = np.diag([5, 3, 4]) + 1
    names = ["apply_eye_makeup", "basketball_dunk", "cliff_diving"]
    size = figures.save_confusion_png(str(tmp_path / "named.png"), confusion, "t", names)
    plain = figures.save_confusion_png(str(tmp_path / "plain.png"), confusion, "t")
    named_image = np.asarray(Image.open(tmp_path / "named.png").convert("RGB"))
    plain_image = np.asarray(Image.open(tmp_path / "plain.png").convert("RGB"))
    assert size[0] >= 600 and plain[0] >= 600 and named_image.shape[1::-1] == size
    # The names need a wider margin left of the matrix (and above it) than "0".."2".
    matrix_left = lambda image: int(np.argmax(image[image.shape[0] // 2, :, 0] < 100))  # noqa
    assert matrix_left(named_image) > matrix_left(plain_image) + 40
    left_margin = named_image[:, :matrix_left(named_image) - 2]
    assert _ink(left_margin) > 3 * _ink(plain_image[:, :matrix_left(plain_image) - 2])
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        figures.save_confusion_png(str(tmp_path / "bad.png"), confusion, "t", names[:2])
    # Many classes: no labels, cells still visible, the figure stays readable in size.
    width, height = figures.save_confusion_png(str(tmp_path / "many.png"), np.eye(400), "t")
    assert 600 <= width <= 2000 and height <= 2000


@pytest.mark.parametrize("height,width,short_side,coincide", [
    (32, 32, 32, True), (32, 48, 32, False), (32, 32, None, False)])
def test_ten_crops_that_coincide_are_reported(tmp_path, capsys, height, width, short_side,
                                              coincide):
    from video_ssl.evaluation.protocol import _warn_if_ten_crops_coincide
    path = str(tmp_path / "v-00000-of-00001.tfrecord")
    frame = tf.io.encode_jpeg(tf.zeros([height, width, 3], tf.uint8)).numpy()
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(schema.make_sequence_example([frame] * 2, label=0, height=height,
                                                  width=width).SerializeToString())
    _warn_if_ten_crops_coincide(path, {"crop_size": 32, "short_side": short_side})
    out = capsys.readouterr().out
    assert ("the 5 crop positions coincide" in out) == coincide
    if coincide:
        assert path in out and "32x32" in out
