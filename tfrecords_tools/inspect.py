"""Inspect TFRecord shards of videos: one line per video, or a contact sheet of one.

    python -m tfrecords_tools.inspect --input=GLOB [--json]
    python -m tfrecords_tools.inspect --input=GLOB --contact_sheet=OUT.png \
        [--video=INDEX_OR_FILENAME]

--json prints one JSON object per video per line with the fields in FIELDS (null,
or 0 for counts, where a file lacks the key: DMVR and Model Garden files work too).
Videos are numbered in the order of the sorted matching files, then of records.
TensorFlow is imported only once the arguments are parsed, so `--help` answers at once.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Iterator

import numpy as np

from tfrecords_tools import cli

if TYPE_CHECKING:
    import tensorflow as tf

FIELDS = ("filename", "label", "num_frames", "frame_rate", "height", "width",
          "audio_samples", "audio_sample_rate", "flow_frames",  # (contract)
          "source_id")
SHEET_FRAMES = 16  # frames shown, evenly spaced over the video
SHEET_COLUMNS = 8
# 0 is "absent" for these: the schema's parser substitutes it for missing keys.
_MISSING_AS_ZERO = {"frame_rate": 0.0, "sample_rate": 0.0, "flow_bound": 0.0}


class InspectError(cli.ToolError):
    """Bad input: no matching files, a corrupt record, no such video."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)


def iter_videos(pattern: str) -> Iterator[tuple[str, int, dict]]:
    """(file, record index, parsed record) for every record of the matching files."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise InspectError(f"--input {pattern}: no files match")
    for path in files:
        index = 0
        try:
            for serialized in tf.data.TFRecordDataset(path):
                yield path, index, _parse(path, index, serialized)
                index += 1
        except tf.errors.OpError as e:
            raise InspectError(f"{path}: corrupt TFRecord at record {index}: {e.message}") from None


def _parse(path: str, index: int, serialized: tf.Tensor) -> dict:
    import tensorflow as tf
    from video_ssl.data import modalities, schema

    try:
        return schema.parse_sequence_example(serialized, modalities.NAMES, _MISSING_AS_ZERO)
    except tf.errors.InvalidArgumentError as e:
        raise InspectError(f"{path}: record {index} is not a video SequenceExample: "
                           f"{e.message.splitlines()[0]}") from None


def describe(parsed: dict) -> dict:
    """The FIELDS of one parsed record, as plain Python values."""
    def positive(value, cast):
        value = cast(value.numpy())
        return value if value > 0 else None

    return {
        "filename": parsed["filename"].numpy().decode("utf-8", "replace") or None,
        "label": int(parsed["label"]) if int(parsed["label"]) >= 0 else None,
        "num_frames": len(parsed["frames"]),
        "frame_rate": positive(parsed["frame_rate"], float),
        "height": positive(parsed["height"], int),
        "width": positive(parsed["width"], int),
        "audio_samples": len(parsed["waveform"]),
        "audio_sample_rate": positive(parsed["sample_rate"], float),
        "flow_frames": len(parsed["flow"]),
        "source_id": parsed["source_id"].numpy().decode("utf-8", "replace") or None,
    }


def format_table(rows: list[dict]) -> str:
    """A human-readable table of `describe` rows, with a header."""
    cells = [[("-" if r[f] is None else f"{r[f]:g}" if isinstance(r[f], float) else str(r[f]))
              for f in FIELDS] for r in rows]
    widths = [max([len(f)] + [len(c[i]) for c in cells]) for i, f in enumerate(FIELDS)]
    lines = ["  ".join(f.ljust(w) for f, w in zip(FIELDS, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def find_video(pattern: str, video: str) -> tuple[str, int, dict]:
    """The record selected by a global index or by its exact `video/filename`."""
    count = 0
    for path, index, parsed in iter_videos(pattern):
        if (str(count) == video or parsed["filename"].numpy().decode("utf-8", "replace") == video):
            return path, index, parsed
        count += 1
    raise InspectError(f"--video {video}: no such index or filename among the {count} videos "
                       f"in {pattern}")


def contact_sheet_rows(parsed: dict) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Up to SHEET_FRAMES evenly spaced frames in rows, each followed by its flow row."""
    from video_ssl.data import contact_sheet, flow

    num_frames = len(parsed["frames"])
    if not num_frames:
        raise InspectError(f"{parsed['filename'].numpy().decode()}: no frames to show")
    picks = np.unique(np.round(
        np.linspace(0, num_frames - 1, min(SHEET_FRAMES, num_frames))).astype(int))
    num_flow = len(parsed["flow"])
    bound = float(parsed["flow_bound"])
    rows = []
    for chunk in np.array_split(picks, int(np.ceil(len(picks) / SHEET_COLUMNS))):
        rows.append(np.stack([_decode(parsed["frames"][i]) for i in chunk]))
        if num_flow:
            # Flow frame i lies between frames i and i + 1; the last frame has none.
            fields = [flow.dequantize_flow(_decode(parsed["flow"][min(i, num_flow - 1)]), bound)
                      for i in chunk]
            rows.append(contact_sheet.flow_to_rgb(np.stack(fields), max_magnitude=bound))
    waveform = parsed["waveform"].numpy()
    return rows, (waveform if waveform.size else None)


def _decode(jpeg: tf.Tensor) -> np.ndarray:
    import tensorflow as tf

    return tf.io.decode_jpeg(jpeg, channels=3).numpy()


def _parse_args(argv):
    p = cli.ArgumentParser("inspect",
                           description="List the videos in TFRecord shards, or draw one.")
    p.add_argument("--input", required=True, help="glob of TFRecord files")
    p.add_argument("--json", action="store_true", help="one JSON object per video per line")
    p.add_argument("--contact_sheet", metavar="OUT.png", help="write a contact sheet of one video")
    p.add_argument("--video", default="0",
                   help="index or filename of the video to draw (default 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return cli.run("inspect", _run, _parse_args(argv))


def _run(args) -> int:
    if args.contact_sheet:
        from video_ssl.data import contact_sheet

        path, index, parsed = find_video(args.input, args.video)
        rows, waveform = contact_sheet_rows(parsed)
        width, height = contact_sheet.save_contact_sheet(args.contact_sheet, rows, waveform)
        print(f"wrote {args.contact_sheet} ({width}x{height}) for record {index} of {path}")
        return 0
    rows = []
    for _, _, parsed in iter_videos(args.input):
        row = describe(parsed)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            rows.append(row)
    if not args.json:
        print(format_table(rows))
        print(f"{len(rows)} videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
