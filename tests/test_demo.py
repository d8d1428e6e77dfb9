"""The embedded demo dataset: records, determinism, caching, exact flow, class cues."""
import glob

import cv2
import numpy as np
import pytest
import tensorflow as tf

from video_ssl.data import demo, demo_render, flow as flow_lib, schema

TINY = dict(num_train=16, num_test=8, num_frames=20, videos_per_shard=6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return root, demo.build(root, num_workers=1, **TINY)


def _records(pattern):
    return [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)))]


def _shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.tfrecord"))}


def test_records_parse_with_schema(tiny):
    root, patterns = tiny
    assert patterns["labels"] == list(demo_render.LABELS) and len(demo_render.LABELS) >= 8
    assert len(glob.glob(patterns["train"])) == 3 and len(glob.glob(patterns["test"])) == 2
    for split, count in (("train", 16), ("test", 8)):
        records = _records(patterns[split])
        assert len(records) == count
        for index, record in enumerate(records):
            ex = schema.parse_sequence_example(record, ("rgb", "audio", "flow"))
            assert int(ex["label"]) == index % 8
            assert ex["label_text"].numpy().decode() == demo_render.LABELS[index % 8]
            assert ex["frames"].shape == (20,) and ex["flow"].shape == (19,)
            assert float(ex["frame_rate"]) == demo_render.FPS
            assert ex["waveform"].shape == (2 * demo_render.SAMPLE_RATE,)  # 20 frames at 10 fps
            assert float(ex["sample_rate"]) == demo_render.SAMPLE_RATE
            assert float(ex["flow_bound"]) == demo.FLOW_BOUND
            assert np.abs(ex["waveform"].numpy()).max() <= 1.0
    rgb = tf.io.decode_jpeg(ex["frames"][0])
    assert rgb.shape == (demo_render.HEIGHT, demo_render.WIDTH, 3) and min(rgb.shape[:2]) >= 64
    assert tf.io.decode_jpeg(ex["flow"][0]).shape == (demo_render.HEIGHT, demo_render.WIDTH, 3)
    assert (root / "labels.txt").read_text().split() == list(demo_render.LABELS)


def test_same_seed_is_byte_identical_whatever_the_worker_count(tiny, tmp_path):
    root, _ = tiny
    demo.build(tmp_path, num_workers=2, **TINY)
    assert _shard_bytes(tmp_path) == _shard_bytes(root)
    # Canonical bytes (maps sorted by key), so other processes, whose string hashing
    # differs, write the same bytes too.
    for record in _records(str(root / "test-*.tfrecord")):
        parsed = tf.train.SequenceExample.FromString(record)
        assert parsed.SerializeToString(deterministic=True) == record
    other = tmp_path / "other_seed"
    demo.build(other, num_workers=1, **{**TINY, "num_train": 2, "num_test": 1}, seed=1)
    first = _records(str(other / "train-*.tfrecord"))[0]
    assert first != _records(str(root / "train-*.tfrecord"))[0]


def test_cache_builds_once_and_rebuilds_a_half_written_build(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEO_SSL_DATA", str(tmp_path))
    builds = []
    real_build = demo.build
    monkeypatch.setattr(demo, "build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    small = dict(TINY, num_train=8, num_test=2, num_frames=4)

    patterns = demo.ensure_demo_dataset(num_workers=1, **small)
    assert patterns["train"].startswith(str(demo.demo_dir())) and str(tmp_path) in patterns["train"]
    complete = _shard_bytes(demo.demo_dir())
    assert demo.ensure_demo_dataset(num_workers=1, **small) == patterns
    assert len(builds) == 1

    # Interrupted build: marker gone, a shard cut short, a temporary file left over.
    (demo.demo_dir() / demo.MARKER).unlink()
    shard = sorted(demo.demo_dir().glob("train-*.tfrecord"))[-1]
    shard.write_bytes(shard.read_bytes()[:100])
    (demo.demo_dir() / (shard.name + ".tmp")).write_bytes(b"partial")
    demo.ensure_demo_dataset(num_workers=1, **small)
    assert len(builds) == 2
    assert _shard_bytes(demo.demo_dir()) == complete
    assert not list(demo.demo_dir().glob("*.tmp"))

    # A build with another spec is not mistaken for the one asked for.
    demo.ensure_demo_dataset(num_workers=1, **dict(small, num_frames=5))
    assert len(builds) == 3


def test_stored_flow_is_the_exact_motion(tmp_path):
    video = demo.demo_video("train", 3, num_frames=30)  # square bouncing under the camera
    ex = schema.parse_sequence_example(demo.make_record("train", 3, num_frames=30), ("rgb", "flow"))
    jpegs = tf.map_fn(tf.io.decode_jpeg, ex["flow"], fn_output_signature=tf.uint8)
    stored = flow_lib.dequantize_flow(jpegs, ex["flow_bound"]).numpy()
    assert np.abs(video.flow).max() < demo.FLOW_BOUND
    step = 2 * demo.FLOW_BOUND / 255  # one 8-bit level; JPEG adds about one more
    assert np.abs(stored - video.flow).mean() < 2 * step
    inside = video.actor_mask[:-1]
    # JPEG (4:2:0 chroma) blurs the flow edge between actor and background: compare
    # the actor's core.
    core = [cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) for m in inside]
    per_frame = [(stored[t][core[t]].mean(0), video.flow[t][core[t]].mean(0)) for t in range(29)]
    np.testing.assert_allclose(*np.array(per_frame).transpose(1, 0, 2), atol=3 * step)

    # The ground truth explains the frames: frame t+1 sampled at x + flow(x) gives
    # back frame t, inside the actor (away from its edge) and on the background.
    frames = video.frames.astype(np.float32)
    ys, xs = np.mgrid[0:demo_render.HEIGHT, 0:demo_render.WIDTH].astype(np.float32)
    with_flow, without = [], []
    for t in range(29):
        core = cv2.erode(inside[t].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        warped = cv2.remap(frames[t + 1], xs + video.flow[t, ..., 0], ys + video.flow[t, ..., 1],
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        with_flow.append(np.abs(warped - frames[t])[core].mean())
        without.append(np.abs(frames[t + 1] - frames[t])[core].mean())
    assert np.mean(with_flow) < 0.25 * np.mean(without)


def _actor_track(video):
    """Per-frame actor centroid (x, y) and camera-relative actor velocity."""
    ys, xs = np.mgrid[0:demo_render.HEIGHT, 0:demo_render.WIDTH]
    centroid = np.array([(xs[m].mean(), ys[m].mean()) for m in video.actor_mask])
    velocity = np.array([f[m].mean(0) - np.median(f[~m], axis=0)
                         for f, m in zip(video.flow, video.actor_mask[:-1])])
    return centroid, velocity


def _horizontal_acceleration(velocity):
    return np.median(np.abs(np.diff(velocity[:, 0])))


def _high_band_fraction(audio):
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / demo_render.SAMPLE_RATE)
    return power[freqs > 1000].sum() / power.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_classes_differ_in_their_intended_cue(seed):
    def video(class_id):
        return demo_render.generate_video(class_id, np.random.default_rng(seed), num_frames=100)

    bounce_hum, bounce_beep, orbit_hum, square_hum = video(0), video(1), video(2), video(3)

    # Sound only: identical pictures, a low hum against high beeps.
    np.testing.assert_array_equal(bounce_hum.frames, bounce_beep.frames)
    np.testing.assert_array_equal(bounce_hum.flow, bounce_beep.flow)
    assert (_high_band_fraction(bounce_hum.audio) < 0.2
            < 0.5 < _high_band_fraction(bounce_beep.audio))

    # Appearance only: same sound and trajectory, another shape.
    np.testing.assert_array_equal(bounce_hum.audio, square_hum.audio)
    assert not np.array_equal(bounce_hum.actor_mask, square_hum.actor_mask)
    np.testing.assert_allclose(_actor_track(bounce_hum)[0], _actor_track(square_hum)[0], atol=1.0)

    # Motion only: same sound and scene; between hits a bounce keeps its horizontal
    # speed (gravity is vertical), an orbit's keeps changing.
    np.testing.assert_array_equal(bounce_hum.audio, orbit_hum.audio)
    actors = (bounce_hum.actor_mask[0] | orbit_hum.actor_mask[0]).astype(np.uint8)
    background = ~cv2.dilate(actors, np.ones((3, 3), np.uint8)).astype(bool)  # without edges
    np.testing.assert_array_equal(bounce_hum.frames[0][background], orbit_hum.frames[0][background])
    assert _horizontal_acceleration(_actor_track(bounce_hum)[1]) < 0.01
    assert _horizontal_acceleration(_actor_track(orbit_hum)[1]) > 0.03


def test_scene_marks_the_cuts():
    """`scene` numbers the nuisance scenes (2-3.5 s each); the background changes at
    its cuts far more than between any two frames of one scene."""
    for index in range(3):
        video = demo.demo_video("test", index)
        assert video.scene[0] == 0 and set(np.diff(video.scene)) == {0, 1}
        cuts = np.flatnonzero(np.diff(video.scene))  # the frame before each cut
        lengths = np.diff(np.r_[0, cuts + 1])
        assert np.all((lengths >= 20) & (lengths <= 35))
        change = np.abs(np.diff(video.frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        assert change[cuts].min() > 2 * np.delete(change, cuts).max()


def test_bad_class_is_rejected():
    with pytest.raises(ValueError, match="class_id 8 out of range"):
        demo_render.generate_video(8, np.random.default_rng(0))


def test_progress_off_a_terminal_is_plain_lines(tmp_path, capsys):
    """Into a file (here: captured), no live bar whose carriage returns pile up."""
    demo.build(tmp_path, num_workers=1, progress=True,
               **{**TINY, "num_train": 2, "num_test": 1})
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [f"demo dataset: {n}/3 videos" for n in (1, 2, 3)]
