"""Video files -> TFRecord shards of SequenceExamples (the DESIGN.md schema).

    python -m tfrecords_tools.videos_to_tfrecords --input=DIR_OR_CSV --output=PREFIX \
        [--fps=25] [--short_side=256] [--jpeg_quality=90] [--sample_rate=48000] \
        [--no_audio] [--num_shards=N] [--num_workers=W]

Input: a folder with one subfolder per class, or a CSV `path,label[,start,end]`
(header optional; label a class name, an integer index or empty; start/end in
seconds cut a segment; relative paths are relative to the CSV). Class names are
kept in `PREFIX.labels.txt` (one per line, in index order) and reused on re-runs;
pass the training split's map with --label_map so that other splits share indices.

Resumable: video i of the sorted input list goes to shard i % num_shards; each shard
is written to `NAME.tmp` and renamed when complete; on a re-run complete shards are
skipped and leftover temporary files are redone. Unreadable videos are logged and
skipped; the summary lists them, also in `PREFIX.errors.txt`.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import math
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from video_ssl.data import video_io

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .flv .wmv .3gp .ogv .ts .gif".split())
# With no --num_shards, aim at about this many videos per shard.
VIDEOS_PER_SHARD = 100


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One input video (or segment of one); `name` is what goes in `video/filename`."""
    name: str
    path: str
    label: str | int | None = None  # class name, index, or unlabeled
    start: float = 0.0
    end: float | None = None


def list_folder(root: Path) -> list[VideoEntry]:
    """Videos under `root/<class name>/` (recursively), labelled by their class folder."""
    entries = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
                entries.append(VideoEntry(path.relative_to(root).as_posix(), str(path),
                                          class_dir.name))
    return entries


def list_csv(csv_path: Path) -> list[VideoEntry]:
    """Rows `path,label[,start,end]` of a CSV; a first row starting with `path` is a header."""
    entries = []
    with open(csv_path, newline="") as f:
        for line, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or (line == 1 and row[0].lower() == "path"):
                continue
            if len(row) > 4:
                raise ValueError(f"{csv_path}:{line}: expected path,label[,start,end], got {row}")
            path, label, start, end = (row + ["", "", ""])[:4]
            try:
                start_s = float(start) if start else 0.0
                end_s = float(end) if end else None
            except ValueError:
                start_s = -1.0
            if start_s < 0 or (end_s is not None and end_s <= start_s):
                raise ValueError(f"{csv_path}:{line}: expected seconds 0 <= start < end, "
                                 f"got start={start!r}, end={end!r}")
            name = path + (f"#t={start_s:g},{end_s:g}" if end_s is not None
                           else f"#t={start_s:g}" if start_s else "")
            full = Path(path) if Path(path).is_absolute() else csv_path.parent / path
            entries.append(VideoEntry(name, str(full), _parse_label(label), start_s, end_s))
    return entries


def _parse_label(text: str) -> str | int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def list_inputs(input_path: str) -> list[VideoEntry]:
    """The sorted input list of a class folder or a CSV; errors if missing or empty."""
    path = Path(input_path)
    if not path.exists():
        raise ValueError(f"--input {input_path}: no such file or folder")
    entries = list_folder(path) if path.is_dir() else list_csv(path)
    if not entries:
        what = ("no videos in class subfolders (expected DIR/<class>/<video>)" if path.is_dir()
                else "no rows (expected path,label[,start,end])")
        raise ValueError(f"--input {input_path}: {what}")
    return sorted(entries, key=lambda e: (e.name, e.path, e.start))


def update_label_map(path: Path, entries: list[VideoEntry]) -> list[str]:
    """Class names in index order: the existing map, then new names sorted; saved back."""
    names = path.read_text().splitlines() if path.exists() else []
    new = sorted({e.label for e in entries if isinstance(e.label, str)} - set(names))
    if new:
        names += new
        path.write_text("".join(n + "\n" for n in names))
    return names


def resolve_label(entry: VideoEntry, names: list[str]) -> tuple[int | None, str | None]:
    """(index, text) of an entry's label; text only when a class name is known."""
    if entry.label is None:
        return None, None
    if isinstance(entry.label, int):
        return entry.label, names[entry.label] if 0 <= entry.label < len(names) else None
    return names.index(entry.label), entry.label


def shard_tasks(entries: list[VideoEntry], num_shards: int) -> list[list[VideoEntry]]:
    """Video i goes to shard i % num_shards: deterministic given the sorted input list."""
    return [entries[s::num_shards] for s in range(num_shards)]


def _decode(entry: VideoEntry, options: dict) -> tuple[VideoEntry, video_io.DecodedVideo | None,
                                                       str | None]:
    """Worker: one video decoded, or the reason it could not be."""
    try:
        video = video_io.decode_video(entry.path, start=entry.start, end=entry.end, **options)
        return entry, video, None
    except Exception as e:  # noqa: BLE001 -- any failure skips this video only, with its reason
        return entry, None, str(e) or type(e).__name__


def _decoded_stream(entries: list[VideoEntry], options: dict, num_workers: int) -> Iterator[tuple]:
    """Decode results in input order, from a pool of `num_workers` processes."""
    work = functools.partial(_decode, options=options)
    if num_workers <= 1:
        yield from map(work, entries)
        return
    # Spawned workers import only video_io (no TensorFlow), and fork is unsafe once
    # TensorFlow's threads run in this process.
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        yield from pool.imap(work, entries)


@dataclasses.dataclass
class Summary:
    """Counts of one run; `failed` holds (video name, reason)."""
    written: int = 0
    done_before: int = 0
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"written: {self.written}", f"skipped (shard already complete): {self.done_before}",
               f"failed: {len(self.failed)}"]
        out += [f"  {name}: {reason}" for name, reason in self.failed]
        return out


def convert(entries: list[VideoEntry], prefix: str, *, num_shards: int, num_workers: int,
            names: list[str], options: dict) -> Summary:
    """Writes the shards that are not complete yet; returns what happened."""
    # TensorFlow is imported here, not at module level, so that spawned workers
    # (which import this module by name when it runs as __main__) stay light.
    import tensorflow as tf
    from video_ssl.data import schema

    summary = Summary()
    todo = []
    for shard_name, shard_entries in zip(schema.shard_names(prefix, num_shards),
                                         shard_tasks(entries, num_shards)):
        if Path(shard_name).exists():
            summary.done_before += len(shard_entries)
            continue
        Path(shard_name + ".tmp").unlink(missing_ok=True)  # left by an interrupted run
        todo.append((shard_name, shard_entries))
    order = [e for _, shard_entries in todo for e in shard_entries]
    with contextlib.closing(_decoded_stream(order, options, num_workers)) as results, \
            tqdm(total=len(order), unit="video", desc="videos", file=sys.stderr) as bar:
        for shard_name, shard_entries in todo:
            with tf.io.TFRecordWriter(shard_name + ".tmp") as writer:
                for _ in shard_entries:
                    entry, video, reason = next(results)
                    bar.update()
                    if video is None:
                        summary.failed.append((entry.name, reason))
                        tqdm.write(f"skipped {entry.name}: {reason}", file=sys.stderr)
                        bar.set_postfix(failed=len(summary.failed))
                        continue
                    label, label_text = resolve_label(entry, names)
                    example = schema.make_sequence_example(
                        video.frames, label=label, label_text=label_text, filename=entry.name,
                        frame_rate=video.frame_rate, height=video.height, width=video.width,
                        waveform=video.waveform, sample_rate=video.sample_rate)
                    writer.write(example.SerializeToString(deterministic=True))
                    summary.written += 1
            os.replace(shard_name + ".tmp", shard_name)
    return summary


def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.videos_to_tfrecords",
        description="Convert a class folder or CSV of videos to TFRecord shards.")
    p.add_argument("--input", required=True,
                   help="folder with one subfolder per class, or a CSV path,label[,start,end]")
    p.add_argument("--output", required=True, help="shard prefix: PREFIX-00000-of-000NN.tfrecord")
    p.add_argument("--label_map", help="class names, one per line (default: PREFIX.labels.txt); "
                   "new classes are appended")
    p.add_argument("--fps", type=float, default=None,
                   help="resample to this frame rate (default: keep the source rate)")
    p.add_argument("--short_side", type=int, default=256,
                   help="resize so the shorter side is this many pixels; 0 keeps the size")
    p.add_argument("--jpeg_quality", type=int, default=video_io.DEFAULT_JPEG_QUALITY,
                   help="JPEG quality 1-100 (default %(default)s)")
    p.add_argument("--sample_rate", type=int, default=48000,
                   help="audio sample rate in Hz (default %(default)s, as BraVe)")
    p.add_argument("--no_audio", action="store_true", help="do not write audio")
    p.add_argument("--num_shards", type=int, default=0,
                   help=f"number of output shards (default: one per {VIDEOS_PER_SHARD} videos)")
    p.add_argument("--num_workers", type=int, default=0,
                   help="decoding processes (default: CPU count, at most one per video)")
    args = p.parse_args(argv)
    if args.fps is not None and args.fps <= 0:
        p.error(f"--fps must be positive, got {args.fps}")
    if not 1 <= args.jpeg_quality <= 100:
        p.error(f"--jpeg_quality must be in 1-100, got {args.jpeg_quality}")
    if args.short_side < 0 or args.num_shards < 0 or args.num_workers < 0 or args.sample_rate <= 0:
        p.error("--short_side, --num_shards, --num_workers must be >= 0 and --sample_rate > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        entries = list_inputs(args.input)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    label_map = Path(args.label_map or args.output + ".labels.txt")
    names = update_label_map(label_map, entries)
    num_shards = args.num_shards or math.ceil(len(entries) / VIDEOS_PER_SHARD)
    num_workers = min(args.num_workers or os.cpu_count() or 1, len(entries))
    options = dict(fps=args.fps, short_side=args.short_side, jpeg_quality=args.jpeg_quality,
                   sample_rate=None if args.no_audio else args.sample_rate)
    summary = convert(entries, args.output, num_shards=num_shards, num_workers=num_workers,
                      names=names, options=options)
    print("\n".join(summary.lines()))
    if summary.failed:
        errors = Path(args.output + ".errors.txt")
        errors.write_text("".join(f"{name}\t{reason}\n" for name, reason in summary.failed))
        print(f"failures listed in {errors}")
    if summary.written == 0 and summary.done_before == 0:
        print(f"error: none of the {len(entries)} videos in {args.input} could be read",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
