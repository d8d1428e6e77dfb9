"""Imports a paper's released checkpoint as a training run:

    python -m video_ssl.import_checkpoint --format=pyslowfast|coclr|brave|cvrl|torchvision \\
        --input=FILE --output=DIR [--encoder=NAME] [--overwrite]

DIR then works wherever a `video_ssl.train` model_dir does (`evaluate`, `--fuse_with`,
`export`, `init_checkpoints`): see `video_ssl.importing.run`. Each format's converter
(`video_ssl.importing.<format>`) reads the file without the original framework, maps
every tensor exactly once and says which architecture and input it expects; a file
that does not fit is one line naming it and what was expected, and nothing is written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from video_ssl import console  # no TensorFlow: --help and the quiet start come first

FORMATS = ("pyslowfast", "coclr", "brave", "cvrl", "torchvision")


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = console.ArgumentParser(
        "video_ssl.import_checkpoint",
        description="Import a released checkpoint (PySlowFast, CoCLR, BraVe, CVRL, "
                    "torchvision) as a video_ssl training run.")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="the file's format (the code that wrote it)")
    parser.add_argument("--input", required=True,
                        help="the checkpoint file (cvrl: a TF checkpoint prefix or its folder)")
    parser.add_argument("--output", required=True, help="the run directory to write")
    parser.add_argument("--encoder", default=None,
                        help="which model of the file, where it holds several (see the "
                             "format's converter)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return parser.parse_args(argv)


if __name__ == "__main__":
    console.start(parse_flags(sys.argv[1:]))  # before TensorFlow loads

# The imports below load TensorFlow.
import importlib  # noqa: E402
import os  # noqa: E402

from video_ssl import atomic  # noqa: E402
from video_ssl.importing.run import write_run  # noqa: E402


def import_checkpoint(format: str, path: str, output: str, *, encoder: str | None = None,
                      overwrite: bool = False) -> str:
    """Converts `path` (of `format`) and writes it as a run in `output`; returns the
    checkpoint prefix."""
    if format not in FORMATS:
        raise ValueError(f"--format={format}: expected one of {list(FORMATS)}")
    atomic.check_directory(output, overwrite=overwrite)  # before the (slow) conversion
    converter = importlib.import_module(f"video_ssl.importing.{format}")
    # A format may take more than a file (cvrl: a checkpoint prefix or its folder).
    if not getattr(converter, "input_exists", os.path.isfile)(path):
        raise FileNotFoundError(f"{path}: no such file")
    converted = converter.convert(path, encoder=encoder)
    return write_run(converted, output, overwrite=overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    """Any failure is one line `video_ssl.import_checkpoint: error: ...` and exit code 1."""
    return console.run("video_ssl.import_checkpoint", _main,
                       parse_flags(sys.argv[1:] if argv is None else argv))


def _main(args: argparse.Namespace) -> int:
    print(f"Importing {args.input} ({args.format}) to {args.output} ...")
    prefix = import_checkpoint(args.format, args.input, args.output, encoder=args.encoder,
                               overwrite=args.overwrite)
    print(f"Imported {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
