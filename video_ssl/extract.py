"""Feature extraction: `python -m video_ssl.extract --model=RUN_OR_EXPORT --input=INPUT
--output=OUT (--clips=N | [--window_s=S] --stride_s=S) [--crops=1|3] [--num_workers=W]
[--neighbours=K]`.

MODEL: a training run (a schedule stage, an imported checkpoint) or a SavedModel of
`video_ssl.export`; the clip shape, frame rate and normalization are the model's.
INPUT: a class folder or CSV of video files (as `videos_to_tfrecords` takes them) or
TFRecord shards ('PREFIX-*.tfrecord'). OUT gets features.npy, index.csv, errors.txt
and meta.json, written in chunks: an interrupted run resumes where it stopped (see
`video_ssl.extraction`); with --neighbours, also neighbours.png.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from video_ssl import console  # no TensorFlow: --help and the quiet start come first
from video_ssl.extraction.sampling import Sampling  # no TensorFlow either


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = console.ArgumentParser(
        "video_ssl.extract", description="Save a model's features of a video collection.")
    parser.add_argument("--model", required=True,
                        help="a training run directory or a video_ssl.export SavedModel")
    parser.add_argument("--encoder", default=None,
                        help="encoder of a training run (default: its primary one)")
    parser.add_argument("--input", required=True,
                        help="class folder, CSV path,label[,start,end], or 'PREFIX-*.tfrecord'")
    parser.add_argument("--output", required=True, help="folder for features.npy, index.csv, "
                        "errors.txt and meta.json")
    parser.add_argument("--clips", type=int, default=None,
                        help="uniformly spaced clips per video (rows per clip and their mean)")
    parser.add_argument("--window_s", type=float, default=None,
                        help="sliding windows of this many seconds (default: the model's clip)")
    parser.add_argument("--stride_s", type=float, default=None,
                        help="sliding windows starting every this many seconds")
    parser.add_argument("--crops", type=int, default=1, help="spatial crops per clip: 1 or 3")
    parser.add_argument("--batch_size", type=int, default=32, help="clips per model call")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="processes decoding video files (default: the cores but one, "
                             "at most 8; 0: decode in the main process)")
    parser.add_argument("--float16", action="store_true", help="save features as float16")
    parser.add_argument("--neighbours", type=int, default=0, metavar="K",
                        help="also write neighbours.png: some videos' K nearest videos")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size={args.batch_size}: expected at least 1")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num_workers={args.num_workers}: expected 0 or more")
    if args.neighbours < 0:
        parser.error(f"--neighbours={args.neighbours}: expected at least 1 (0: no sheet)")
    windows = args.stride_s is not None or args.window_s is not None
    try:
        clips = 1 if args.clips is None and not windows else args.clips  # one clip by default
        args.sampling = Sampling(clips=clips,
                                 window_s=args.window_s, stride_s=args.stride_s,
                                 crops=args.crops)
    except ValueError as error:
        parser.error(str(error))
    return args


if __name__ == "__main__":
    console.start(parse_flags(sys.argv[1:]))  # before TensorFlow loads

# The imports below load TensorFlow.
from video_ssl.extraction import neighbours  # noqa: E402
from video_ssl.extraction.run import extract  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Any failure is one line `video_ssl.extract: error: ...` and exit code 1."""
    return console.run("video_ssl.extract", _main,
                       parse_flags(sys.argv[1:] if argv is None else argv))


def _main(args: argparse.Namespace) -> int:
    extract(args.model, args.input, args.output, args.sampling, encoder=args.encoder,
            batch_size=args.batch_size, float16=args.float16, num_workers=args.num_workers)
    if args.neighbours:
        width, height = neighbours.save_sheet(args.output, args.neighbours)
        print(f"{args.output}/neighbours.png: {width}x{height}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
