"""Adds optical flow to existing TFRecord shards: ours, DMVR's or the Model Garden's.

    python -m tfrecords_tools.compute_flow --input=GLOB --output=PREFIX \
        --algorithm=tvl1|dis|farneback [--bound=20] [--short_side=N] [--num_workers=N] \
        [--verbose]

Every record (a SequenceExample with one JPEG per frame in `image/encoded`) gets
`FORWARD_FLOW/image/encoded` and `FORWARD_FLOW/flow_bound`; every other feature is kept
and flow already present is replaced. A video of N frames gets N - 1 flow frames, flow
frame t holding the motion from frame t to t + 1 in pixels, as the demo data and the
reader expect (it gives the last frame the last flow frame); video_ssl.data.optical_flow
has the conventions. --short_side shrinks the frames before computing flow; the flow
frames are then that small, and their values in those pixels.

The sorted files matching GLOB are the input shards; input i is written to
`PREFIX-0000i-of-0000N.tfrecord` with its records in the same order. Resumable: each
output shard is written to `NAME.tmp` and renamed when complete; a re-run skips complete
shards and redoes the rest. `PREFIX.flow.json` holds the settings and inputs; a re-run
with others stops with an error rather than mixing two kinds of flow in one dataset.

Failures never stop the run. A record that is not a SequenceExample of frames, has a
frame that cannot be decoded or fewer than two frames is reported with its file, record
index and reason and left out of the output; a file corrupt from some record on (bad
checksum, truncated) ends its shard at that record. All are listed, tab-separated
(input file, record index, reason), in `PREFIX.errors.txt`; a re-run keeps the lines
of the shards it skips.

Exit status: 0 when done; 1 when no record got flow, a worker process died or the
output cannot be written; 2 for bad arguments or input (no file matches, the output
would overwrite an input, other settings than the shards were started with). Fatal
errors are one line `compute_flow: error: ...` (--verbose shows the traceback).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterable, Iterator

import cv2
from tqdm import tqdm

from tfrecords_tools import cli
from tfrecords_tools.cli import ToolError
from video_ssl.data import optical_flow

TOOL = "compute_flow"
# Videos queued per worker: enough to keep workers busy across shard boundaries, few
# enough to bound the memory of frames waiting in this process.
QUEUE_PER_WORKER = 4
MAX_ERRORS_SHOWN = 20


# ---------------------------------------------------------------- worker processes

_VIDEO_FLOW: optical_flow.VideoFlow | None = None


def init_worker(settings: dict) -> None:
    """Prepares a flow process (also videos_to_tfrecords' workers, with --flow):
    settings are VideoFlow's arguments (algorithm, bound, short_side)."""
    global _VIDEO_FLOW
    # One core per process: the processes are the parallelism.
    cv2.setNumThreads(1)
    _VIDEO_FLOW = optical_flow.VideoFlow(**settings)


def flow_task(jpegs: list[bytes]) -> tuple[list[bytes] | None, str | None]:
    """Worker (after init_worker): (flow JPEGs, None), or (None, why not)."""
    try:
        return _VIDEO_FLOW.from_jpegs(jpegs), None
    except optical_flow.FlowError as e:
        return None, str(e)


def _ordered_results(tasks: Iterable[tuple[object, list[bytes] | None]], settings: dict,
                     num_workers: int) -> Iterator[tuple[object, tuple | None]]:
    """(meta, flow_task result) for each (meta, frames) task in order; tasks without
    frames pass through with None. At most QUEUE_PER_WORKER videos per worker wait."""
    if num_workers <= 1:
        init_worker(settings)
        for meta, jpegs in tasks:
            yield meta, None if jpegs is None else flow_task(jpegs)
        return
    # Spawned workers import only OpenCV and this module's light imports; fork is unsafe
    # once TensorFlow's threads run in this process.
    with concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker, initargs=(settings,)) as pool:
        pending = collections.deque()
        try:
            for meta, jpegs in tasks:
                pending.append((meta, None if jpegs is None else pool.submit(flow_task, jpegs)))
                while len(pending) > QUEUE_PER_WORKER * num_workers:
                    meta_done, future = pending.popleft()
                    yield meta_done, future and future.result()
            while pending:
                meta_done, future = pending.popleft()
                yield meta_done, future and future.result()
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()


# ---------------------------------------------------------------- reading and writing

@dataclasses.dataclass(frozen=True)
class Record:
    """A record whose frames were read: its example gets flow when the result comes."""
    shard: int
    index: int
    example: object  # tf.train.SequenceExample


@dataclasses.dataclass(frozen=True)
class Failure:
    """A record left out, and why."""
    shard: int
    index: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ShardEnd:
    shard: int


def read_tasks(files: list[str], shards: list[int]) -> Iterator[tuple[object, list | None]]:
    """(Record, frames), (Failure, None) and (ShardEnd, None) for the given input shards."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from video_ssl.data import schema

    for shard in shards:
        index = 0
        try:
            for serialized in tf.data.TFRecordDataset(files[shard]):
                try:
                    example = tf.train.SequenceExample.FromString(serialized.numpy())
                except DecodeError:
                    yield Failure(shard, index, "not a SequenceExample"), None
                else:
                    frames = encoded_frames(example, schema.FRAMES)
                    if isinstance(frames, str):  # the reason it has none
                        yield Failure(shard, index, _named(example, frames)), None
                    else:
                        yield Record(shard, index, example), frames
                index += 1
        except tf.errors.OpError as e:
            reason = f"corrupt TFRecord ({e.message.splitlines()[0]}); the rest of the file is lost"
            yield Failure(shard, index, reason), None
        yield ShardEnd(shard), None


def encoded_frames(example, key: str) -> list[bytes] | str:
    """The encoded frames of a SequenceExample, or why it has none usable."""
    lists = example.feature_lists.feature_list
    if key not in lists or not lists[key].feature:
        return f"no `{key}` frames (expected a SequenceExample with one JPEG per frame)"
    frames = []
    for t, feature in enumerate(lists[key].feature):
        values = feature.bytes_list.value
        if len(values) != 1:
            return f"`{key}` step {t} holds {len(values)} byte strings; expected 1"
        frames.append(values[0])
    return frames


def _named(example, reason: str) -> str:
    """The reason, after the record's video/filename when it has one."""
    from video_ssl.data import schema
    name = example.context.feature[schema.FILENAME].bytes_list.value \
        if schema.FILENAME in example.context.feature else []
    return f"{name[0].decode('utf-8', 'replace')}: {reason}" if name else reason


def add_flow(example, flows: list[bytes], bound: float) -> bytes:
    """The serialized example with its flow feature list and bound replaced (the one
    writer of flow for both tools: videos_to_tfrecords --flow calls it too)."""
    from video_ssl.data import schema
    example.context.feature[schema.FLOW_BOUND].Clear()
    example.context.feature[schema.FLOW_BOUND].float_list.value.append(bound)
    flow_list = example.feature_lists.feature_list[schema.FLOW]
    flow_list.Clear()
    for jpeg in flows:
        flow_list.feature.add().bytes_list.value.append(jpeg)
    return example.SerializeToString(deterministic=True)


# ---------------------------------------------------------------- the run

@dataclasses.dataclass
class Summary:
    shards_written: int = 0
    shards_done_before: int = 0
    videos: int = 0
    pairs: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    failures_before: int = 0  # listed by earlier runs for the shards they completed

    def lines(self, num_workers: int, errors_path: str) -> list[str]:
        rate = self.pairs / self.seconds if self.seconds else 0.0
        before = f" (and {self.failures_before} in earlier runs)" if self.failures_before else ""
        out = [f"shards: {self.shards_written} written, {self.shards_done_before} already complete",
               f"videos: {self.videos} written, {len(self.failures)} failed{before}",
               f"frame pairs: {self.pairs} in {self.seconds:.1f} s ({rate:.1f} pairs/s with "
               f"{num_workers} worker{'s' * (num_workers != 1)})"]
        out += [f"  {path} record {index}: {reason}"
                for path, index, reason in self.failures[:MAX_ERRORS_SHOWN]]
        if len(self.failures) > MAX_ERRORS_SHOWN:
            out.append(f"  ... {len(self.failures) - MAX_ERRORS_SHOWN} more")
        if self.failures or self.failures_before:
            out.append(f"failures listed in {errors_path}")
        return out


class _ShardWriter:
    """One output shard, under a temporary name until `finish` renames it."""

    def __init__(self, path: str):
        import tensorflow as tf
        self.path = path
        self.writer = tf.io.TFRecordWriter(path + ".tmp")
        self.videos, self.pairs, self.failures = 0, 0, []

    def write(self, serialized: bytes, pairs: int) -> None:
        self.writer.write(serialized)
        self.videos += 1
        self.pairs += pairs

    def finish(self) -> None:
        self.writer.close()
        os.replace(self.path + ".tmp", self.path)


def check_manifest(path: Path, manifest: dict) -> None:
    """Writes the run's settings, or checks them against an earlier run's."""
    if not path.exists():
        _write_atomically(path, json.dumps(manifest, indent=1) + "\n")
        return
    try:
        earlier = json.loads(path.read_text())
    except ValueError:
        raise ToolError(f"{path}: not JSON; delete it and the shards to start over") from None
    changed = [k for k in manifest if earlier.get(k) != manifest[k]]
    if changed:
        was = ", ".join(f"{len(earlier.get(k) or [])} other input files" if k == "inputs"
                        else f"{k}={earlier.get(k)!r}" for k in changed)
        raise ToolError(f"{path}: these shards were started with {was}; use another "
                            "--output, or delete them to start over")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_errors(path: Path, keep_inputs: set[str]) -> list[tuple[str, int, str]]:
    """Earlier runs' failures in shards that stay as they were."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[0] in keep_inputs and parts[1].isdigit():
            rows.append((parts[0], int(parts[1]), parts[2]))
    return rows


def _write_errors(path: Path, rows: list[tuple[str, int, str]]) -> None:
    if rows or path.exists():
        _write_atomically(path, "".join(cli.printable(f"{p}\t{i}\t{r}\n") for p, i, r in rows))


def _shards(pattern: str, prefix: str, settings: dict) -> tuple[list[str], list[str]]:
    """(input files, output names), checked against each other and earlier runs."""
    import tensorflow as tf
    from video_ssl.data import schema

    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ToolError(f"--input {pattern}: no files match")
    outputs = schema.shard_names(prefix, len(files))
    clash = set(map(os.path.abspath, files)) & set(map(os.path.abspath, outputs))
    if clash:
        raise ToolError(f"--output {prefix}: would overwrite the input {sorted(clash)[0]}")
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    check_manifest(Path(prefix + ".flow.json"),
                   {**settings, "inputs": [os.path.abspath(f) for f in files]})
    return files, outputs


def flow_settings(algorithm: str, bound: float | None = None, short_side: int = 0) -> dict:
    """init_worker's settings (recorded in PREFIX.flow.json); bound None: the schema's
    default."""
    from video_ssl.data import schema  # here, not at import: spawned workers import this module
    return dict(algorithm=algorithm, short_side=int(short_side),
                bound=float(schema.DEFAULT_FLOW_BOUND if bound is None else bound))


def run(pattern: str, prefix: str, *, algorithm: str, bound: float | None = None,
        short_side: int = 0, num_workers: int = 1) -> Summary:
    """Writes the output shards that are not complete yet; returns what happened.
    bound None: the schema's default."""
    settings = flow_settings(algorithm, bound, short_side)
    files, outputs = _shards(pattern, prefix, settings)
    complete = [Path(name).exists() for name in outputs]
    todo = [i for i, done in enumerate(complete) if not done]
    errors_path = Path(prefix + ".errors.txt")
    failures = _read_errors(errors_path, {f for f, done in zip(files, complete) if done})
    summary = Summary(shards_done_before=sum(complete), failures_before=len(failures))

    start = time.perf_counter()
    # One line per shard (tqdm.write) always; the live bar only on a terminal.
    bar = tqdm(unit=" pairs", file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True,
               bar_format="{desc}{n_fmt} frame pairs [{elapsed}, {rate_noinv_fmt}{postfix}]")
    shard = None
    try:
        for meta, result in _ordered_results(read_tasks(files, todo), settings, num_workers):
            position = f"shard {todo.index(meta.shard) + 1}/{len(todo)}"
            if shard is None:
                bar.set_description(position)
                shard = _ShardWriter(outputs[meta.shard])
            if isinstance(meta, Record) and result[0] is None:
                meta = Failure(meta.shard, meta.index, _named(meta.example, result[1]))
            if isinstance(meta, Failure):
                shard.failures.append((files[meta.shard], meta.index, meta.reason))
                tqdm.write(cli.printable(f"skipped {files[meta.shard]} record {meta.index}: "
                                         f"{meta.reason}"), file=sys.stderr)
            elif isinstance(meta, Record):
                shard.write(add_flow(meta.example, result[0], settings["bound"]), len(result[0]))
                bar.set_postfix_str(f"{summary.videos + shard.videos} videos", refresh=False)
                bar.update(len(result[0]))
            else:  # ShardEnd: its failures are listed before the shard counts as complete
                failures += shard.failures
                _write_errors(errors_path, failures)
                shard.finish()
                summary.shards_written += 1
                summary.videos += shard.videos
                summary.pairs += shard.pairs
                summary.failures += shard.failures
                rate = summary.pairs / (time.perf_counter() - start)
                tqdm.write(f"{position} {shard.path}: {shard.videos} videos, {shard.pairs} pairs, "
                           f"{len(shard.failures)} failed; {rate:.1f} pairs/s overall",
                           file=sys.stderr)
                shard = None
    except BrokenProcessPool:
        raise ToolError("a worker process died (out of memory?); re-run to resume",
                        exit_code=1) from None
    finally:
        bar.close()
        if shard is not None:
            shard.writer.close()  # left under its temporary name: redone on a re-run
    summary.seconds = time.perf_counter() - start
    return summary


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parse_args(argv):
    p = cli.ArgumentParser(TOOL, description="Add optical flow (FORWARD_FLOW/image/encoded) to "
                           "TFRecord shards of videos.")
    p.add_argument("--input", required=True, help="glob of TFRecord shards")
    p.add_argument("--output", required=True, help="shard prefix: PREFIX-00000-of-000NN.tfrecord")
    p.add_argument("--algorithm", required=True, choices=optical_flow.ALGORITHMS,
                   help="tvl1 (CoCLR's, slow), dis (DIS medium) or farneback")
    p.add_argument("--bound", type=float, default=None,
                   help="clip flow to +-this many pixels (default: the schema's "
                        "DEFAULT_FLOW_BOUND, 20 as CoCLR)")
    p.add_argument("--short_side", type=int, default=0,
                   help="shrink frames to this shorter side before computing flow "
                        "(default 0: the stored size)")
    p.add_argument("--num_workers", type=int, default=0,
                   help="flow processes (default: one per available core)")
    args = p.parse_args(argv)
    if args.bound is not None and not args.bound > 0:
        p.error(f"--bound must be positive, got {args.bound}")
    if args.short_side < 0 or args.num_workers < 0:
        p.error("--short_side and --num_workers must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return cli.run(TOOL, _run, _parse_args(argv))
    except KeyboardInterrupt:
        print(f"{TOOL}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _run(args) -> int:
    num_workers = args.num_workers or available_cores()
    summary = run(args.input, args.output, algorithm=args.algorithm, bound=args.bound,
                  short_side=args.short_side, num_workers=num_workers)
    print("\n".join(summary.lines(num_workers, args.output + ".errors.txt")))
    if summary.failures and not summary.videos and not summary.shards_done_before:
        print(f"{TOOL}: error: none of the videos in {args.input} got flow", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
