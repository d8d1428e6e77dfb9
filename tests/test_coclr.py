"""InfoNCE, UberNCE and CoCLR (video_ssl/methods/coclr.py) on tiny shapes: the positive
masks against NumPy, the loss, the frozen sampler, initialization from stage-1 runs
and the recipes' gin files."""
import json
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import video_ssl.train  # noqa: F401  (registers train and train_input)
from video_ssl import config as config_lib, optim
from video_ssl.methods.base import INPUT_SPEC_FILE
from video_ssl.methods.coclr import (CoCLR, InfoNCE, QueueNCE, UberNCE,
                                     cotraining_views, pair_views)
from video_ssl.methods.losses import mean_positive_nce, multi_positive_nce
from video_ssl.models import build_backbone
from gin_query import bound
from helpers import assert_monitors_logged

BATCH, FRAMES, SIZE, QUEUE, DIM = 4, 4, 32, 16, 8
SMALL = dict(hidden_dim=16, embedding_dim=DIM, queue_size=QUEUE)
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin_configs")


def tiny_backbone(channels: int) -> keras.Model:
    """(B, T, H, W, C) -> (B, D) like the registry backbones, but tiny."""
    inputs = keras.Input((FRAMES, SIZE, SIZE, channels))
    x = keras.layers.Conv3D(8, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling3D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, x)


NCE_FIELDS = {"wait_for_full_queue", "shuffle_bn", "bn_group_size", "temperature"}


def build(cls, modality="rgb", strategy=None, eager=True, **kwargs):
    strategy = strategy or tf.distribute.get_strategy()
    other = {"rgb": 2, "flow": 3}[modality]
    settings = {k: kwargs.pop(k) for k in set(kwargs) & NCE_FIELDS}
    with strategy.scope():
        nce = QueueNCE(backbone=tiny_backbone(5 - other), **SMALL, **settings)
        if cls is CoCLR:
            kwargs.setdefault("sampler_backbone", tiny_backbone(other))
            method = cls(cotraining_views(), nce, modality=modality, **kwargs)
        else:
            method = cls(pair_views(modality), nce, **kwargs)
        method.compile(optimizer=optim.make_optimizer("adam", 1e-3, weight_decay=1e-5),
                       jit_compile=False, run_eagerly=eager)
    return method


def make_batch(seed=0, **extra):
    rgb = tf.random.stateless_normal((BATCH, 2, FRAMES, SIZE, SIZE, 3), seed=[seed, 1])
    flow = tf.random.stateless_normal((BATCH, 2, FRAMES, SIZE, SIZE, 2), seed=[seed, 2])
    return {"views": {"clips": {"rgb": rgb, "flow": flow}},
            "label": tf.constant([0, 1, 0, 2], tf.int32), **extra}


def fit_one_step(method, batch):
    history = method.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1,
                         steps_per_epoch=1, verbose=0, shuffle=False)
    return {k: v[0] for k, v in history.history.items()}


def unit_rows(rng, n):
    x = rng.standard_normal((n, DIM)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill_queue(method, filled, **columns):
    for name, value in columns.items():
        method.queue[name].assign(value)
    method.queue.filled.assign(np.asarray(filled, bool))


# ------------------------------------------------------------------ positive masks


def coclr_mask_numpy(sampler, video, queue_sampler, queue_video, filled, k, mined=True):
    """Own video's written rows, plus the k most similar written rows of other videos."""
    mask = np.zeros((len(sampler), len(queue_sampler)), bool)
    for i in range(len(sampler)):
        same = filled & (queue_video == video[i])
        mask[i] |= same
        candidates = [j for j in range(len(queue_sampler)) if filled[j] and not same[j]]
        scores = [float(sampler[i] @ queue_sampler[j]) for j in candidates]
        if mined:
            for j in np.array(candidates)[np.argsort(scores)[::-1][:k]]:
                mask[i, j] = True
    return mask


@pytest.mark.parametrize("topk", [0, 1, 3])
def test_coclr_mask_matches_numpy(topk):
    method = build(CoCLR, topk=topk)
    rng = np.random.default_rng(0)
    queue_sampler = unit_rows(rng, QUEUE)
    queue_video = rng.integers(0, 6, QUEUE)
    filled = np.ones(QUEUE, bool)
    filled[[2, 5, 11]] = False
    sampler = unit_rows(rng, BATCH)
    # Row 0's nearest row is unwritten, row 1's nearest is of its own video.
    queue_sampler[2] = sampler[0]
    queue_sampler[7] = sampler[1]
    queue_video[7] = 4
    queue_video[5] = 3  # an unwritten row of row 2's video
    video = np.array([9, 4, 3, 1])
    fill_queue(method, filled, sampler=queue_sampler, video_id=queue_video)
    entries = {"sampler": tf.constant(sampler), "video_id": tf.constant(video, tf.int64)}
    got = (method.queue_positives(entries, BATCH) & method.queue.filled[None]).numpy()
    expected = coclr_mask_numpy(sampler, video, queue_sampler, queue_video, filled, topk)
    np.testing.assert_array_equal(got, expected)
    assert not got[:, [2, 5, 11]].any()
    assert got[1, 7] and (got.sum(1) >= topk).all()


def test_coclr_mines_at_most_the_written_rows():
    method = build(CoCLR, topk=5)
    rng = np.random.default_rng(1)
    filled = np.zeros(QUEUE, bool)
    filled[:3] = True
    queue_sampler, sampler = unit_rows(rng, QUEUE), unit_rows(rng, BATCH)
    queue_video = np.arange(QUEUE) + 100
    fill_queue(method, filled, sampler=queue_sampler, video_id=queue_video)
    entries = {"sampler": tf.constant(sampler), "video_id": tf.range(BATCH, dtype=tf.int64)}
    got = (method.queue_positives(entries, BATCH) & method.queue.filled[None]).numpy()
    np.testing.assert_array_equal(got, np.tile(filled, (BATCH, 1)))


def test_coclr_mine_only_when_full_and_self_drop():
    method = build(CoCLR, topk=2, mine_only_when_full=True, self_drop_prob=1.0)
    rng = np.random.default_rng(2)
    filled = np.ones(QUEUE, bool)
    filled[0] = False
    queue_video = np.full(QUEUE, 50)
    queue_video[3] = 1
    fill_queue(method, filled, sampler=unit_rows(rng, QUEUE), video_id=queue_video)
    entries = {"sampler": tf.constant(unit_rows(rng, BATCH)),
               "video_id": tf.constant([1, 2, 3, 4], tf.int64)}
    method.optimizer.iterations.assign(0)
    positives = method.queue_positives(entries, BATCH) & method.queue.filled[None]
    # Not full: only row 0's same-video entry.
    expected = np.zeros((BATCH, QUEUE), bool)
    expected[0, 3] = True
    np.testing.assert_array_equal(positives.numpy(), expected)
    # The own key is dropped where there are other positives (p = 1), kept elsewhere.
    np.testing.assert_array_equal(method.self_positive(positives).numpy(),
                                  [False, True, True, True])
    method.queue.filled.assign(np.ones(QUEUE, bool))
    assert (method.queue_positives(entries, BATCH).numpy().sum(1) == [3, 2, 2, 2]).all()


def test_ubernce_mask_from_labels():
    method = build(UberNCE)
    queue_label = np.arange(QUEUE) % 3
    filled = np.arange(QUEUE) < 10
    fill_queue(method, filled, label=queue_label)
    labels = np.array([0, 1, 0, 2])
    got = (method.queue_positives({"label": tf.constant(labels, tf.int64)}, BATCH)
           & method.queue.filled[None]).numpy()
    np.testing.assert_array_equal(got, (labels[:, None] == queue_label[None]) & filled[None])


def test_loss_matches_numpy_and_ignores_unwritten_rows():
    method = build(CoCLR)
    rng = np.random.default_rng(3)
    query, keys, queue = unit_rows(rng, BATCH), unit_rows(rng, BATCH), unit_rows(rng, QUEUE)
    filled = np.arange(QUEUE) % 4 != 0
    method.queue["keys"].assign(queue)
    method.queue.filled.assign(filled)
    positives = (rng.random((BATCH, QUEUE)) < 0.3) & filled
    own = np.array([True, False, True, True])
    positives[1, 1] = True  # row 1 keeps one positive
    got = method.contrastive_loss(tf.constant(query), tf.constant(keys), tf.constant(positives),
                                  tf.constant(own))
    expected = []
    for i in range(BATCH):
        logits = np.concatenate([[query[i] @ keys[i]], queue[filled] @ query[i]]) / 0.07
        mask = np.concatenate([[own[i]], positives[i][filled]])
        expected.append(-np.log(np.exp(logits)[mask].sum() / np.exp(logits).sum()))
    np.testing.assert_allclose(float(got), np.mean(expected), rtol=1e-5)


def test_mean_positive_nce_matches_numpy():
    """UberNCE's official loss: -(log_softmax(logits) * mask).sum(1) / mask.sum(1), mean
    over rows; -inf entries count nowhere; one positive per row is multi_positive_nce."""
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4, 7)).astype("float32") * 3
    logits[:, 5] = -np.inf
    mask = rng.random((4, 7)) < 0.4
    mask[:, 0], mask[:, 5] = True, False
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = np.mean([-log_p[i][mask[i]].mean() for i in range(4)])
    got = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(got)
        loss = mean_positive_nce(got, mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert np.isfinite(tape.gradient(loss, got).numpy()).all()
    assert float(loss) > float(multi_positive_nce(got, mask))  # rows with 2+ positives
    one = np.eye(4, 7, dtype=bool)
    np.testing.assert_allclose(float(mean_positive_nce(got, one)),
                               float(multi_positive_nce(got, one)), rtol=1e-6)


@pytest.mark.parametrize("loss_form", ["mean_over_positives", "multi_instance"])
def test_ubernce_loss_form(loss_form):
    method = build(UberNCE, loss_form=loss_form)
    assert build(UberNCE).loss_form == "mean_over_positives"  # the default
    rng = np.random.default_rng(6)
    query, keys, queue = unit_rows(rng, BATCH), unit_rows(rng, BATCH), unit_rows(rng, QUEUE)
    filled = np.arange(QUEUE) < 12
    fill_queue(method, filled, keys=queue, label=np.arange(QUEUE) % 3)
    positives = (np.array([0, 1, 0, 2])[:, None] == np.arange(QUEUE) % 3) & filled
    got = float(method.contrastive_loss(tf.constant(query), tf.constant(keys),
                                        tf.constant(positives), tf.ones([BATCH], tf.bool)))
    expected = []
    for i in range(BATCH):
        logits = np.concatenate([[query[i] @ keys[i]], queue[filled] @ query[i]]) / 0.07
        log_p = logits - np.log(np.exp(logits).sum())
        mask = np.concatenate([[True], positives[i][filled]])
        expected.append(-log_p[mask].mean() if loss_form == "mean_over_positives"
                        else -np.log(np.exp(log_p)[mask].sum()))
    np.testing.assert_allclose(got, np.mean(expected), rtol=1e-5)
    with pytest.raises(ValueError, match="UberNCE.loss_form: expected one of"):
        build(UberNCE, loss_form="mean")


# ------------------------------------------------------------------------ training


def _values(variables):
    return [v.numpy().copy() for v in variables]


@pytest.mark.parametrize("modality", ["rgb", "flow"])
def test_coclr_step_freezes_the_sampler(modality):
    method = build(CoCLR, modality=modality)
    sampler = method.encoder_model(method.sampler_modality)
    assert method.encoder_model(modality) is method.backbone and sampler is method.sampler
    assert method.primary_encoder == modality
    trainable = {id(v) for v in method.trainable_variables}
    frozen = method.sampler.weights + method.sampler_projector.weights
    assert not trainable & {id(v) for v in frozen}
    frozen_before, online_before = _values(frozen), _values(method.backbone.trainable_weights)
    batch = make_batch()
    logs = fit_one_step(method, batch)
    assert np.isfinite(logs["loss"])
    for before, variable in zip(frozen_before, frozen):  # BatchNorm statistics too
        np.testing.assert_array_equal(variable.numpy(), before, err_msg=variable.path)
    assert any(not np.allclose(b, v.numpy()) for b, v in
               zip(online_before, method.backbone.trainable_weights))
    # The queue holds the sampler's inference-mode features of the key clip.
    key_clip = batch["views"]["clips"][method.sampler_modality][:, 1]
    expected = tf.math.l2_normalize(method.sampler_projector(
        method.sampler(key_clip, training=False), training=False), -1)
    np.testing.assert_allclose(method.queue["sampler"].numpy()[:BATCH], expected.numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(method.queue["video_id"].numpy()[:BATCH], np.arange(BATCH))
    assert int(method.queue.pointer.numpy()) == BATCH


def test_mask_is_built_before_the_batch_is_enqueued():
    method = build(CoCLR, topk=0)
    batch = make_batch(video_id=tf.constant([10, 11, 12, 13], tf.int64))
    assert fit_one_step(method, batch)["queue_positives"] == 0
    # Step 2 sees step 1's entries of the same videos, not its own.
    assert fit_one_step(method, batch)["queue_positives"] == 1
    assert fit_one_step(method, batch)["queue_positives"] == 2


def test_sibling_clips_are_positives_of_each_other_and_never_mined():
    """Two clips cut from one source video (UCF101's clips of one group: the pipeline
    gives them one video_id) in a batch, then in the queue."""
    method = build(CoCLR, topk=0)
    batch = make_batch(video_id=tf.constant([7, 7, 8, 9], tf.int64))
    assert fit_one_step(method, batch)["queue_positives"] == 0
    np.testing.assert_array_equal(method.queue["video_id"].numpy()[:BATCH], [7, 7, 8, 9])
    # Each sibling's two queued clips (its own and the other's) are its positives.
    assert fit_one_step(method, batch)["queue_positives"] == (2 + 2 + 1 + 1) / 4
    # Mining skips the siblings even where they are the nearest rows.
    method = build(CoCLR, topk=2)
    rng = np.random.default_rng(5)
    sampler, queue_sampler = unit_rows(rng, BATCH), unit_rows(rng, QUEUE)
    queue_video = np.arange(QUEUE) + 100
    queue_video[[3, 9]] = 7
    queue_sampler[[3, 9]] = sampler[0]
    fill_queue(method, np.ones(QUEUE, bool), sampler=queue_sampler, video_id=queue_video)
    video = np.array([7, 7, 8, 9])
    entries = {"sampler": tf.constant(sampler), "video_id": tf.constant(video, tf.int64)}
    got = method.queue_positives(entries, BATCH).numpy()
    np.testing.assert_array_equal(got, coclr_mask_numpy(sampler, video, queue_sampler,
                                                        queue_video, np.ones(QUEUE, bool), 2))
    assert got[:2, [3, 9]].all() and not got[2:, [3, 9]].any()
    assert (got[:2].sum(1) == 2 + 2).all()  # the siblings plus K = 2 rows of other videos


@pytest.mark.parametrize("cls,modality", [(InfoNCE, "rgb"), (InfoNCE, "flow"), (UberNCE, "rgb")])
def test_stage_one_methods_train(cls, modality):
    method = build(cls, modality=modality)
    assert list(method.encoders) == [modality]
    assert method.views["clips"].modalities == (modality,)
    logs = [fit_one_step(method, make_batch(seed)) for seed in range(2)]
    assert np.isfinite([entry["loss"] for entry in logs]).all()
    assert int(method.queue.pointer.numpy()) == 2 * BATCH  # only the keys are enqueued
    if cls is UberNCE:
        np.testing.assert_array_equal(method.queue["label"].numpy()[:2 * BATCH],
                                      [0, 1, 0, 2] * 2)
        assert logs[1]["queue_positives"] == 1.5  # labels 0, 1, 0, 2 against the same
    else:
        assert logs[1]["queue_positives"] == 0


def test_simultaneous_variant_trains_both_streams():
    method = build(CoCLR, topk=2, simultaneous=True)
    streams = {"rgb": (method.backbone, method.momentum), "flow": (method.sampler,
                                                                  method.sampler_momentum)}
    trainable = {id(v) for v in method.trainable_variables}
    assert all(id(v) in trainable for v in method.sampler.trainable_weights)
    before = {m: _values(b.trainable_weights) for m, (b, _) in streams.items()}
    batch = make_batch()
    logs = [fit_one_step(method, batch) for _ in range(2)]
    assert np.isfinite([e["loss"] for e in logs]).all()
    np.testing.assert_allclose(logs[1]["loss"], logs[1]["loss_rgb"] + logs[1]["loss_flow"],
                               rtol=1e-5)
    for modality, (backbone, momentum) in streams.items():
        assert any(not np.allclose(b, v.numpy()) for b, v in
                   zip(before[modality], backbone.trainable_weights)), modality
        # Each stream's momentum encoder follows its own online encoder.
        online = [w for w in backbone.weights if w.trainable]
        targets = [t for t, o in zip(momentum["backbone"].weights, backbone.weights)
                   if o.trainable]
        assert any(not np.allclose(t.numpy(), b) for t, b in zip(targets, before[modality]))
        assert len(targets) == len(online)
    # The queue's columns are the two streams' keys of the same clips.
    flow_keys = tf.math.l2_normalize(method.sampler_momentum["projector"](
        method.sampler_momentum["backbone"](batch["views"]["clips"]["flow"][:, 1],
                                            training=True), training=True), -1)
    # (the momentum encoders are updated before a step's keys: step 2's are these)
    np.testing.assert_allclose(method.queue["sampler"].numpy()[BATCH:2 * BATCH],
                               flow_keys.numpy(), rtol=1e-4, atol=1e-5)
    # Mining the flow stream's positives reads the RGB keys column.
    rng = np.random.default_rng(4)
    keys, video = unit_rows(rng, QUEUE), np.arange(QUEUE) % 5
    fill_queue(method, np.ones(QUEUE, bool), keys=keys, video_id=video)
    features, ids = unit_rows(rng, BATCH), np.array([0, 1, 7, 8])
    got = method.mine(tf.constant(features), "keys", tf.constant(ids, tf.int64)).numpy()
    np.testing.assert_array_equal(got, coclr_mask_numpy(features, ids, keys, video,
                                                        np.ones(QUEUE, bool), 2))


@pytest.mark.parametrize("cls,options", [(InfoNCE, {"eager": False}),
                                         (CoCLR, {"simultaneous": True})])
def test_shuffle_bn_on_one_replica_keys_equal_the_per_group_computation(cls, options):
    """bn_group_size 2 in a batch of 4: the queries' groups are videos {0, 1} and {2, 3},
    the keys' {0, 2} and {1, 3} (steps.shuffled_bn); the queue holds those keys in the
    batch's order (both streams' for CoCLR(simultaneous=True))."""
    method = build(cls, bn_group_size=2, **options)
    batch = make_batch(seed=4)
    fit_one_step(method, batch)
    encoders = {"keys": (method.momentum, method.modality)}
    if cls is CoCLR:
        encoders["sampler"] = (method.sampler_momentum, method.sampler_modality)
    for column, (encoder, modality) in encoders.items():
        key_clip = batch["views"]["clips"][modality][:, 1]
        expected = np.zeros((BATCH, DIM), "float32")
        for rows in ([0, 2], [1, 3]):  # the momentum encoders have not moved since
            expected[rows] = tf.math.l2_normalize(encoder["projector"](encoder["backbone"](
                tf.gather(key_clip, rows), training=True), training=True), -1).numpy()
        np.testing.assert_allclose(method.queue[column].numpy()[:BATCH], expected,
                                   rtol=1e-4, atol=1e-5, err_msg=column)


def test_wait_for_full_queue_holds_the_step():
    method = build(CoCLR, wait_for_full_queue=True)
    before = _values(method.backbone.trainable_weights)
    fit_one_step(method, make_batch())
    for b, v in zip(before, method.backbone.trainable_weights):
        np.testing.assert_array_equal(v.numpy(), b)
    assert int(method.optimizer.iterations.numpy()) == 1


@pytest.mark.parametrize("simultaneous", [False, True])
def test_coclr_trains_mirrored(mirrored, simultaneous):
    method = build(CoCLR, strategy=mirrored, eager=False, simultaneous=simultaneous)
    logs = [fit_one_step(method, make_batch(seed)) for seed in range(2)]
    assert np.isfinite([entry["loss"] for entry in logs]).all()
    # Ids unique over the run: step x global batch + global position.
    np.testing.assert_array_equal(method.queue["video_id"].numpy()[:2 * BATCH],
                                  np.arange(2 * BATCH))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="InfoNCE: {'rho': 3}"):  # one query per video
        InfoNCE(pair_views(), QueueNCE(backbone=tiny_backbone(3), **SMALL), rho=3)
    with pytest.raises(ValueError, match="CoCLR.sampler_backbone"):
        CoCLR(cotraining_views(), QueueNCE(backbone=tiny_backbone(3), **SMALL))
    with pytest.raises(ValueError, match="CoCLR.views: expected RGB and flow"):
        CoCLR(pair_views(), QueueNCE(backbone=tiny_backbone(3), **SMALL),
              sampler_backbone=tiny_backbone(2))
    with pytest.raises(ValueError, match="CoCLR.topk"):
        build(CoCLR, topk=QUEUE + 1)
    method = build(InfoNCE)
    with pytest.raises(ValueError, match=r"batch\['views'\]\['clips'\]\['rgb'\].*2 clips"):
        method.clip_pairs({"views": {"clips": {"flow": make_batch()["views"]["clips"]["flow"]}}})
    with pytest.raises(tf.errors.InvalidArgumentError, match="UberNCE: every training video"):
        fit_one_step(build(UberNCE), {**make_batch(), "label": -tf.ones((BATCH,), tf.int32)})


@pytest.mark.slow
def test_coclr_run_monitors_both_encoders(make_shards, tmp_path):
    """One tiny epoch of CoCLR-RGB through the trainer: the trained RGB stream and the
    frozen flow sampler each get the kNN and health monitors."""
    shards = make_shards("coclr", [0, 1] * 3, modalities=("rgb", "flow"), noise=True)[0]
    model_dir = str(tmp_path / "run")
    params = [
        "train.method = @CoCLR", "CoCLR.modality = 'rgb'", "CoCLR.topk = 1",
        f"train.train_files = {shards!r}", "train.global_batch_size = 2",
        "train.steps_per_epoch = 2", "train.epochs = 1", "train.verbose = 0",
        f"train.knn_bank_files = {shards!r}", f"train.knn_query_files = {shards!r}",
        "train.knn_k = 3", "BACKBONE = 'slow_r18'",
        "BACKBONE_KWARGS = {'width_multiplier': 0.125}", "HEAD_HIDDEN_DIM = 16",
        "EMBEDDING_DIM = 8", "QUEUE_SIZE = 8", "QueueNCE.shuffle_bn = False",
        "cotraining/QueueNCE.wait_for_full_queue = False", "train_input.num_frames = 4",
        "train_input.frame_stride = 2", "train_input.crop_size = 32"]
    config_lib.parse_gin([os.path.join(CONFIGS, "coclr_common.gin")], params)
    try:
        video_ssl.train.train(model_dir)
    finally:
        gin.clear_config()
    assert_monitors_logged(model_dir, ["rgb", "flow"], last_step=2)


# ------------------------------------------------------------------ initialization


def _save_run(method, model_dir):
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, INPUT_SPEC_FILE), "w") as f:
        json.dump(method.input_spec(), f)
    tf.train.Checkpoint(model=method).save(os.path.join(model_dir, "checkpoints", "ckpt"))


def test_coclr_initializes_both_streams_from_stage_one_runs(tmp_path):
    runs = {}
    for modality in ("rgb", "flow"):
        stage_one = build(InfoNCE, modality=modality)
        fit_one_step(stage_one, make_batch())
        runs[modality] = stage_one
        _save_run(stage_one, str(tmp_path / modality))
    method = build(CoCLR, init_checkpoints={m: str(tmp_path / m) for m in runs})
    lines = method.initialize_encoders()
    assert len(lines) == 2 and all("(backbone, projector)" in line for line in lines)
    pairs = [(method.backbone, runs["rgb"].backbone), (method.projector, runs["rgb"].projector),
             (method.sampler, runs["flow"].backbone),
             (method.sampler_projector, runs["flow"].projector),
             (method.momentum["backbone"], runs["rgb"].backbone),
             (method.momentum["projector"], runs["rgb"].projector)]
    for restored, source in pairs:
        for a, b in zip(restored.weights, source.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # The simultaneous variant: both momentum encoders start as their streams.
    sim = build(CoCLR, init_checkpoints={m: str(tmp_path / m) for m in runs}, simultaneous=True)
    sim.initialize_encoders()
    for a, b in zip(sim.sampler_momentum["backbone"].weights, runs["flow"].backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # Any member of the family: InfoNCE continued from an InfoNCE run.
    again = build(InfoNCE, init_checkpoints={"rgb": str(tmp_path / "rgb")})
    assert len(again.initialize_encoders()) == 1
    for restored, source in [(again.projector, runs["rgb"].projector),
                             (again.momentum["backbone"], runs["rgb"].backbone)]:
        for a, b in zip(restored.weights, source.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # Stage 2 of the flow stream: its sampler from the RGB CoCLR run's primary encoder.
    _save_run(method, str(tmp_path / "cycle1_rgb"))
    flow = build(CoCLR, modality="flow", init_checkpoints={
        "flow": str(tmp_path / "flow"), "rgb": str(tmp_path / "cycle1_rgb")})
    flow.initialize_encoders()
    for a, b in zip(flow.sampler_projector.weights, method.projector.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


# ------------------------------------------------------------------------- recipes


FAMILY = {"backbone": "s3d", "temperature": 0.07, "base_momentum": 0.999,
          "momentum_schedule": "constant", "hidden_dim": 1024, "embedding_dim": 128,
          "num_layers": 2, "batch_norm_in_head": False, "queue_size": 2048}
OPTIMIZATION = {"build_optimizer.name": "adam", "build_optimizer.base_learning_rate": 1e-3,
                "build_optimizer.weight_decay": 1e-5,
                "build_optimizer.reference_batch_size": None,
                "build_optimizer.schedule": "plateau", "build_optimizer.plateau_max_decays": 2,
                "train.global_batch_size": 128, "train_input.num_frames": 32,
                "train_input.crop_size": 128}


def check_bound(expected: dict, where: str) -> None:
    for binding, value in expected.items():
        assert bound(binding) == value, (where, binding)


@pytest.mark.parametrize("recipe,method,modality", [
    ("infonce_rgb.gin", "InfoNCE", "rgb"), ("infonce_flow.gin", "InfoNCE", "flow"),
    ("ubernce_rgb.gin", "UberNCE", "rgb")])
def test_stage_one_recipes_bind_the_paper_values(recipe, method, modality):
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, recipe)], [])
    try:
        assert gin.query_parameter("train.method").selector == method
        check_bound({"pair_views.modality": modality, "train.epochs": 300, **OPTIMIZATION,
                     **{f"QueueNCE.{k}": v for k, v in FAMILY.items()},
                     "QueueNCE.wait_for_full_queue": False,  # main_nce.py steps at once
                     "QueueNCE.shuffle_bn": True, "QueueNCE.bn_group_size": 32}, recipe)
        if method == "UberNCE":
            check_bound({"UberNCE.loss_form": "mean_over_positives"}, recipe)
    finally:
        gin.clear_config()


@pytest.mark.parametrize("recipe,cycles,cycle_epochs,queue_size", [
    ("coclr_ucf101.gin", 2, 100, 2048), ("coclr_k400.gin", 1, 50, 16384)])
def test_schedule_recipes_bind_the_paper_schedule(recipe, cycles, cycle_epochs, queue_size):
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, recipe)], [])
    try:
        stages = dict(gin.query_parameter("run_schedule.stages"))
        names = ["infonce_rgb", "infonce_flow"] + [
            f"cycle{c}_{m}" for c in range(1, cycles + 1) for m in ("rgb", "flow")]
        assert list(stages) == names
        assert stages["cycle1_rgb"] == {"rgb": "infonce_rgb", "flow": "infonce_flow"}
        assert stages["cycle1_flow"] == {"flow": "infonce_flow", "rgb": "cycle1_rgb"}
        for name in names:
            method = "InfoNCE" if name.startswith("infonce") else "CoCLR"
            assert gin.query_parameter(f"{name}/train.method").selector == method
            modality = "pair_views" if method == "InfoNCE" else method
            check_bound({f"{name}/{modality}.modality": name.rsplit("_", 1)[1],
                         f"{name}/train.epochs": 300 if method == "InfoNCE" else cycle_epochs},
                        recipe)
        assert gin.query_parameter("CoCLR.nce").scoped_selector == "cotraining/QueueNCE"
        check_bound({"cotraining/QueueNCE.wait_for_full_queue": True,  # main_coclr.py
                     "QueueNCE.wait_for_full_queue": False}, recipe)
        check_bound({"CoCLR.topk": 5, "CoCLR.self_drop_prob": 0.0, **OPTIMIZATION,
                     **{f"QueueNCE.{k}": v for k, v in {**FAMILY,
                                                        "queue_size": queue_size}.items()}},
                    recipe)
    finally:
        gin.clear_config()


@pytest.mark.parametrize("recipe,views", [("infonce_flow.gin", pair_views),
                                          ("coclr_ucf101.gin", cotraining_views)])
def test_recipes_augment_as_the_official_code(recipe, views):
    """coclr_common.gin: one-clip pairs half the time, the full transform on 0.3 of the
    other clips, a copied channel for grayscale, colour ops on flow, dx kept on a flip."""
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, recipe)], [])
    try:
        view = views()["clips"]
    finally:
        gin.clear_config()
    spec = view.augmentation
    assert view.one_clip_prob == 0.5 and view.area_range == (0.2, 1.0)
    assert (spec.photometric_prob, spec.color_jitter_prob, spec.grayscale_prob,
            spec.blur_prob, spec.grayscale_mode) == (0.3, 0.8, 0.2, 0.5, "channel")
    assert spec.flow_photometric and not spec.flow_flip_negates_dx


TINY_FAMILY = ["QueueNCE.backbone = 'slow_r18'", "QueueNCE.queue_size = 16",
               "QueueNCE.backbone_kwargs = {'width_multiplier': 0.125}",
               "QueueNCE.hidden_dim = 16", "QueueNCE.embedding_dim = 8"]
VIEWS = ["InfoNCE.views = @pair_views()", "UberNCE.views = @pair_views()",
         "CoCLR.views = @cotraining_views()"] + [
    f"{m}.nce = @QueueNCE()" for m in ("InfoNCE", "UberNCE", "CoCLR")]


def build_from_gin(name: str, bindings: list[str]):
    gin.clear_config()
    config_lib.register_configurables()
    with gin.unlock_config():
        gin.parse_config(bindings)
    return config_lib.method_configurable(name)()


def test_family_bindings_reach_every_method():
    bindings = TINY_FAMILY + VIEWS + ["QueueNCE.temperature = 0.2", "CoCLR.topk = 2",
                                      "pair_views.modality = 'flow'"]
    try:
        coclr = build_from_gin("CoCLR", bindings)
        infonce = build_from_gin("InfoNCE", bindings)
    finally:
        gin.clear_config()
    assert (coclr.temperature, coclr.topk, coclr.modality) == (0.2, 2, "rgb")
    assert (infonce.temperature, infonce.modality) == (0.2, "flow")


@pytest.mark.parametrize("cls", [InfoNCE, UberNCE])
def test_operative_config_rebuilds_the_trained_model(cls):
    """What evaluate and export do: the operative config read back builds the model that
    was trained, family (`QueueNCE.*`) bindings included (not the defaults)."""
    family = TINY_FAMILY + VIEWS + ["pair_views.modality = 'flow'"]
    built = []
    for config in (family, None):
        try:
            method = build_from_gin(cls.__name__, config or [operative])
            operative = gin.operative_config_str()
        finally:
            gin.clear_config()
        built.append((method.backbone.name.split("_")[:2], method.backbone.count_params(),
                      method.projector.count_params(), method.queue.size, method.modality))
    assert built[0] == built[1] and built[0][3:] == (16, "flow")


def test_family_backbone_binding_builds_both_streams():
    try:
        method = build_from_gin("CoCLR", TINY_FAMILY + VIEWS)
    finally:
        gin.clear_config()
    reference = build_backbone("slow_r18", width_multiplier=0.125, input_channels=2)
    assert method.backbone.name.startswith("slow_r18") and method.sampler.count_params() == \
        reference.count_params()
    assert method.backbone.input_shape[-1] == 3 and method.sampler.input_shape[-1] == 2


@pytest.mark.slow
@pytest.mark.parametrize("cls, options", [(CoCLR, {}), (CoCLR, {"simultaneous": True})])
def test_train_step_compiles_with_xla(cls, options):
    """The steps compile with `jit_compile=True` and give the uncompiled steps' loss (3
    steps, so that the queue holds entries to mine and to contrast with). Not with
    `self_drop_prob`: TensorFlow's stateless random ops draw other numbers under XLA."""
    losses = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        method = build(cls, eager=False, **options)
        method.compile(optimizer=optim.make_optimizer("adam", 1e-3, weight_decay=1e-5),
                       jit_compile=jit)
        method.optimizer.build(method.trainable_variables)
        history = method.fit(tf.data.Dataset.from_tensors(make_batch()).repeat(), epochs=1,
                             steps_per_epoch=3, verbose=0, shuffle=False)
        losses.append(history.history["loss"][0])
    assert losses[0] > 0
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
