"""What the command-line entry points share: gin parsing, data-path checks, record
counting and the embedded demo dataset's gin hook."""
from __future__ import annotations

import logging
import os
import struct
from typing import Sequence

import gin
import tensorflow as tf


class DataPathError(ValueError):
    """A configured file pattern is unset or matches nothing."""


@gin.configurable
def demo_files(split: str = gin.REQUIRED) -> str:
    """File pattern of a split of the embedded demo dataset (built on first use)."""
    from video_ssl.data.demo import ensure_demo_dataset
    return ensure_demo_dataset(progress=True)[split]


def match_files(pattern: str | None, binding: str) -> list[str]:
    """Files of `pattern`, or a `DataPathError` naming the gin binding to set."""
    hint = f"set it with --gin_param=\"{binding}='/path/to/shards-*.tfrecord'\""
    if not pattern:
        raise DataPathError(f"{binding} is not set; {hint}")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise DataPathError(f"{binding}={pattern!r} matches no files; {hint}")
    return files


def count_records(files: Sequence[str]) -> int:
    """Number of records in TFRecord files, read from the record headers only
    (length, length CRC, data, data CRC) so counting never reads the videos."""
    total = 0
    for path in files:
        size = tf.io.gfile.stat(path).length
        with tf.io.gfile.GFile(path, "rb") as f:
            position = 0
            while position < size:
                f.seek(position)
                header = f.read(8)
                if len(header) != 8:
                    raise ValueError(f"{path}: truncated TFRecord header at byte {position}")
                (length,) = struct.unpack("<Q", header)
                position += 8 + 4 + length + 4
                total += 1
            if position != size:
                raise ValueError(f"{path}: truncated TFRecord (last record ends past the file)")
    return total


def parse_gin(gin_files: Sequence[str], gin_params: Sequence[str]) -> None:
    """Parses the gin files in order, then the single bindings. Each file's folder is
    searched for its `include`s, so recipes include their base files by name."""
    for path in gin_files:
        if not tf.io.gfile.exists(path):
            raise ValueError(f"--gin_file={path}: no such file")
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
    _register_configurables()
    quiet = _QuietGinSearch()
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(gin_files, gin_params)
    finally:
        logging.getLogger().removeFilter(quiet)


class _QuietGinSearch(logging.Filter):
    """Drops the error gin logs for each search folder that lacks an included file
    (the include is still an error when no folder has it)."""

    def filter(self, record):
        return not record.getMessage().startswith("Path not found")


def _register_configurables() -> None:
    """Imports the modules whose classes and functions gin files name."""
    import video_ssl.methods.byol  # noqa: F401
    import video_ssl.methods.moco  # noqa: F401
    import video_ssl.methods.simclr  # noqa: F401
    import video_ssl.methods.swav  # noqa: F401
    import video_ssl.optim  # noqa: F401
