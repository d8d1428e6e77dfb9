"""The input pipeline on shards built here with plain tf.train protos (DMVR's layout).

Frames encode what they are: red = x position (a horizontal ramp), green = 8 x frame
index; flow frames hold dx = the same ramp and dy = their own index; the waveform is
noise, compared against the log-mel of the slice under the clip's first frame.
"""
import numpy as np
import pytest
import tensorflow as tf

from video_ssl.data import audio as audio_lib
from video_ssl.data import augment
from video_ssl.data import pipeline
from video_ssl.data import reader
from video_ssl.data import schema
from video_ssl.data import views

H, W = 32, 48
FPS = 10.0
SAMPLE_RATE = 16000.0
NUM_FRAMES = 30
BOUND = 20.0
PLAIN = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, normalize=False)


def _ramp(width):
    return np.linspace(0, 255, width)


def _rgb_jpeg(index):
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = _ramp(W)[None, :]
    img[..., 1] = 8 * index
    img[..., 2] = 128
    return tf.io.encode_jpeg(img, quality=100, chroma_downsampling=False).numpy()


def _flow_value_to_dx(value):
    """The ramp's red value -> the dx stored at that position, in pixels."""
    return np.asarray(value) * (2 * BOUND / 255.0) - BOUND


def _flow_jpeg(index, h, w):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = _ramp(w)[None, :]      # dx from -BOUND to BOUND
    img[..., 1] = 8 * index               # dy encodes the flow frame's index
    img[..., 2] = 128
    return tf.io.encode_jpeg(img, quality=100, chroma_downsampling=False).numpy()


def _waveform(seed):
    return np.random.RandomState(seed).uniform(-1, 1, int(NUM_FRAMES / FPS * SAMPLE_RATE))


def _example(*, label=None, filename=None, frames=None, waveform=None, flow=None,
             sample_rate=None, extra_audio=False, source_id=None):
    """A SequenceExample the way DMVR's converter writes it (no frame rate stored);
    source_id: our `video/source_id`, which DMVR does not write."""
    ex = tf.train.SequenceExample()
    ctx = ex.context.feature
    if label is not None:
        ctx["clip/label/index"].int64_list.value.append(label)
    if filename is not None:
        ctx["video/filename"].bytes_list.value.append(filename.encode())
    if source_id is not None:
        ctx["video/source_id"].bytes_list.value.append(source_id.encode())
    if sample_rate is not None:
        ctx["WAVEFORM/feature/sample_rate"].float_list.value.append(sample_rate)
    lists = ex.feature_lists.feature_list
    for jpeg in frames if frames is not None else [_rgb_jpeg(i) for i in range(NUM_FRAMES)]:
        lists["image/encoded"].feature.add().bytes_list.value.append(jpeg)
    if waveform is not None:
        lists["WAVEFORM/feature/floats"].feature.add().float_list.value.extend(waveform)
    if flow is not None:
        ctx["FORWARD_FLOW/flow_bound"].float_list.value.append(BOUND)
        for jpeg in flow:
            lists["FORWARD_FLOW/image/encoded"].feature.add().bytes_list.value.append(jpeg)
    if extra_audio:  # Model Garden: a per-step audio feature vector we do not read
        for _ in range(NUM_FRAMES):
            lists["features/audio"].feature.add().float_list.value.extend([0.5] * 4)
    return ex.SerializeToString()


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ex in examples:
            writer.write(ex)
    return str(path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    flow = [_flow_jpeg(i, H // 2, W // 2) for i in range(NUM_FRAMES - 1)]
    videos = [_example(label=i, filename=f"v{i}.mp4", waveform=_waveform(i), flow=flow)
              for i in range(4)]
    unlabeled = _example(filename="u.mp4", waveform=_waveform(9), flow=flow)
    out = {
        "dmvr": [_write(root / f"dmvr-{s:05d}-of-00002.tfrecord", videos[2 * s:2 * s + 2])
                 for s in range(2)],
        "unlabeled": _write(root / "unlabeled.tfrecord", [unlabeled]),
        "garden": _write(root / "garden.tfrecord", [_example(label=5, extra_audio=True)]),
        "no_flow": _write(root / "noflow.tfrecord", [_example(label=1, filename="nf.mp4")]),
        "rate": _write(root / "rate.tfrecord", [_example(
            label=1, filename="r.mp4", waveform=_waveform(1), sample_rate=22050.0)]),
    }
    out["dmvr_pattern"] = str(root / "dmvr-*.tfrecord")
    return out


def _indices(rgb):
    """Frame index of each (clips, T) frame from its green level (unnormalized clips)."""
    return np.round(rgb[..., 1].mean(axis=(-1, -2)) * 255 / 8).astype(int)


def _first(ds):
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_dmvr_files_give_batches_of_the_right_shapes(shards):
    ds = pipeline.make_dataset(
        shards["dmvr_pattern"], training=True, batch_size=2, num_clips=2, num_frames=4,
        frame_stride=2, crop_size=16, modalities=("rgb", "flow", "audio"), seed=0,
        default_frame_rate=FPS, audio=views.AudioSpec(
            sample_rate=SAMPLE_RATE, num_mel_bins=16, frame_length=256, frame_step=128))
    batch = _first(ds)
    assert batch["rgb"].shape == (2, 2, 4, 16, 16, 3) and batch["rgb"].dtype == np.float32
    assert batch["flow"].shape == (2, 2, 4, 16, 16, 2)
    # 0.8 s at 16 kHz, step 128 with end padding -> 100 frames.
    assert batch["audio"].shape == (2, 2, 100, 16, 1)
    assert batch["label"].dtype == np.int32 and set(batch["label"]) <= {0, 1, 2, 3}
    # Normalized RGB: mean 0.45, std 0.225 puts [0, 1] at [-2, 2.45].
    assert batch["rgb"].min() >= -2.01 and batch["rgb"].max() <= 2.45


def test_labels_and_unlabeled_videos(shards):
    def labels(pattern):
        ds = pipeline.make_dataset(pattern, training=False, batch_size=8, num_frames=2,
                                   crop_size=8, default_frame_rate=FPS)
        return sorted(int(v) for b in ds for v in b["label"].numpy())

    assert labels(shards["dmvr_pattern"]) == [0, 1, 2, 3]
    assert labels(shards["unlabeled"]) == [-1]
    assert labels(shards["garden"]) == [5]


def test_training_clips_follow_stride_and_loop(shards):
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=4,
                               num_clips=3, num_frames=6, frame_stride=7, crop_size=8,
                               seed=1, default_frame_rate=FPS, **PLAIN)
    idx = _indices(_first(ds)["rgb"])
    # 6 frames at stride 7 span 36 > 30 frames: the clip loops around.
    expected = (idx[..., :1] + 7 * np.arange(6)) % NUM_FRAMES
    np.testing.assert_array_equal(idx, expected)


def test_only_sampled_frames_are_decoded(shards, tmp_path):
    # Evaluation, 2 uniform clips of 4 frames at stride 2 over 30 frames: starts 0 and 23.
    wanted = {0, 2, 4, 6, 23, 25, 27, 29}
    # JPEG's start marker, then garbage: passes the reader's marker check, fails decoding.
    broken = b"\xff\xd8\xff not a jpeg"
    frames = [_rgb_jpeg(i) if i in wanted else broken for i in range(NUM_FRAMES)]
    path = _write(tmp_path / "sparse.tfrecord", [_example(label=3, frames=frames)])
    ds = pipeline.make_dataset(path, training=False, batch_size=1, num_clips=2, num_frames=4,
                               frame_stride=2, crop_size=16, default_frame_rate=FPS,
                               normalize=False)
    idx = _indices(_first(ds)["rgb"][0])
    np.testing.assert_array_equal(idx, [[0, 2, 4, 6], [23, 25, 27, 29]])


def test_flow_shares_window_crop_and_flip_with_rgb(shards):
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=4,
                               num_clips=4, num_frames=4, frame_stride=9, crop_size=16,
                               modalities=("rgb", "flow"), seed=3, default_frame_rate=FPS,
                               **PLAIN)
    batch = _first(ds)
    rgb, flow = batch["rgb"].reshape(-1, 4, 16, 16, 3), batch["flow"].reshape(-1, 4, 16, 16, 2)
    flips = []
    for r, f in zip(rgb, flow):
        dx_if_same = _flow_value_to_dx(r[..., 0] * 255)
        same, negated = np.abs(f[..., 0] - dx_if_same).mean(), np.abs(f[..., 0] + dx_if_same).mean()
        # Flow frames are half the RGB size: the scaled box is off by under a flow pixel.
        assert min(same, negated) < 2.5 and max(same, negated) > 6.0
        flips.append(negated < same)
        # Flow frame for RGB frame i is min(i, 28); dy holds its index.
        rgb_idx = np.round(r[..., 1].mean(axis=(1, 2)) * 255 / 8)
        flow_idx = np.round((f[..., 1].mean(axis=(1, 2)) + BOUND) * 255 / (2 * BOUND) / 8)
        np.testing.assert_array_equal(flow_idx, np.minimum(rgb_idx, NUM_FRAMES - 2))
    assert any(flips) and not all(flips)


def test_audio_follows_the_clip(shards):
    spec = views.AudioSpec(sample_rate=SAMPLE_RATE, num_mel_bins=16, frame_length=256,
                           frame_step=128, duration=0.5)
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=4,
                               num_clips=3, num_frames=2, frame_stride=3, crop_size=8,
                               modalities=("rgb", "audio"), seed=4, default_frame_rate=FPS,
                               audio=spec, **PLAIN)
    batch = _first(ds)
    first_frames = _indices(batch["rgb"])[..., 0]
    num = int(0.5 * SAMPLE_RATE)
    for b, label in enumerate(batch["label"]):
        wave = _waveform(int(label))
        for c, frame in enumerate(first_frames[b]):
            start = int(round(frame / FPS * SAMPLE_RATE))
            expected = audio_lib.log_mel_spectrogram(
                wave[start:start + num].astype(np.float32), SAMPLE_RATE, num_mel_bins=16,
                frame_length=256, frame_step=128).numpy()
            # Looping past the end changes only the last spectrogram frames.
            np.testing.assert_allclose(batch["audio"][b, c, :20, :, 0], expected[:20], atol=1e-3)


def test_same_window_gives_two_crops_of_one_clip(shards):
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=2,
                               num_clips=2, num_frames=4, frame_stride=3, crop_size=16,
                               same_window=True, seed=5, default_frame_rate=FPS, **PLAIN)
    rgb = _first(ds)["rgb"]
    idx = _indices(rgb)
    np.testing.assert_array_equal(idx[:, 0], idx[:, 1])
    assert np.abs(rgb[:, 0, ..., 0] - rgb[:, 1, ..., 0]).mean() > 0.01  # different crops


@pytest.mark.parametrize("crops", [3, 10])
def test_eval_clips_times_crops(shards, crops):
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=False, batch_size=2,
                               num_clips=2, num_frames=4, frame_stride=2, crop_size=16,
                               short_side=16, eval_crops=crops, modalities=("rgb", "flow"),
                               default_frame_rate=FPS, normalize=False)
    batch = _first(ds)
    assert batch["rgb"].shape == (2, 2 * crops, 4, 16, 16, 3)
    assert batch["flow"].shape == (2, 2 * crops, 4, 16, 16, 2)
    idx = _indices(batch["rgb"])
    # Clip-major: the crops of one clip show the same frames, the two clips differ.
    np.testing.assert_array_equal(idx[:, 0], idx[:, crops - 1])
    np.testing.assert_array_equal(idx[0, crops], [23, 25, 27, 29])
    # A left crop of a landscape frame is darker in red (the ramp) than a right one.
    right = {3: 2, 10: 1}[crops]
    assert batch["rgb"][0, 0, ..., 0].mean() < batch["rgb"][0, right, ..., 0].mean()
    if crops == 10:  # crops 5-9 mirror crops 0-4
        np.testing.assert_allclose(batch["rgb"][0, 5], batch["rgb"][0, 0, :, :, ::-1])


def test_dense_sliding_windows(shards):
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=False, batch_size=2,
                               num_frames=4, frame_stride=2, crop_size=8,
                               eval_window_stride=8, default_frame_rate=FPS, normalize=False)
    batch = _first(ds)
    # max start 30 - 7 = 23 -> windows at 0, 8, 16.
    assert batch["rgb"].shape == (2, 3, 4, 8, 8, 3) and batch["clip_mask"].all()
    np.testing.assert_array_equal(_indices(batch["rgb"])[0, :, 0], [0, 8, 16])


def test_broad_view_centred_on_narrow_view(shards):
    narrow = views.ViewSpec(num_frames=4, frame_stride=1, crop_size=16,
                            augmentation=views.AugmentSpec(**PLAIN))
    broad = views.ViewSpec(num_frames=8, frame_stride=2, crop_size=8,
                           augmentation=views.AugmentSpec(**PLAIN),
                           sync="centre")
    sound = views.ViewSpec(num_frames=8, frame_stride=2, modalities=("audio",), sync="centre",
                           audio=views.AudioSpec(sample_rate=SAMPLE_RATE, num_mel_bins=8,
                                                 frame_length=256, frame_step=256))
    ds = pipeline.make_view_dataset(shards["dmvr_pattern"], [narrow, broad, sound],
                                    training=True, batch_size=4, seed=6,
                                    default_frame_rate=FPS)
    batch = next(iter(ds))
    n_idx, b_idx = _indices(batch["views"][0]["rgb"].numpy()), _indices(
        batch["views"][1]["rgb"].numpy())
    assert batch["views"][1]["rgb"].shape == (4, 1, 8, 8, 8, 3)
    # An audio-only view: 1.6 s at 16 kHz in steps of 256 samples.
    assert set(batch["views"][2]) == {"audio"}
    assert batch["views"][2]["audio"].shape == (4, 1, 100, 8, 1)
    # Frame centres: narrow n0 + 1.5, broad b0 + 7 (before looping); the fractional
    # start is floored separately in each view, so they differ by half a frame.
    offset = (n_idx[:, 0, 0] + 1.5) - (b_idx[:, 0, 0] + 7)
    offset = (offset + NUM_FRAMES / 2) % NUM_FRAMES - NUM_FRAMES / 2
    np.testing.assert_array_equal(np.abs(offset), 0.5)


def test_missing_modality_names_shard_video_and_key(shards):
    ds = pipeline.make_dataset(shards["no_flow"], training=False, batch_size=1, num_frames=2,
                               crop_size=8, modalities=("rgb", "flow"),
                               default_frame_rate=FPS)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"noflow\.tfrecord: video nf\.mp4 has no feature list "
                             r"FORWARD_FLOW/image/encoded"):
        next(iter(ds))


def test_wrong_sample_rate_names_the_file(shards):
    ds = pipeline.make_dataset(shards["rate"], training=False, batch_size=1, num_frames=2,
                               crop_size=8, modalities=("rgb", "audio"),
                               default_frame_rate=FPS,
                               audio=views.AudioSpec(sample_rate=SAMPLE_RATE,
                                                     frame_length=256, frame_step=128))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"rate\.tfrecord: video r\.mp4 has audio at 22050.* "
                             r"expected 16000 Hz"):
        next(iter(ds))


def test_empty_pattern_is_a_clear_error(tmp_path):
    with pytest.raises(reader.DataPathError, match="nothing-.*tfrecord' matches no files"):
        pipeline.make_dataset(str(tmp_path / "nothing-*.tfrecord"), training=True,
                              batch_size=1)


def test_match_files_takes_patterns_or_files_and_names_the_binding(shards, tmp_path):
    files = reader.match_files([shards["dmvr_pattern"], shards["dmvr"][0], shards["garden"]])
    assert files == sorted([*shards["dmvr"], shards["garden"]])
    with pytest.raises(reader.DataPathError, match=r"train\.train_files is not set; set it "
                                                   r"with --gin_param="):
        reader.match_files(None, "train.train_files")
    with pytest.raises(ValueError, match=r"train\.train_files='.*none-\*' matches no files"):
        reader.match_files(str(tmp_path / "none-*"), "train.train_files")


def test_seeded_pipeline_repeats_exactly(shards):
    def batches(seed):
        ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=2,
                                   num_clips=2, num_frames=2, frame_stride=4, crop_size=8,
                                   seed=seed, default_frame_rate=FPS)
        return [b["rgb"].numpy() for b in ds.take(3)]

    first, again, other = batches(11), batches(11), batches(12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_input_context_splits_files(shards):
    labels = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        ds = pipeline.make_dataset(shards["dmvr_pattern"], training=False, batch_size=4,
                                   num_frames=2, crop_size=8, input_context=context,
                                   default_frame_rate=FPS)
        batches = list(ds)
        assert all(b["rgb"].shape[0] <= 2 for b in batches)  # per-replica batch
        labels.append(sorted(int(v) for b in batches for v in b["label"].numpy()))
    assert labels == [[0, 1], [2, 3]]


# CoCLR's official augmentation (coclr_common.gin).
COCLR = dict(one_clip_prob=0.5, photometric_prob=0.3, color_jitter_prob=0.8, grayscale_prob=0.2,
             grayscale_mode="channel", blur_prob=0.5, flow_photometric=True,
             flow_flip_negates_dx=False)


@pytest.mark.parametrize("augmentation", [
    dict(color_jitter_prob=0.8, grayscale_prob=0.5, blur_prob=0.5),
    dict(COCLR, grayscale_prob=0.5, photometric_prob=0.6),
])
def test_deferred_augmentation_matches_the_pipeline(shards, augmentation):
    kwargs = dict(training=True, batch_size=4, num_clips=2, num_frames=4, frame_stride=3,
                  crop_size=24, modalities=("rgb", "flow"), seed=7, default_frame_rate=FPS,
                  **augmentation)
    full = _first(pipeline.make_dataset(shards["dmvr_pattern"], **kwargs))
    deferred = _first(pipeline.make_dataset(shards["dmvr_pattern"], defer_augmentation=True,
                                            **kwargs))
    assert deferred["rgb"].dtype == np.uint8 and deferred["rgb"].shape == (4, 2, 4, 24, 24, 3)
    assert deferred["augment_seed"].shape == (4, 2, 2)
    sizes = deferred["rgb_size"].reshape(-1, 2)
    # Crops that fit went out as decoded, the others resized in the pipeline.
    fits = np.any(sizes < 24, axis=1)
    assert 0 < fits.sum() < len(sizes) and np.all(sizes[~fits] == 24)
    np.testing.assert_array_equal(deferred["flow"], full["flow"])
    spec = views.view_from_options(augmentation).augmentation
    rgb = augment.augment_batch(deferred["rgb"], deferred["augment_seed"], deferred["rgb_size"],
                                spec, deferred.get("augment_photometric")).numpy()
    # Crops resized in the pipeline were rounded to uint8: half a level, times the
    # jitter's gain, over the std 0.225.
    difference = np.abs(rgb - full["rgb"])
    assert difference.max() < 0.05 and difference.mean() < 0.005


def test_deferred_augmentation_is_for_training_rgb(shards):
    with pytest.raises(ValueError, match="defer_augmentation applies to training clips"):
        pipeline.make_dataset(shards["dmvr_pattern"], training=False, batch_size=1,
                              defer_augmentation=True)
    with pytest.raises(ValueError, match="modalities .*'flow'.* have no rgb"):
        views.ViewSpec(modalities=("flow",), defer_augmentation=True)


def _one_clip_batch(shards, **options):
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=8,
                               num_clips=2, num_frames=4, frame_stride=2, crop_size=16,
                               seed=2, default_frame_rate=FPS, **options)
    return _first(ds.unbatch().batch(8).take(1))


def test_one_clip_pairs_share_a_window_and_one_clip_gets_the_photometric_ops(shards):
    pairs = _one_clip_batch(shards, one_clip_prob=1.0, **PLAIN)
    idx = _indices(pairs["rgb"])
    np.testing.assert_array_equal(idx[:, 0], idx[:, 1])
    assert np.abs(pairs["rgb"][:, 0, ..., 0] - pairs["rgb"][:, 1, ..., 0]).mean() > 0.01
    deferred = _one_clip_batch(shards, one_clip_prob=1.0, defer_augmentation=True, **PLAIN)
    gates = deferred["augment_photometric"]
    assert gates.shape == (8, 2) and np.all(gates.sum(axis=1) == 1)
    assert 0 < gates[:, 0].sum() < 8  # either clip of the pair
    apart = _indices(_one_clip_batch(shards, **PLAIN)["rgb"])
    assert np.any(apart[:, 0] != apart[:, 1])
    with pytest.raises(ValueError, match=r"one_clip_prob=0.5: expected a view of 2 clips"):
        pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=1, num_clips=3,
                              one_clip_prob=0.5, default_frame_rate=FPS)


def _long_video(path, num_frames=100):
    """One video whose frame i is flat with green 2 i (windows of 2 frames are told apart
    by their first pixel)."""
    frames = [tf.io.encode_jpeg(np.full((16, 16, 3), [64, 2 * i, 128], np.uint8),
                                quality=100).numpy() for i in range(num_frames)]
    return _write(path, [_example(label=0, frames=frames)])


def test_coclr_augmentation_has_the_official_effective_probabilities(tmp_path):
    """Over 800 pairs: half share their window; per clip, colour jitter 0.32, grayscale
    0.08, blur 0.20 (0.5 x 0.3 + 0.5 x 0.5 = 0.4 of the clips get the full transform)."""
    ds = pipeline.make_dataset(_long_video(tmp_path / "long.tfrecord"), training=True,
                               batch_size=200, num_clips=2, num_frames=2, frame_stride=1,
                               crop_size=8, seed=0, default_frame_rate=FPS,
                               defer_augmentation=True, **COCLR)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds.take(4)]
    green = np.concatenate([b["rgb"][:, :, :, 0, 0, 1] for b in batches]).astype(int)
    same_window = np.all(np.abs(green[:, 0] - green[:, 1]) <= 1, axis=1)
    # Two-clip pairs meet by chance once in 99 (100 frames, windows of 2).
    assert abs(same_window.mean() - (0.5 + 0.5 / 99)) < 0.06
    seeds = np.concatenate([b["augment_seed"] for b in batches]).reshape(-1, 2)
    gates = np.concatenate([b["augment_photometric"] for b in batches]).reshape(-1)
    spec = views.view_from_options(COCLR).augmentation
    decisions = augment.photometric_decisions(augment.draws_of(seeds, spec), spec, gates)
    for name, rate, tolerance in (("color_jitter", 0.32, 0.045), ("grayscale", 0.08, 0.025),
                                  ("blur", 0.20, 0.04)):
        measured = float(np.mean(decisions[name]))
        assert abs(measured - rate) < tolerance, (name, measured)
    assert abs(gates.mean() - 0.4) < 0.05


def test_seeded_pipeline_repeats_with_coclrs_augmentation(shards):
    def batches(seed, **options):
        ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=2,
                                   num_clips=2, num_frames=2, frame_stride=4, crop_size=8,
                                   modalities=("rgb", "flow"), seed=seed,
                                   default_frame_rate=FPS, **COCLR, **options)
        return [v.numpy() for b in ds.take(3) for k, v in sorted(b.items()) if k != "label"]

    first, again, other = batches(11), batches(11), batches(12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    deferred, deferred_again = batches(11, defer_augmentation=True), batches(
        11, defer_augmentation=True)
    for a, b in zip(deferred, deferred_again):
        np.testing.assert_array_equal(a, b)


def test_flow_photometric_ops_on_and_off(shards):
    kwargs = dict(training=True, batch_size=4, num_clips=2, num_frames=4, frame_stride=3,
                  crop_size=16, modalities=("rgb", "flow"), seed=6, default_frame_rate=FPS,
                  flip_prob=0.0)
    ops = dict(color_jitter_prob=1.0, grayscale_prob=0.0, blur_prob=1.0)
    plain = _first(pipeline.make_dataset(shards["dmvr_pattern"], **kwargs, **PLAIN))["flow"]
    off = _first(pipeline.make_dataset(shards["dmvr_pattern"], **kwargs, **ops))["flow"]
    on = _first(pipeline.make_dataset(shards["dmvr_pattern"], flow_photometric=True,
                                      **kwargs, **ops))["flow"]
    idle = _first(pipeline.make_dataset(shards["dmvr_pattern"], flow_photometric=True,
                                        **kwargs, **PLAIN))["flow"]
    np.testing.assert_array_equal(off, plain)  # colour ops are RGB's alone by default
    np.testing.assert_allclose(idle, plain, atol=1e-4)  # the JPEG values' round trip
    assert np.abs(on - plain).mean() > 0.1


def test_flow_flip_can_keep_dx_as_coclrs_code(shards):
    ds = pipeline.make_dataset(shards["dmvr_pattern"], training=True, batch_size=4,
                               num_clips=4, num_frames=4, frame_stride=9, crop_size=16,
                               modalities=("rgb", "flow"), seed=3, default_frame_rate=FPS,
                               flow_flip_negates_dx=False, **PLAIN)
    batch = _first(ds)
    rgb, flow = batch["rgb"].reshape(-1, 4, 16, 16, 3), batch["flow"].reshape(-1, 4, 16, 16, 2)
    flipped = []
    for r, f in zip(rgb, flow):
        # dx follows the (mirrored or not) red ramp, never its negation.
        assert np.abs(f[..., 0] - _flow_value_to_dx(r[..., 0] * 255)).mean() < 2.5
        flipped.append(r[..., :8, 0].mean() > r[..., 8:, 0].mean())
    assert any(flipped) and not all(flipped)


# --- video ids: the source video a clip was cut from ----------------------------------

def test_source_id_written_and_parsed_and_empty_when_absent():
    frames = [_rgb_jpeg(0)]
    ours = schema.make_sequence_example(frames, filename="A/v_A_g01_c02.avi",
                                        source_id="A_g01")
    assert ours.context.feature[schema.SOURCE_ID].bytes_list.value == [b"A_g01"]
    assert schema.SOURCE_ID not in schema.make_sequence_example(
        frames, source_id="").context.feature
    parsed = schema.parse_sequence_example(ours.SerializeToString())
    assert parsed["source_id"].numpy() == b"A_g01"
    # DMVR's and the Model Garden's files have no such key.
    for record in (_example(label=1, filename="v.mp4"), _example(label=5, extra_audio=True)):
        assert schema.parse_sequence_example(record)["source_id"].numpy() == b""


def test_video_id_is_shared_by_clips_of_one_source_video(tmp_path):
    """Two clips of group A_g01, one of B_g01, two records without a source id."""
    records = [_example(label=0, filename="a1.mp4", source_id="A_g01"),
               _example(label=1, filename="b1.mp4", source_id="B_g01"),
               _example(label=0, filename="a2.mp4", source_id="A_g01"),
               _example(label=2, filename="c.mp4"), _example(label=3, filename="d.mp4")]
    path = _write(tmp_path / "groups.tfrecord", records)
    clip = dict(num_frames=2, frame_stride=1, crop_size=8)
    batch = _first(pipeline.make_dataset(path, training=False, batch_size=5,
                                         default_frame_rate=FPS, **clip))
    ids = batch["video_id"]
    assert ids.dtype == np.int64 and batch["label"].tolist() == [0, 1, 0, 2, 3]
    assert ids[0] == ids[2] and len(set(ids.tolist())) == 4
    assert ids[0] == reader.video_id(tf.constant(records[1]), tf.constant("A_g01"))
    # Without a source id: the hash of the record itself, not of a filename.
    np.testing.assert_array_equal(
        ids[3:], [reader.video_id(tf.constant(r), tf.constant("")) for r in records[3:]])
    # The trainer's batches carry it beside "label", the same ids in every epoch.
    ds = pipeline.make_view_dataset(path, {"clips": views.ViewSpec(**clip)}, training=True,
                                    batch_size=5, seed=0, default_frame_rate=FPS)
    by_label = dict(zip(batch["label"].tolist(), ids.tolist()))
    for batch in ds.take(3):
        assert set(batch) == {"views", "label", "video_id"}
        assert [by_label[label] for label in batch["label"].numpy().tolist()] == \
            batch["video_id"].numpy().tolist()
