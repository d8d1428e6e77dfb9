"""The embedded demo dataset: synthetic videos with labels, audio and exact flow,
as DMVR-style TFRecord shards.

Generated deterministically on first use (`ensure_demo_dataset`) and cached under
`$VIDEO_SSL_DATA/demo-v4` (default `~/.cache/video_ssl/demo-v4`). The videos (classes,
cues, nuisance, exact flow) are `video_ssl.data.demo_render`'s; this module draws each
one's randomness from (seed, split, index), encodes it and writes the shards.

Numbers: 400 train + 100 test videos (balanced, class = index % 8); frames stored as
JPEG quality 90; flow (99 frames per video) stored with a bound of 8 px; shards of 25
videos (16 train, 4 test). About 0.6 MB per video, half of it audio: 290 MB in all.
Building takes ~66 ms of one core per video.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from video_ssl.data import demo_render as render
from video_ssl.data import flow as flow_lib
from video_ssl.data import schema

DEMO_VERSION = 4
JPEG_QUALITY = 90
FLOW_BOUND = 8.0  # px per frame; the renderer keeps every component below 7 px
NUM_TRAIN, NUM_TEST = 400, 100
VIDEOS_PER_SHARD = 25
SPLITS = ("train", "test")
MARKER = "COMPLETE.json"


# ----------------------------------------------------------------------------- records

def demo_video(split: str, index: int, *, seed: int = 0,
               num_frames: int = render.NUM_FRAMES) -> render.DemoVideo:
    """Video `index` of `split` (class = index % 8); its randomness depends only on
    (seed, split, index), so any worker produces the same video."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    return render.generate_video(index % len(render.CLASSES), rng, num_frames=num_frames)


def make_record(split: str, index: int, *, seed: int = 0,
                num_frames: int = render.NUM_FRAMES) -> bytes:
    """The serialized SequenceExample of `demo_video(split, index, ...)`.

    Deterministic serialization orders the proto's maps by key; by default their
    order follows per-process string hashing, so bytes would differ between runs.
    """
    video = demo_video(split, index, seed=seed, num_frames=num_frames)
    frames = [_encode_jpeg(f) for f in video.frames]
    flows = [flow_lib.encode_flow_jpeg(f, FLOW_BOUND) for f in video.flow]
    return schema.make_sequence_example(
        frames, label=video.label, label_text=render.LABELS[video.label],
        filename=f"{split}/{render.LABELS[video.label]}/{index:05d}", frame_rate=render.FPS,
        height=render.HEIGHT, width=render.WIDTH, waveform=video.audio,
        sample_rate=render.SAMPLE_RATE,
        flow_frames=flows, flow_bound=FLOW_BOUND).SerializeToString(deterministic=True)


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"could not JPEG-encode a frame of shape {rgb.shape}")
    return buf.tobytes()


def _make_record_task(task):
    split, index, seed, num_frames = task
    return make_record(split, index, seed=seed, num_frames=num_frames)


def _patterns(root: Path) -> dict:
    return {**{s: str(root / f"{s}-*.tfrecord") for s in SPLITS},
            "labels": list(render.LABELS)}


def _remove_outputs(root: Path) -> None:
    """Deletes what an earlier (maybe interrupted) build wrote, and nothing else."""
    shards = [f"{s}-*-of-*.tfrecord{tmp}" for s in SPLITS for tmp in ("", ".tmp")]
    for pattern in (MARKER, "labels.txt", *shards):
        for path in root.glob(pattern):
            path.unlink()


def build(output_dir, *, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST,
          num_frames: int = render.NUM_FRAMES, seed: int = 0,
          videos_per_shard: int = VIDEOS_PER_SHARD,
          num_workers: int | None = None, progress: bool = False) -> dict:
    """Writes the dataset into `output_dir` and returns its file patterns and labels.

    Shards are written under temporary names and renamed when complete; the marker
    file (`COMPLETE.json`, holding the build's spec) is written last. Output is
    byte-identical for a given spec whatever `num_workers` (default: all CPUs).
    """
    import tensorflow as tf  # TFRecord writing only, in this process

    spec = _spec(num_train, num_test, num_frames, seed, videos_per_shard)
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_outputs(root)
    counts = {"train": num_train, "test": num_test}
    tasks, shards = [], []  # shards: (final name, number of videos)
    for split, count in counts.items():
        num_shards = max(1, -(-count // videos_per_shard))
        for s, name in enumerate(schema.shard_names(str(root / split), num_shards)):
            indices = range(s * count // num_shards, (s + 1) * count // num_shards)
            tasks += [(split, i, seed, num_frames) for i in indices]
            shards.append((name, len(indices)))
    num_workers = max(1, min(num_workers or os.cpu_count() or 1, len(tasks)))
    start = time.time()
    with contextlib.ExitStack() as stack:
        if num_workers > 1:
            # fork: workers inherit the imported modules instead of re-importing TF;
            # they only run numpy, OpenCV and protobuf.
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(num_workers))
            records = pool.imap(_make_record_task, tasks, chunksize=2)
        else:
            records = map(_make_record_task, tasks)
        # A live bar on a terminal; into a file, where its carriage returns pile up on
        # one line, a plain line every tenth of the videos.
        live = progress and sys.stderr.isatty()
        bar = stack.enter_context(tqdm(total=len(tasks), unit="video", desc="demo dataset",
                                       disable=not live))
        every, done = max(1, len(tasks) // 10), 0
        for name, count in shards:
            with tf.io.TFRecordWriter(name + ".tmp") as writer:
                for _ in range(count):
                    writer.write(next(records))
                    bar.update()
                    done += 1
                    if progress and not live and (done % every == 0 or done == len(tasks)):
                        print(f"demo dataset: {done}/{len(tasks)} videos", file=sys.stderr,
                              flush=True)
            os.replace(name + ".tmp", name)
    (root / "labels.txt").write_text("".join(f"{label}\n" for label in render.LABELS))
    info = {**spec, "labels": list(render.LABELS),
            "build_seconds": round(time.time() - start, 1)}
    (root / (MARKER + ".tmp")).write_text(json.dumps(info, indent=1))
    os.replace(root / (MARKER + ".tmp"), root / MARKER)
    return _patterns(root)


def _spec(num_train=NUM_TRAIN, num_test=NUM_TEST, num_frames=render.NUM_FRAMES, seed=0,
          videos_per_shard=VIDEOS_PER_SHARD) -> dict:
    return {"version": DEMO_VERSION, "num_train": num_train, "num_test": num_test,
            "num_frames": num_frames, "seed": seed, "videos_per_shard": videos_per_shard}


def demo_dir() -> Path:
    """Where the demo dataset lives: `$VIDEO_SSL_DATA/demo-v<DEMO_VERSION>` (default
    ~/.cache/video_ssl)."""
    base = os.environ.get("VIDEO_SSL_DATA") or "~/.cache/video_ssl"
    return Path(base).expanduser() / f"demo-v{DEMO_VERSION}"


def is_complete(root, **spec) -> bool:
    """True when `root` holds a finished build with this spec (build's defaults)."""
    try:
        info = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(info.get(k) == v for k, v in _spec(**spec).items())


def ensure_demo_dataset(root=None, *, num_workers: int | None = None, progress: bool = False,
                        **spec) -> dict:
    """Builds the demo dataset on first use (cached) and returns its file patterns.

    Returns {"train": ".../train-*.tfrecord", "test": ".../test-*.tfrecord",
    "labels": [class names]}. `spec` overrides build's counts (num_train, num_test,
    num_frames, seed, videos_per_shard); a build with another spec is replaced. A
    file lock makes concurrent callers build it once.
    """
    root = Path(root) if root is not None else demo_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_complete(root, **spec):
            build(root, num_workers=num_workers, progress=progress, **spec)
    return _patterns(root)
