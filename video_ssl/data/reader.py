"""Reading TFRecord shards: the one place that lists and counts them, and the input
pipeline's first two stages.

- `match_files(pattern, binding=None)`: the sorted shard list, or a `DataPathError`
  (naming the gin binding when given) when the pattern is unset or matches nothing;
- `count_records(files)`: the number of videos, from the record headers only;
- `read_examples(files, ...)`: (serialized SequenceExample, shard path) pairs, files
  split over input pipelines, shuffled with a seed and interleaved;
- `parse_example(serialized, shard, modalities, ...)`: still-encoded features, with an
  error naming the shard and video when a requested modality is missing.
"""
from __future__ import annotations

import struct
from typing import Sequence

import tensorflow as tf

from video_ssl.data import schema


class DataPathError(ValueError):
    """A configured file pattern is unset or matches nothing."""


def match_files(pattern: str | Sequence[str] | None, binding: str | None = None) -> list[str]:
    """Sorted files matching a glob pattern, or a list of patterns or files (each file
    once). Raises `DataPathError` when the pattern is unset or matches nothing; with
    `binding` (the gin binding holding the pattern) the message names it and how to
    set it."""
    where = binding or "the file pattern"
    hint = (f"; set it with --gin_param=\"{binding}='/path/to/shards-*.tfrecord'\""
            if binding else "")
    if not pattern:
        raise DataPathError(f"{where} is not set{hint}")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        named = f"{binding}={pattern!r}" if binding else repr(pattern)
        raise DataPathError(f"{named} matches no files{hint}")
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


def read_examples(files: Sequence[str], *, input_context=None, shuffle: bool = False,
                  seed: int | None = None, cycle_length: int | None = None,
                  deterministic: bool | None = None) -> tf.data.Dataset:
    """(serialized, shard path) pairs. Files are split over the input pipelines of
    `input_context` (tf.distribute.InputContext), shuffled when asked, interleaved."""
    files = list(files)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines = input_context.num_input_pipelines
        if len(files) < pipelines:
            raise ValueError(f"{len(files)} files cannot be split over {pipelines} input "
                             f"pipelines; write at least {pipelines} shards")
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return ds.interleave(
        lambda f: tf.data.TFRecordDataset(f).map(lambda record: (record, f)),
        cycle_length=cycle_length, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)


def parse_example(serialized, shard, modalities: Sequence[str], *,
                  default_frame_rate: float = schema.DEFAULT_FRAME_RATE,
                  audio_sample_rate: float | None = None) -> dict[str, tf.Tensor]:
    """Still-encoded features (see `schema.parse_sequence_example`) plus "shard".

    Fails with a message naming the shard and `video/filename` when a requested
    modality's feature list is missing or empty, or when the audio's sample rate is
    not `audio_sample_rate`.
    """
    defaults = {"frame_rate": default_frame_rate}
    if audio_sample_rate is not None:
        defaults["sample_rate"] = audio_sample_rate
    features = schema.parse_sequence_example(serialized, modalities, defaults)
    features["shard"] = shard
    # No quotes: TensorFlow escapes them in assertion messages.
    where = tf.strings.join([shard, ": video ", features["filename"]])
    checks = []
    for modality, name in (("rgb", "frames"), ("flow", "flow"), ("audio", "waveform")):
        if modality in modalities:
            key = schema.MODALITY_KEYS[modality]
            checks.append(tf.debugging.Assert(tf.size(features[name]) > 0, [tf.strings.join(
                [where, f" has no feature list {key} (needed for modality {modality})"])]))
    if "audio" in modalities and audio_sample_rate is not None:
        rate = features["sample_rate"]
        checks.append(tf.debugging.Assert(tf.abs(rate - audio_sample_rate) < 1e-3, [
            tf.strings.join([where, " has audio at ", tf.strings.as_string(rate),
                             f" Hz ({schema.SAMPLE_RATE}), expected {audio_sample_rate:g} "
                             "Hz (resample it or set the audio sample rate)"])]))
    # Everything downstream waits for the checks, so they fail first.
    with tf.control_dependencies(checks):
        return {k: tf.identity(v) for k, v in features.items()}
