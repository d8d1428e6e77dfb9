"""The generic method layer: the feature queue, EMA copies, the ablation knobs of the
ρ family and initializing encoders from another run."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tiny_methods import (BATCH, METHODS, SMALL, fit_one_step, make_batch, make_method,
                          tiny_backbone)
from video_ssl import optim
from video_ssl.methods import steps
from video_ssl.methods.base import INPUT_SPEC_FILE
from video_ssl.methods.moco import MoCo
from video_ssl.methods.queue import FeatureQueue
from video_ssl.methods.rho import rho_views


def test_queue_columns_stay_aligned_and_fill_once():
    queue = FeatureQueue(5, {"keys": ((2,), "float32", "zeros"), "video": ((), "int64", "zeros")})
    assert not queue.is_full() and queue.filled.numpy().sum() == 0
    queue.enqueue(keys=tf.ones([3, 2]), video=tf.constant([7, 8, 9], tf.int64))
    assert queue.filled.numpy().tolist() == [True, True, True, False, False]
    queue.enqueue(keys=2 * tf.ones([3, 2]), video=tf.constant([10, 11, 12], tf.int64))
    # Rows 3, 4 then wrap to 0: the oldest entries are overwritten, columns together.
    assert queue["video"].numpy().tolist() == [12, 8, 9, 10, 11]
    assert queue["keys"].numpy()[:, 0].tolist() == [2, 1, 1, 2, 2]
    assert bool(queue.is_full()) and int(queue.pointer.numpy()) == 1
    with pytest.raises(ValueError, match=r"expected columns \['keys', 'video'\]"):
        queue.enqueue(keys=tf.ones([1, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one step"):
        queue.enqueue(keys=tf.ones([6, 2]), video=tf.zeros([6], tf.int64))
    with pytest.raises(ValueError, match="reserved"):
        FeatureQueue(2, {"pointer": ((), "int64", "zeros")})


def test_constant_momentum_is_fixed():
    method = make_method("moco", 2, eager=True, momentum_schedule="constant",
                         base_momentum=0.999)
    fit_one_step(method, make_batch(2))
    method.optimizer.iterations.assign(5)
    assert float(method.momentum.value_at(method.step, method.total_steps)) == \
        pytest.approx(0.999)
    annealed = make_method("moco", 2, eager=True)
    annealed.optimizer.iterations.assign(5)
    assert float(annealed.momentum.value_at(annealed.step, annealed.total_steps)) == \
        pytest.approx(
        float(optim.annealed_momentum(5, 10, 0.994)))
    with pytest.raises(ValueError, match="momentum_schedule"):
        make_method("moco", 2, momentum_schedule="linear")


def test_loss_per_positive_is_one_row_per_positive():
    method = MoCo(rho_views(3), tiny_backbone(), queue_size=16, loss_per_positive=True,
                  **SMALL)
    rng = np.random.default_rng(0)
    clip = tf.constant(rng.normal(size=(BATCH, 4, 32, 32, 3)), tf.float32)
    keys = [tf.math.l2_normalize(tf.constant(rng.normal(size=(BATCH, 8)), tf.float32), -1)
            for _ in range(2)]
    query = tf.math.l2_normalize(method.projector(method.backbone(clip, training=True),
                                                  training=True), -1).numpy()
    negatives = query @ method.queue["keys"].numpy().T / 0.1
    expected = []
    for key in keys:
        positive = (query * key.numpy()).sum(1, keepdims=True) / 0.1
        logits = np.concatenate([positive, negatives], 1)
        expected.append(np.mean(np.log(np.exp(logits).sum(1)) - positive[:, 0]))
    np.testing.assert_allclose(float(method.query_loss(clip, keys)), np.mean(expected),
                               rtol=1e-4)
    method.loss_per_positive = False  # the paper's eq. (1): both positives in one row
    joint = float(method.query_loss(clip, keys))
    assert not np.isclose(joint, np.mean(expected))


@pytest.mark.parametrize("distributed", [False, True])
def test_no_optimizer_step_until_the_queue_has_filled(distributed, request):
    # Queue 16 = 2 steps of 4 videos x 2 clips: step 1 only fills, step 2 completes it.
    strategy = request.getfixturevalue("mirrored") if distributed else None
    method = make_method("moco", 2, strategy, queue_size=16, wait_for_full_queue=True)
    batch = make_batch(2)
    before = [v.numpy().copy() for v in method.trainable_variables]
    fit_one_step(method, batch)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, method.trainable_variables))
    assert int(method.optimizer.iterations.numpy()) == 1  # the step still counts
    fit_one_step(method, batch)
    assert bool(method.queue.is_full())
    fit_one_step(method, batch)
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, method.trainable_variables))


def test_bn_group_size_normalizes_each_group_alone():
    method = make_method("simclr", 2, eager=True, bn_group_size=2)
    clips = tf.random.normal([4, 4, 32, 32, 3])
    calls = []
    out = method.grouped(lambda x: calls.append(x.shape[0]) or x[:, :1, 0, 0, 0], clips)
    assert calls == [2, 2] and out.shape == (4, 1)
    with pytest.raises(ValueError, match="bn_group_size=3 must divide"):
        make_method("simclr", 2, eager=True, bn_group_size=3).grouped(lambda x: x, clips)
    assert np.isfinite(fit_one_step(method, make_batch(2)))


@pytest.mark.parametrize("batch,group", [(4, 2), (16, 4), (12, 3), (32, 8), (128, 32), (6, 3)])
def test_shuffle_bn_on_one_replica_keeps_keys_out_of_their_query_group(batch, group):
    """What `steps.shuffled_bn` guarantees on one replica of G >= 2 BatchNorm groups: the
    clips normalized with video i's key are never its query's group; they hold at most
    ceil(group / G) videos of that group (video i included), the fewest any regrouping
    can: only video i when group <= G. Keys come back in the batch's order."""
    def members(x):  # each row: the ids of the clips normalized with it
        return tf.tile(tf.reshape(x, [1, -1]), [tf.shape(x)[0], 1])

    ids = tf.range(batch, dtype=tf.float32)[:, None]
    key_groups = steps.shuffled_bn(lambda x: steps.grouped(members, x, group), ids, group,
                                   seed=[0, 0]).numpy().astype(int)
    num_groups = batch // group
    bound = -(-group // num_groups)
    for video in range(batch):
        key_group = set(key_groups[video])
        query_group = set(range(video // group * group, (video // group + 1) * group))
        assert video in key_group and len(key_group) == group
        assert key_group != query_group
        assert len(key_group & query_group) <= bound
        if group <= num_groups:
            assert key_group & query_group == {video}
        # Each key group draws evenly on the query groups.
        counts = np.bincount([m // group for m in key_group], minlength=num_groups)
        assert counts.max() - counts.min() <= 1


def test_shuffle_bn_with_one_group_is_the_plain_encoding():
    calls = []
    x = tf.range(4, dtype=tf.float32)[:, None]
    for group in (None, 4, 8):
        out = steps.shuffled_bn(lambda y: calls.append(y.numpy().ravel().tolist()) or y, x,
                                group, seed=[0, 0])
        np.testing.assert_array_equal(out.numpy(), x.numpy())
    assert calls == [[0, 1, 2, 3]] * 3


@pytest.mark.parametrize("shuffle_bn", [True, False])
def test_moco_keys_on_one_replica_equal_the_per_group_computation(shuffle_bn):
    """Shuffle-BN with 2 groups of 2 in a batch of 4: videos {0, 2} and {1, 3} are
    normalized together (the query groups are {0, 1} and {2, 3}); off, the key groups
    are the query groups."""
    method = make_method("moco", 2, eager=True, bn_group_size=2, shuffle_bn=shuffle_bn)
    clip = make_batch(2, seed=5)["views"]["clips"]["rgb"][:, 1]

    def explicit(rows):
        return tf.math.l2_normalize(method.momentum["projector"](method.momentum["backbone"](
            tf.gather(clip, rows), training=True), training=True), -1).numpy()

    groups = [[0, 2], [1, 3]] if shuffle_bn else [[0, 1], [2, 3]]
    expected = np.zeros((BATCH, SMALL["embedding_dim"]), "float32")
    for rows in groups:
        expected[rows] = explicit(rows)
    np.testing.assert_allclose(method.keys(clip, 1).numpy(), expected, rtol=1e-4, atol=1e-5)
    unshuffled = np.concatenate([explicit([0, 1]), explicit([2, 3])])
    assert np.allclose(expected, unshuffled, atol=1e-4) != shuffle_bn


def test_encoders_and_input_spec_describe_the_method():
    method = make_method("byol", 2, eager=True)
    assert list(method.encoders) == ["rgb"] and method.encoder_model("rgb") is method.backbone
    spec = method.input_spec()
    assert spec["encoders"]["rgb"] == {"attribute": "backbone", "view": "clips",
                                       "modality": "rgb"}
    assert spec["views"]["clips"]["num_clips"] == 2
    json.dumps(spec)  # data a run writes as input_spec.json


def test_init_checkpoints_restore_a_named_encoder_from_another_run(tmp_path):
    source = make_method("moco", 2, eager=True)
    fit_one_step(source, make_batch(2))
    run = tmp_path / "run"
    tf.train.Checkpoint(model=source).save(str(run / "checkpoints" / "ckpt"))
    (run / INPUT_SPEC_FILE).write_text(json.dumps(source.input_spec()))
    target = make_method("byol", 2, eager=True, init_checkpoints={"rgb": str(run)})
    assert not np.allclose(target.backbone.get_weights()[0], source.backbone.get_weights()[0])
    (line,) = target.initialize_encoders()
    assert "rgb encoder (backbone) initialized from" in line and "ckpt-1" in line
    for a, b in zip(target.backbone.get_weights(), source.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The momentum encoder starts from the initialized weights too.
    for a, b in zip(target.momentum["backbone"].get_weights(), source.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    for bad, message in (({"flow": str(run)}, r"unknown encoders \['flow'\]"),
                         ({"rgb": f"{run}:narrow"}, "has no encoder 'narrow'"),
                         ({"rgb": str(tmp_path)}, "input_spec.json: no such file")):
        with pytest.raises(ValueError, match=message):
            make_method("byol", 2, eager=True, init_checkpoints=bad).initialize_encoders()


def test_views_round_trip_through_json():
    from video_ssl.data import input_spec
    from video_ssl.data.views import AudioSpec, AugmentSpec, ViewSpec
    view = ViewSpec(num_clips=3, modalities=("rgb", "audio"), area_range=(0.3, 1.0),
                    augmentation=AugmentSpec(color_strength=0.75), audio=AudioSpec(duration=5.0))
    restored = input_spec.view_from_json(json.loads(json.dumps(input_spec.view_to_json(view))))
    assert restored == view
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        input_spec.view_from_json({**input_spec.view_to_json(view), "colour": 1})
    clip, normalization = input_spec.clip_settings(view)
    assert clip == {"num_frames": 8, "frame_stride": 8, "crop_size": 224, "target_fps": None}
    assert normalization == {"mean": 0.45, "std": 0.225}


def test_knn_monitor_per_encoder_takes_k_and_temperature(tmp_path):
    """train.knn_k / knn_temperature reach the monitor of every encoder, each on its
    own modality and shaped like that encoder's training clips."""
    from video_ssl import train as train_lib
    method = make_method("moco", 2, eager=True)
    (monitor,) = train_lib.knn_monitors(method, ["bank"], ["query"], batch_size=2,
                                        every_n_epochs=3, k=7, temperature=0.5)
    assert (monitor.k, monitor.temperature, monitor.every_n_epochs) == (7, 0.5, 3)
    assert (monitor.key, monitor.modality) == ("knn_top1", "rgb")
    assert monitor.encoder(method) is method.backbone


@pytest.mark.parametrize("distributed", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["simclr", "swav"])
def test_gradient_caching_equals_the_plain_path(name, distributed, request):
    """rho = 3: same loss, same gradients (hence the same update) and the same BatchNorm
    running averages as the plain path normalizing each clip-batch alone."""
    strategy = request.getfixturevalue("mirrored") if distributed else None
    per_replica = BATCH // (2 if distributed else 1)
    plain = make_method(name, 3, strategy, bn_group_size=per_replica)
    cached = make_method(name, 3, strategy, gradient_caching=True)
    cached.set_weights(plain.get_weights())
    batch = make_batch(3, seed=5)
    np.testing.assert_allclose(fit_one_step(cached, batch), fit_one_step(plain, batch),
                               rtol=1e-5)
    for a, b in zip(plain.weights, cached.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)
    assert any(not np.allclose(a, b) for a, b in zip(
        make_method(name, 3).get_weights(), cached.get_weights()))  # it did train


@pytest.mark.slow
@pytest.mark.parametrize("name,options", [("moco", {}), ("moco", {"wait_for_full_queue": True}),
                                          ("byol", {}), ("simclr", {"gradient_caching": True}),
                                          ("swav", {})])
def test_train_step_compiles_with_xla(name, options):
    """Every step compiles with `jit_compile=True` (static shapes, no host-side Python in
    the step) and gives the uncompiled step's loss."""
    losses = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        method = METHODS[name](views=rho_views(3), backbone=tiny_backbone(), total_steps=10,
                               **options)
        method.compile(optimizer=optim.build_optimizer(
            "lars", base_learning_rate=0.4, global_batch_size=BATCH, total_steps=10),
            jit_compile=jit)
        method.optimizer.build(method.trainable_variables)  # as the trainer does
        losses.append(fit_one_step(method, make_batch(3)))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
