"""Video files -> TFRecord shards of SequenceExamples (the DESIGN.md schema).

    python -m tfrecords_tools.videos_to_tfrecords --input=DIR_OR_CSV --output=PREFIX \
        [--fps=25] [--short_side=256] [--jpeg_quality=90] [--sample_rate=48000] \
        [--no_audio] [--flow=tvl1|dis|farneback [--flow_bound=20] [--flow_short_side=N]] \
        [--num_shards=N] [--num_workers=W] [--verbose]

Input: a folder with one subfolder per class, or a CSV `path,label[,start,end[,source_id]]`
(UTF-8; label a class name, an integer index or empty; start/end in seconds cut a
segment; relative paths are relative to the CSV; a header row starting with `path` is
optional, and one naming only these columns gives their order, e.g.
`path,label,source_id`). Class names are kept in `PREFIX.labels.txt` (one per
line, in index order) and reused on re-runs; pass the training split's map with
--label_map so that other splits share indices.

Every record gets `video/source_id`, the video its clip was cut from (clips sharing it
are clips of one video: CoCLR's same-video positives): the CSV's source_id when given,
else the file's name without the extension (folder mode: below the input folder, e.g.
`class/clip`; the CSV: its path as written), so that segments of one file share it.

Folder mode tries every file in the class folders as a video (FFmpeg opens far more
containers than any list of extensions) except hidden files and extensions of other
kinds of file (NOT_VIDEO_EXTENSIONS); those, and files outside a class folder, are
listed as ignored. A file name that is not valid UTF-8 is stored in `video/filename`
with those bytes written as \\xNN (and a warning).

--flow adds optical flow while converting (FORWARD_FLOW/image/encoded and flow_bound;
N frames give N - 1 flow frames; --flow_bound and --flow_short_side are compute_flow's
--bound and --short_side; the settings go to PREFIX.flow.json as compute_flow's do,
and a re-run with others is refused). The workers compute it from the video's stored JPEG frames,
not from the decoder's pixels before JPEG, with compute_flow's worker code and writer,
so a record is byte for byte what compute_flow makes of the shard converted without
--flow; decoding the JPEGs again costs 0.1-0.3 ms a frame (benchmarks/RESULTS.md),
~5% of DIS's flow at 128^2 and nothing next to TV-L1's. A video whose flow fails is
reported (`failed`) and skipped like one that cannot be decoded.

As a library (prepare_dataset's ESC-50), `options["audio_only"]` writes audio files as
records holding the waveform alone, no frames.

Resumable: video i of the sorted input list goes to shard i % num_shards; each shard
is written to `NAME.tmp` and renamed when complete; on a re-run complete shards are
skipped and leftover temporary files are redone. A run beside shards of another
--num_shards is refused (PREFIX-* would read both sets), and so is one beside complete
shards holding other source ids (e.g. written before `video/source_id` existed, or
before a CSV gave a source_id column): the shards would mix two groupings.

Videos that cannot be decoded are reported and skipped. `PREFIX.errors.txt` lists,
one per line, `NAME<TAB>KIND<TAB>SHARD<TAB>REASON` with KIND `failed` (not
converted), `warning` (converted, e.g. a truncated file that decodes to less than its
header declares) or `ignored` (not tried, SHARD `-`). It covers every run of the
output: each shard's lines are saved (atomically) before the shard is renamed, so a
re-run keeps those of complete shards and redoes the rest; it is removed when empty.

Exit status: 0 when anything was converted; 1 when no video could be read or the
output cannot be written; 2 for bad arguments or input. Fatal errors are one line
`videos_to_tfrecords: error: ...` (--verbose shows the traceback).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import multiprocessing
import os
import posixpath
import re
import sys
from pathlib import Path
from typing import Iterator

from tfrecords_tools import cli
from video_ssl.console import Progress
from tfrecords_tools import compute_flow
from tfrecords_tools.cli import ToolError
from video_ssl.data import optical_flow
from video_ssl.data import video_files
from video_ssl.data.video_list import VideoEntry, list_inputs

TOOL = "videos_to_tfrecords"
# With no --num_shards, aim at about this many videos per shard.
VIDEOS_PER_SHARD = 100


def source_id(entry: VideoEntry) -> str:
    """The `video/source_id` written for an entry: its own, else its file's name without
    the segment (`#t=...`) and the extension, so segments of one file share it."""
    return entry.source_id or posixpath.splitext(re.sub(r"#t=[^#/]*$", "", entry.name))[0]


@dataclasses.dataclass(frozen=True)
class ReportLine:
    """One line of PREFIX.errors.txt."""
    name: str
    kind: str  # failed | warning | ignored
    shard: str  # the shard's file name; "-" for ignored files
    reason: str

    KINDS = ("failed", "warning", "ignored")

    def format(self) -> str:
        fields = (self.name, self.kind, self.shard, " ".join(self.reason.split()))
        return "\t".join(f.replace("\t", "\\t").replace("\n", "\\n") for f in fields) + "\n"

    @classmethod
    def parse(cls, line: str) -> ReportLine | None:
        fields = line.rstrip("\n").split("\t")
        return cls(*fields) if len(fields) == 4 and fields[1] in cls.KINDS else None


def update_label_map(path: Path, entries: list[VideoEntry]) -> list[str]:
    """Class names in index order: the existing map, then new names sorted; saved back."""
    try:
        names = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    except UnicodeDecodeError:
        raise ToolError(f"{path}: label map is not UTF-8 text (expected one class name "
                        "per line)") from None
    new = sorted({e.label for e in entries if isinstance(e.label, str)} - set(names))
    if new:
        names += new
        path.write_text("".join(n + "\n" for n in names), encoding="utf-8")
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


def make_output_folder(prefix: str) -> None:
    """The folder of PREFIX, created if needed; an error if it cannot be written."""
    if cli.printable(prefix) != prefix:
        raise ToolError(f"--output {cli.printable(prefix)}: not valid UTF-8 (TensorFlow "
                        "opens only UTF-8 file names)")
    folder = Path(prefix).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ToolError(f"--output {prefix}: cannot create the folder {folder}: "
                        f"{e.strerror or e}", exit_code=1) from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ToolError(f"--output {prefix}: the folder {folder} is not writable", exit_code=1)


def check_shard_count(prefix: str, num_shards: int) -> None:
    """Refuses to write beside shards (complete or temporary) of another shard count:
    PREFIX-* would then read some videos twice."""
    folder, base = os.path.split(prefix)
    shard = re.compile(re.escape(base) + r"-\d{5,}-of-(\d{5,})\.tfrecord(\.tmp)?")
    others = sorted(n for n in os.listdir(folder or ".")
                    if (m := shard.fullmatch(n)) and int(m[1]) != num_shards)
    if others:
        count = int(shard.fullmatch(others[0])[1])
        more = f" and {len(others) - 1} more files" if len(others) > 1 else ""
        raise ToolError(
            f"--output {prefix}: {os.path.join(folder, others[0])}{more} belong to an earlier "
            f"run with --num_shards={count}, not {num_shards}; rerun with "
            f"--num_shards={count} to resume it, or delete them to start over")


def check_source_ids(prefix: str, entries: list[VideoEntry], num_shards: int) -> None:
    """Refuses to resume beside complete shards whose records hold other source ids than
    this run writes (written before `video/source_id` existed, or with another CSV
    source_id column): the shards would mix two groupings of clips into videos. Reads
    the first record of each complete shard."""
    from video_ssl.data import schema

    for shard_name, shard_entries in zip(schema.shard_names(prefix, num_shards),
                                         shard_tasks(entries, num_shards)):
        context = _first_context(shard_name) if Path(shard_name).exists() else None
        if context is None:
            continue
        name, stored = (context[key].bytes_list.value[0].decode("utf-8", "replace")
                        if key in context else "" for key in (schema.FILENAME, schema.SOURCE_ID))
        expected = next((source_id(e) for e in shard_entries if e.name == name), None)
        if expected is not None and stored != expected:
            held = f"{schema.SOURCE_ID} {stored!r}" if stored else (
                f"no {schema.SOURCE_ID} (written before the converter wrote it)")
            raise ToolError(f"{shard_name}: its video {name} has {held}, this run writes "
                            f"{expected!r}; resuming would mix two groupings of clips into "
                            f"videos: delete {prefix}-*.tfrecord* to convert again")


def _first_context(path: str):
    """The context features of a shard's first record; None when it has no record (all
    its videos failed) or cannot be read (the reader names a damaged shard when read)."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        for record in tf.data.TFRecordDataset(path).take(1).as_numpy_iterator():
            return tf.train.SequenceExample.FromString(record).context.feature
    except (tf.errors.OpError, DecodeError):
        pass
    return None


class Report:
    """PREFIX.errors.txt across runs: the ignored files of this listing, then each
    shard's lines. Lines of complete shards are kept from the file; a shard being
    (re)written gets its lines saved before the shard is renamed, so a kill in between
    leaves lines of an incomplete shard, which the next run drops and redoes."""

    def __init__(self, path: Path, ignored: list[ReportLine], complete_shards: set[str]):
        self.path, self.ignored, self.shards = path, ignored, {}
        if path.exists():
            for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = ReportLine.parse(text)
                if line and line.shard in complete_shards:
                    self.shards.setdefault(line.shard, []).append(line)

    def lines(self) -> list[ReportLine]:
        return self.ignored + [line for s in sorted(self.shards) for line in self.shards[s]]

    def set_shard(self, shard: str, lines: list[ReportLine]) -> None:
        self.shards[shard] = lines
        self.write()

    def write(self) -> None:
        lines = self.lines()
        if not lines:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line.format() for line in lines), encoding="utf-8")
        os.replace(tmp, self.path)

    def counts(self) -> str:
        kinds = [line.kind for line in self.lines()]
        return f"{kinds.count('failed')} failed, {kinds.count('warning')} warnings, " \
               f"{kinds.count('ignored')} ignored"


def _init_worker(flow: dict | None) -> None:
    if flow:
        compute_flow.init_worker(flow)  # one OpenCV thread per process


def _decode(entry: VideoEntry, options: dict, flow: dict | None
            ) -> tuple[VideoEntry, video_files.DecodedVideo | None, list[bytes] | None, str | None]:
    """Worker: (entry, video, flow JPEGs or None, None), or (entry, None, None, the reason
    it could not be converted)."""
    options = dict(options)
    decode = _decode_audio if options.pop("audio_only", False) else video_files.decode_video
    try:
        video = decode(entry.path, start=entry.start, end=entry.end, **options)
    except Exception as e:  # noqa: BLE001 -- any failure skips this video only, with its reason
        return entry, None, None, cli.printable(str(e) or type(e).__name__)
    if not flow:
        return entry, video, None, None
    flows, why = compute_flow.flow_task(video.frames)
    if flows is None:
        return entry, None, None, cli.printable(f"optical flow ({flow['algorithm']}): {why}")
    return entry, video, flows, None


def _decode_audio(path: str, *, sample_rate: int | None, start: float = 0.0,
                  end: float | None = None, **_) -> video_files.DecodedVideo:
    """options["audio_only"] (prepare_dataset's ESC-50): the waveform of an audio file, or
    of its [start, end) segment, as a record without frames."""
    waveform = (video_files.read_audio(path, sample_rate=sample_rate, start=start, end=end)
                if sample_rate else None)
    if waveform is None or not waveform.size:
        raise video_files.VideoDecodeError(f"{path}: no audio decoded")
    return video_files.DecodedVideo(frames=[], frame_rate=None, height=None, width=None,
                                 waveform=waveform, sample_rate=float(sample_rate))


def _decoded_stream(entries: list[VideoEntry], options: dict, num_workers: int,
                    flow: dict | None = None) -> Iterator[tuple]:
    """Decode (and flow) results in input order, from a pool of `num_workers` processes."""
    work = functools.partial(_decode, options=options, flow=flow)
    if num_workers <= 1:
        _init_worker(flow)
        yield from map(work, entries)
        return
    # Spawned workers import only video_files and OpenCV (no TensorFlow), and fork is unsafe
    # once TensorFlow's threads run in this process.
    with multiprocessing.get_context("spawn").Pool(num_workers, initializer=_init_worker,
                                                   initargs=(flow,)) as pool:
        yield from pool.imap(work, entries)


@dataclasses.dataclass
class Summary:
    """What one run did; `failed` and `warned` hold its report lines."""
    written: int = 0
    done_before: int = 0
    failed: list[ReportLine] = dataclasses.field(default_factory=list)
    warned: list[ReportLine] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"written: {self.written}", f"skipped (shard already complete): {self.done_before}",
               f"failed: {len(self.failed)}"]
        out += [f"  {line.name}: {line.reason}" for line in self.failed]
        out += [f"warnings: {len(self.warned)}"]
        out += [f"  {line.name}: {line.reason}" for line in self.warned]
        return out


def convert(entries: list[VideoEntry], prefix: str, *, ignored: list[ReportLine],
            num_shards: int, num_workers: int, names: list[str],
            options: dict, flow: dict | None = None) -> tuple[Summary, Report]:
    """Writes the shards that are not complete yet; returns what happened and the report.
    flow: compute_flow.flow_settings to add optical flow, or None."""
    # TensorFlow is imported here, not at module level, so that spawned workers
    # (which import this module by name when it runs as __main__) stay light.
    import tensorflow as tf
    from video_ssl.data import schema

    summary = Summary()
    todo, complete = [], set()
    for shard_name, shard_entries in zip(schema.shard_names(prefix, num_shards),
                                         shard_tasks(entries, num_shards)):
        if Path(shard_name).exists():
            summary.done_before += len(shard_entries)
            complete.add(os.path.basename(shard_name))
            continue
        Path(shard_name + ".tmp").unlink(missing_ok=True)  # left by an interrupted run
        todo.append((shard_name, shard_entries))
    report = Report(Path(prefix + ".errors.txt"), ignored, complete)
    report.write()  # drops the lines of shards that are redone now
    order = [e for _, shard_entries in todo for e in shard_entries]
    with contextlib.closing(_decoded_stream(order, options, num_workers, flow)) as results, \
            contextlib.closing(Progress(len(order))) as progress:
        for shard_name, shard_entries in todo:
            shard = os.path.basename(shard_name)
            lines = []
            try:
                with tf.io.TFRecordWriter(shard_name + ".tmp") as writer:
                    for _ in shard_entries:
                        entry, video, flows, reason = next(results)
                        if video is None:
                            lines.append(ReportLine(entry.name, "failed", shard, reason))
                            summary.failed.append(lines[-1])
                            progress.note(f"skipped {entry.name}: {reason}")
                        else:
                            for warning in entry.notes + video.warnings:
                                lines.append(ReportLine(entry.name, "warning", shard, warning))
                                summary.warned.append(lines[-1])
                                progress.note(f"warning: {entry.name}: {warning}")
                            writer.write(_example(schema, entry, video, names, flows,
                                                  flow and flow["bound"]))
                            summary.written += 1
                        progress.update(failed=video is None)
            except tf.errors.OpError as e:
                raise ToolError(f"{shard_name}.tmp: cannot write: {e.message}", exit_code=1) from e
            report.set_shard(shard, lines)  # before the rename: a complete shard has its lines
            os.replace(shard_name + ".tmp", shard_name)
    return summary, report


def _example(schema, entry: VideoEntry, video: video_files.DecodedVideo, names: list[str],
             flows: list[bytes] | None = None, flow_bound: float | None = None) -> bytes:
    label, label_text = resolve_label(entry, names)
    example = schema.make_sequence_example(
        video.frames, label=label, label_text=label_text, filename=entry.name,
        source_id=source_id(entry), frame_rate=video.frame_rate, height=video.height,
        width=video.width, waveform=video.waveform, sample_rate=video.sample_rate)
    if flows is not None:  # written as compute_flow writes it
        return compute_flow.add_flow(example, flows, flow_bound)
    return example.SerializeToString(deterministic=True)


def _parse_args(argv):
    p = cli.ArgumentParser(TOOL, description="Convert a class folder or CSV of videos to "
                           "TFRecord shards.")
    p.add_argument("--input", required=True,
                   help="folder with one subfolder per class, or a CSV path,label[,start,end]")
    p.add_argument("--output", required=True, help="shard prefix: PREFIX-00000-of-000NN.tfrecord")
    p.add_argument("--label_map", help="class names, one per line (default: PREFIX.labels.txt); "
                   "new classes are appended")
    add_conversion_arguments(p)
    args = p.parse_args(argv)
    check_conversion_arguments(p, args)
    return args


def add_conversion_arguments(p) -> None:
    """The flags that say how videos are converted (prepare_dataset takes them too)."""
    p.add_argument("--fps", type=float, default=None,
                   help="resample to this frame rate (default: keep the source rate)")
    p.add_argument("--short_side", type=int, default=256,
                   help="resize so the shorter side is this many pixels; 0 keeps the size")
    p.add_argument("--jpeg_quality", type=int, default=video_files.DEFAULT_JPEG_QUALITY,
                   help="JPEG quality 1-100 (default %(default)s)")
    p.add_argument("--sample_rate", type=int, default=48000,
                   help="audio sample rate in Hz (default %(default)s, as BraVe)")
    p.add_argument("--no_audio", action="store_true", help="do not write audio")
    p.add_argument("--flow", choices=optical_flow.ALGORITHMS,
                   help="also compute optical flow (FORWARD_FLOW/image/encoded) with this "
                        "algorithm, as compute_flow does")
    p.add_argument("--flow_bound", type=float, default=None,
                   help="with --flow: clip flow to +-this many pixels (default: the schema's "
                        "DEFAULT_FLOW_BOUND, 20 as CoCLR)")
    p.add_argument("--flow_short_side", type=int, default=0,
                   help="with --flow: shrink frames to this shorter side before computing "
                        "flow (default 0: the stored size)")
    p.add_argument("--num_shards", type=int, default=0,
                   help=f"number of output shards (default: one per {VIDEOS_PER_SHARD} videos)")
    p.add_argument("--num_workers", type=int, default=0,
                   help="decoding processes (default: CPU count, at most one per video)")


def check_conversion_arguments(p, args) -> None:
    """Usage errors (p.error) for the add_conversion_arguments flags."""
    if args.fps is not None and args.fps <= 0:
        p.error(f"--fps must be positive, got {args.fps}")
    if not 1 <= args.jpeg_quality <= 100:
        p.error(f"--jpeg_quality must be in 1-100, got {args.jpeg_quality}")
    if args.short_side < 0 or args.num_shards < 0 or args.num_workers < 0 or args.sample_rate <= 0:
        p.error("--short_side, --num_shards, --num_workers must be >= 0 and --sample_rate > 0")
    if args.flow is None and (args.flow_bound is not None or args.flow_short_side):
        p.error("--flow_bound and --flow_short_side need --flow=tvl1|dis|farneback")
    if args.flow_bound is not None and not args.flow_bound > 0:
        p.error(f"--flow_bound must be positive, got {args.flow_bound}")
    if args.flow_short_side < 0:
        p.error(f"--flow_short_side must be >= 0, got {args.flow_short_side}")


def conversion_settings(args) -> tuple[dict, dict | None]:
    """convert()'s `options` and `flow` from the add_conversion_arguments flags."""
    options = dict(fps=args.fps, short_side=args.short_side, jpeg_quality=args.jpeg_quality,
                   sample_rate=None if args.no_audio else args.sample_rate)
    flow = (compute_flow.flow_settings(args.flow, args.flow_bound, args.flow_short_side)
            if args.flow else None)
    return options, flow


def main(argv: list[str] | None = None) -> int:
    return cli.run(TOOL, _run, _parse_args(argv))


def _run(args) -> int:
    entries, skipped = list_inputs(args.input)
    ignored = [ReportLine(name, "ignored", "-", why) for name, why in skipped]
    num_shards = args.num_shards or math.ceil(len(entries) / VIDEOS_PER_SHARD)
    make_output_folder(args.output)
    check_shard_count(args.output, num_shards)  # before anything is written
    check_source_ids(args.output, entries, num_shards)
    label_map = Path(args.label_map or args.output + ".labels.txt")
    names = update_label_map(label_map, entries)
    num_workers = min(args.num_workers or os.cpu_count() or 1, len(entries))
    options, flow = conversion_settings(args)
    if flow:  # as compute_flow records it: a run trained on the shards copies it
        compute_flow.check_manifest(Path(args.output + ".flow.json"), flow)
    summary, report = convert(entries, args.output, ignored=ignored, num_shards=num_shards,
                              num_workers=num_workers, names=names, options=options, flow=flow)
    print("\n".join(summary.lines()))
    if ignored:
        print(f"ignored (not tried as videos): {len(ignored)}")
    if report.path.exists():
        print(f"{cli.printable(str(report.path))}: {report.counts()} "
              "(this run and earlier ones)")
    if summary.written == 0 and summary.done_before == 0:
        print(f"{TOOL}: error: none of the {len(entries)} videos in "
              f"{cli.printable(args.input)} could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
