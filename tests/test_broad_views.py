"""BraVe's views in the data layer (paper §4.1, Tables 3 and 4), on tiny shards built here.

Frame i has green level 8 i (its index), a red ramp along x (a flip reverses it) and a
fixed noise texture in blue (so a convolution can be identified from its output); flow
frames hold dx = the ramp and dy = their index; the waveform is noise. The videos are
30 frames at 10 fps, plus one of 12 frames, each with audio as long as its frames.
"""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from video_ssl.data import audio as audio_lib
from video_ssl.data import clips
from video_ssl.data import pipeline
from video_ssl.data import views

H, W = 24, 32
FPS = 10.0
SAMPLE_RATE = 8000.0
BOUND = 20.0
LENGTHS = (30, 30, 30, 12)  # frames per video; label = position
PLAIN = views.AugmentSpec(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                          normalize=False)
MEL = dict(num_mel_bins=8, frame_length=256, frame_step=256, upper_edge_hertz=3800.0)
TEXTURE = np.random.RandomState(0).randint(0, 256, (H, W)).astype(np.uint8)


def _jpeg(img):
    return tf.io.encode_jpeg(img, quality=100, chroma_downsampling=False).numpy()


def _rgb_jpeg(index):
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, W)[None, :]
    img[..., 1] = 8 * index
    img[..., 2] = TEXTURE
    return _jpeg(img)


def _flow_jpeg(index):
    img = np.zeros((H // 2, W // 2, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, W // 2)[None, :]  # dx from -BOUND to BOUND
    img[..., 1] = 8 * index
    img[..., 2] = 128
    return _jpeg(img)


def _waveform(label):
    return np.random.RandomState(label).uniform(
        -1, 1, int(LENGTHS[label] / FPS * SAMPLE_RATE)).astype(np.float32)


def _example(label):
    ex = tf.train.SequenceExample()
    ex.context.feature["clip/label/index"].int64_list.value.append(label)
    ex.context.feature["FORWARD_FLOW/flow_bound"].float_list.value.append(BOUND)
    lists = ex.feature_lists.feature_list
    for i in range(LENGTHS[label]):
        lists["image/encoded"].feature.add().bytes_list.value.append(_rgb_jpeg(i))
    for i in range(LENGTHS[label] - 1):
        lists["FORWARD_FLOW/image/encoded"].feature.add().bytes_list.value.append(_flow_jpeg(i))
    lists["WAVEFORM/feature/floats"].feature.add().float_list.value.extend(_waveform(label))
    return ex.SerializeToString()


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("broad") / "videos.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for label in range(len(LENGTHS)):
            writer.write(_example(label))
    return path


def _batch(shard, view_list, *, batch_size=48, seed=0):
    ds = pipeline.make_view_dataset(shard, view_list, training=True, batch_size=batch_size,
                                    seed=seed, default_frame_rate=FPS)
    batch = next(iter(ds))
    return [{k: v.numpy() for k, v in out.items()} for out in batch["views"]], \
        batch["label"].numpy()


def _indices(rgb):
    """Frame index of each (..., T) frame from its green level (unnormalized clips)."""
    return np.round(rgb[..., 1].mean(axis=(-1, -2)) * 255 / 8).astype(int)


def _lengths(labels):
    return np.array(LENGTHS)[labels]


def test_broad_view_starts_anywhere_in_the_video_and_loops(shard):
    # 10 frames every 3 cover 28 of the 30 frames: a view about as long as the video.
    broad = dict(num_clips=4, num_frames=10, frame_stride=3, crop_size=8, augmentation=PLAIN)
    looped, within = (views.ViewSpec(start=start, **broad)
                      for start in ("anywhere_looped", "within"))
    (out,), labels = _batch(shard, [looped])
    idx = _indices(out["rgb"])                       # (B, clips, T)
    long = _lengths(labels) == 30
    first = idx[long][..., 0]
    # Starts uniform in [0, T]: over 4 x ~36 draws every start is taken, or nearly.
    assert first.min() <= 1 and first.max() >= 28 and len(np.unique(first)) >= 26
    # Frames past the end are the video's first frames again.
    n = _lengths(labels)[:, None, None]
    np.testing.assert_array_equal(idx, (idx[..., :1] + 3 * np.arange(10)) % n)
    assert (first + 27 >= 30).mean() > 0.5
    # Today's default keeps the clip inside the video: its start is in [0, 30 - 28].
    (out,), labels = _batch(shard, [within])
    assert _indices(out["rgb"])[_lengths(labels) == 30][..., 0].max() <= 2


def test_k_broad_clips_each_draw_their_start_crop_and_flip(shard):
    broad = views.ViewSpec(num_clips=3, num_frames=4, frame_stride=8, crop_size=8,
                           start="anywhere_looped", augmentation=PLAIN)
    (out,), _ = _batch(shard, [broad], batch_size=16)
    rgb = out["rgb"]
    first = _indices(rgb)[..., 0]
    assert np.mean([len(set(f)) == 3 for f in first]) > 0.7
    # The red ramp rises left to right unless the clip was flipped.
    rising = rgb[..., -1, 0].mean(axis=(-1, -2)) > rgb[..., 0, 0].mean(axis=(-1, -2))
    assert any(0 < r.sum() < 3 for r in rising)
    # Different crop boxes see different parts of the ramp (flip does not change it).
    red = rgb[..., 0].mean(axis=(-1, -2, -3))
    assert np.mean([np.ptp(r) > 0.02 for r in red]) > 0.7


def test_visual_broad_views_independent_audio_start_synced(shard):
    narrow = views.ViewSpec(num_frames=4, frame_stride=1, crop_size=8, augmentation=PLAIN)
    broad = views.ViewSpec(num_clips=2, num_frames=8, frame_stride=4, crop_size=8,
                           start="anywhere_looped", augmentation=PLAIN)
    seconds = 2.5
    sound = views.ViewSpec(modalities=("audio",), sync="start",
                           audio=views.AudioSpec(sample_rate=SAMPLE_RATE, duration=seconds, **MEL))
    (n_out, b_out, a_out), labels = _batch(shard, [narrow, broad, sound])
    assert set(a_out) == {"audio"} and a_out["audio"].shape == (48, 1, 79, 8, 1)
    n_first = _indices(n_out["rgb"])[:, 0, 0]
    b_first = _indices(b_out["rgb"])[..., 0]
    # Visual broad starts are drawn on their own: rarely the narrow one's.
    assert np.mean(b_first == n_first[:, None]) < 0.2
    assert abs(np.corrcoef(n_first, b_first[:, 0])[0, 1]) < 0.4
    # The audio starts with the narrow clip and loops from the waveform's start.
    num, wrapped = int(seconds * SAMPLE_RATE), 0
    for b, label in enumerate(labels):
        wave = _waveform(int(label))
        start = int(round(n_first[b] / FPS * SAMPLE_RATE))
        wrapped += start + num > len(wave)
        expected = audio_lib.log_mel_spectrogram(
            np.tile(wave, 4)[start:start + num], SAMPLE_RATE, **MEL).numpy()
        np.testing.assert_allclose(a_out["audio"][b, 0, ..., 0], expected, atol=1e-3)
    assert wrapped >= 10  # the 1.2 s video always, the others sometimes


def test_start_synced_broad_clips_share_the_narrow_start(shard):
    narrow = views.ViewSpec(num_frames=4, frame_stride=1, crop_size=8, augmentation=PLAIN)
    synced = views.ViewSpec(num_clips=2, num_frames=8, frame_stride=4, crop_size=8,
                            sync="start", augmentation=PLAIN)
    (n_out, s_out), labels = _batch(shard, [narrow, synced], batch_size=8)
    n_first = _indices(n_out["rgb"])[:, 0, 0]
    s_idx = _indices(s_out["rgb"])
    np.testing.assert_array_equal(s_idx[..., 0], np.repeat(n_first[:, None], 2, axis=1))
    expected = (n_first[:, None, None] + 4 * np.arange(8)) % _lengths(labels)[:, None, None]
    np.testing.assert_array_equal(s_idx, np.broadcast_to(expected, s_idx.shape))


def test_bad_view_starts_and_syncs_are_errors(shard):
    with pytest.raises(ValueError, match="start='anywhere': expected one of"):
        views.ViewSpec(start="anywhere")
    with pytest.raises(ValueError, match="sync='middle': expected one of"):
        views.ViewSpec(sync="middle")
    with pytest.raises(ValueError, match="a synced view takes its starts from the first view"):
        views.ViewSpec(sync="start", start="anywhere_looped")
    features = {"frames": tf.constant([_rgb_jpeg(i) for i in range(6)]),
                "frame_rate": tf.constant(FPS)}
    seed = tf.constant([0, 0], tf.int64)
    with pytest.raises(ValueError, match=r"views\[0\] sync='start': the first view is"):
        clips.sample_and_decode(features, seed, [views.ViewSpec(sync="start")], training=True)
    with pytest.raises(ValueError, match=r"views\[1\] sync='centre': the first view has 2 "
                                         r"clips; expected 1 or 3"):
        clips.sample_and_decode(features, seed, [views.ViewSpec(num_clips=2),
                                                 views.ViewSpec(num_clips=3, sync="centre")],
                                training=True)


def _conv_patches(clip, k=11):
    """(T, H, W, C) -> (T * H * W, k * k * C): each pixel's zero-padded k x k
    neighbourhood, ordered as a [k, k, C, C'] kernel's inputs (tf.nn.conv2d, SAME)."""
    r = k // 2
    padded = np.pad(clip, ((0, 0), (r, r), (r, r), (0, 0)))
    t, h, w, c = clip.shape
    cols = [padded[:, dy:dy + h, dx:dx + w, :] for dy in range(k) for dx in range(k)]
    return np.stack(cols, axis=-2).reshape(t * h * w, k * k * c).astype(np.float64)


def test_random_convolution_only_on_the_broad_rgb_view(shard):
    narrow = views.ViewSpec(num_frames=2, frame_stride=1, crop_size=16, augmentation=PLAIN)
    broad = dict(num_clips=2, num_frames=4, frame_stride=4, crop_size=16,
                 start="anywhere_looped")
    flow = views.ViewSpec(num_frames=2, frame_stride=2, crop_size=8, modalities=("flow",),
                          augmentation=views.AugmentSpec(color_jitter_prob=1.0, blur_prob=1.0,
                                                         random_conv=True))
    with_rc = views.ViewSpec(augmentation=dataclasses.replace(PLAIN, random_conv=True), **broad)
    without = views.ViewSpec(augmentation=PLAIN, **broad)
    (n_rc, b_rc, f_rc), _ = _batch(shard, [narrow, with_rc, flow], batch_size=4, seed=3)
    (n_plain, b_plain, _), _ = _batch(shard, [narrow, without, flow], batch_size=4, seed=3)
    # The narrow view is exactly its augmentation without random convolution.
    np.testing.assert_array_equal(n_rc["rgb"], n_plain["rgb"])
    # Each broad clip is its plain self through one k x k convolution (k <= 11) for all
    # frames, no bias, a fresh kernel per clip.
    for b in range(4):
        patches = [_conv_patches(c) for c in b_plain["rgb"][b]]
        targets = [c.reshape(-1, 3).astype(np.float64) for c in b_rc["rgb"][b]]
        kernels = [np.linalg.lstsq(p, y, rcond=None)[0] for p, y in zip(patches, targets)]
        for p, y, kernel in zip(patches, targets, kernels):
            assert not np.allclose(y, p[:, 60 * 3:61 * 3])  # not the identity (centre tap)
            np.testing.assert_allclose(p @ kernel, y, atol=1e-3 * np.abs(y).max())
        misfit = np.abs(patches[1] @ kernels[0] - targets[1]).max()
        assert misfit > 0.05 * np.abs(targets[1]).max()
    # Flow views are only cropped and flipped: dy is still a frame's stored value, and
    # dx rises left to right (a flip reverses the ramp and negates it).
    dy = f_rc["flow"][..., 1]
    levels = (dy + BOUND) * 255 / (2 * BOUND) / 8
    np.testing.assert_allclose(levels, np.round(levels), atol=0.2)  # JPEG: +-1 level
    assert np.all(np.diff(f_rc["flow"][..., 0].mean(axis=-2), axis=-1) > -0.2)
