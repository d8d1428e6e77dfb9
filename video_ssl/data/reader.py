"""Reading TFRecord shards: the one place that lists and counts them, and the input
pipeline's first two stages.

- `match_files(pattern, binding=None)`: the sorted shard list, or a `DataPathError`
  (naming the gin binding when given) when the pattern is unset or matches nothing;
- `count_records(files)`: the number of videos, from the record headers only;
- `read_examples(files, ...)`: (serialized SequenceExample, shard path) pairs, files
  split over input pipelines, shuffled with a seed and interleaved;
- `parse_example(serialized, shard, modalities, ...)`: still-encoded features and the
  record's `video_id`, with an error naming the shard and video when a requested
  modality is missing or a frame is not a JPEG;
- `require_records(files, what)`: a `DataPathError` when the files hold no record;
- `locate_damaged_record(files, message)`: after the pipeline failed on a corrupted or
  truncated record, on one that is not a SequenceExample, or on a JPEG frame whose
  header reads but whose data does not decode (TensorFlow's messages name no file),
  the file and record that did it.
"""
from __future__ import annotations

import re
import struct
from typing import Iterator, Sequence

import tensorflow as tf
from google.protobuf.message import DecodeError

from video_ssl.data import modalities as modalities_lib
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
        for _, position, end in _record_spans(path):
            if end > size:
                raise ValueError(f"{path}: truncated TFRecord (last record ends past the file)")
            total += 1
    return total


def require_records(files: Sequence[str], what: str,
                    need: str = "expected at least one video") -> None:
    """Raises `DataPathError` naming `what` (the pattern or binding), the files and what
    was needed (`need`) when none of them holds a record (every file is empty). Stops
    at the first non-empty file, so it costs one stat in the usual case."""
    if any(tf.io.gfile.stat(path).length > 0 for path in files):
        return
    shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
    raise DataPathError(f"{what}: {len(files)} file(s) ({shown}) hold no records; {need}")


def _record_spans(path: str) -> Iterator[tuple[int, int, int]]:
    """(index, first byte, end) of each record of a TFRecord file, from the headers."""
    size = tf.io.gfile.stat(path).length
    with tf.io.gfile.GFile(path, "rb") as f:
        index = position = 0
        while position < size:
            f.seek(position)
            header = f.read(8)
            if len(header) != 8:
                raise ValueError(f"{path}: truncated TFRecord header at byte {position}")
            (length,) = struct.unpack("<Q", header)
            end = position + 8 + 4 + length + 4
            yield index, position, end
            index, position = index + 1, end


# TensorFlow's messages for a damaged record; the first two give its byte offset.
_DAMAGED = re.compile(r"(corrupted|truncated) record at (\d+)|Invalid protocol message input")
# TensorFlow's message for a frame whose JPEG header reads but whose data does not decode.
_UNDECODABLE = re.compile(r"jpeg::Uncompress failed|Invalid JPEG data")


def locate_damaged_record(files: Sequence[str], message: str) -> str | None:
    """"PATH: record K (byte N): what is wrong" for the record of `files` that made the
    input pipeline fail with `message`, or None when `message` is not about a damaged
    record or none is found. Only the files with a record at the failing byte offset
    are read (all of them for a record that is not a SequenceExample, and every frame
    of them for a JPEG that does not decode, which names the first such record in file
    order): this runs once the pipeline has failed, never before."""
    if _UNDECODABLE.search(message):
        return next(filter(None, map(_undecodable_frame, files)), None)
    damaged = _DAMAGED.search(message)
    if not damaged:
        return None
    kind, offset = damaged.group(1) or "protocol", damaged.group(2)
    for path in files:
        if offset is None or _has_record_at(path, int(offset)):
            problem = _bad_record(path, kind, offset and int(offset))
            if problem:
                return f"{path}: {problem}"
    return None


def _has_record_at(path: str, offset: int) -> bool:
    """Whether a record of `path` starts at `offset`, or its data does (TensorFlow gives
    either, depending on which checksum failed)."""
    try:
        return any(offset in (start, start + 12) for _, start, _ in _record_spans(path))
    except ValueError:  # a truncated header: the damage may be anywhere after it
        return True


def _bad_record(path: str, kind: str, offset: int | None) -> str | None:
    """What is wrong with the record of `path` that fails as `kind` ("corrupted",
    "truncated" or "protocol") at `offset`, or None when this file does not."""
    starts = []  # each record's first byte, as far as the headers can be read
    try:
        starts = [start for _, start, _ in _record_spans(path)]
    except ValueError:
        pass
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
            try:
                tf.train.SequenceExample.FromString(record)
            except DecodeError:
                if kind == "protocol":
                    where = f" (byte {starts[index]})" if index < len(starts) else ""
                    return f"record {index}{where} is not a tf.train.SequenceExample"
    except tf.errors.DataLossError as error:
        failed = re.search(r"(corrupted|truncated) record at (\d+)", error.message)
        if failed and failed.group(1) == kind and int(failed.group(2)) == offset:
            number = next((i for i, start in enumerate(starts)
                           if offset in (start, start + 12)), "?")
            what = ("its checksum does not match (the file is damaged)"
                    if kind == "corrupted" else "the file ends inside it")
            return f"record {number} (byte {offset}): {what}"
    return None


_JPEG_START = b"\xff\xd8\xff"  # the start-of-image marker (and the next marker's 0xff)
_FRAME_KEYS = tuple(m.feature_list for m in modalities_lib.MODALITIES.values() if m.frames)


def _undecodable_frame(path: str) -> str | None:
    """"PATH: record K (video NAME): frame F of KEY ..." for the first record of `path`
    holding a JPEG frame (RGB or flow) that does not decode, or None. The records are
    decoded in parallel; the failing one is then searched frame by frame."""
    def decode_all(index, record):
        _, lists = tf.io.parse_single_sequence_example(record, sequence_features={
            key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
            for key in _FRAME_KEYS})
        frames = tf.concat([lists[key] for key in _FRAME_KEYS], 0)
        # Frames that are no JPEG at all have the pipeline's own message (`_all_jpegs`).
        frames = tf.boolean_mask(frames, tf.equal(tf.strings.substr(frames, 0, 3), _JPEG_START))
        # The decoded heights, summed: tf.data prunes what no output depends on.
        heights = tf.map_fn(lambda jpeg: tf.shape(tf.io.decode_jpeg(jpeg))[0], frames,
                            fn_output_signature=tf.int32)
        return index, tf.reduce_sum(heights)

    records = tf.data.TFRecordDataset(path).enumerate().map(
        decode_all, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    iterator, index = iter(records), 0
    while True:
        try:
            next(iterator)
        except StopIteration:
            return None
        except tf.errors.InvalidArgumentError:
            break  # record `index` (a map error ends that element only)
        except tf.errors.OpError:
            return None  # damaged otherwise: not what this search is about
        index += 1
    record = next(iter(tf.data.TFRecordDataset(path).skip(index).take(1))).numpy()
    try:
        example = tf.train.SequenceExample.FromString(record)
    except DecodeError:
        return None
    name = example.context.feature[schema.FILENAME].bytes_list.value
    video = name[0].decode(errors="replace") if name else "?"
    for key in _FRAME_KEYS:
        for number, frame in enumerate(example.feature_lists.feature_list[key].feature):
            jpeg = frame.bytes_list.value[0] if frame.bytes_list.value else b""
            if not jpeg.startswith(_JPEG_START):
                continue
            try:
                tf.io.decode_jpeg(jpeg)
            except tf.errors.InvalidArgumentError:
                return (f"{path}: record {index} (video {video}): frame {number} of {key} "
                        "is a damaged JPEG (its header reads, its data does not decode)")
    return None


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
    """Still-encoded features (see `schema.parse_sequence_example`) plus "shard" and
    "video_id" (`video_id`).

    Fails with a message naming the shard and `video/filename` when a requested
    modality's feature list is missing or empty, when one of its RGB or flow frames is
    not a JPEG, or when the audio's sample rate is not `audio_sample_rate`.
    """
    defaults = {"frame_rate": default_frame_rate}
    if audio_sample_rate is not None:
        defaults["sample_rate"] = audio_sample_rate
    features = schema.parse_sequence_example(serialized, modalities, defaults)
    features["shard"] = shard
    features["video_id"] = video_id(serialized, features["source_id"])
    # No quotes: TensorFlow escapes them in assertion messages.
    where = tf.strings.join([shard, ": video ", features["filename"]])
    checks = []
    for modality in map(modalities_lib.get, modalities):
        key, stored = modality.feature_list, features[modality.parsed]
        checks.append(tf.debugging.Assert(tf.size(stored) > 0, [tf.strings.join(
            [where, f" has no feature list {key} (needed for modality {modality.name})"])]))
        if modality.frames:
            checks.append(_all_jpegs(stored, where, key))
    if "audio" in modalities and audio_sample_rate is not None:
        rate = features["sample_rate"]
        checks.append(tf.debugging.Assert(tf.abs(rate - audio_sample_rate) < 1e-3, [
            tf.strings.join([where, " has audio at ", tf.strings.as_string(rate),
                             f" Hz ({schema.SAMPLE_RATE}), expected {audio_sample_rate:g} "
                             "Hz (resample it or set the audio sample rate)"])]))
    # Everything downstream waits for the checks, so they fail first.
    with tf.control_dependencies(checks):
        return {k: tf.identity(v) for k, v in features.items()}


_ID_BUCKETS = 2**63 - 1  # video ids: the whole non-negative int64 range


def video_id(serialized, source_id) -> tf.Tensor:
    """int64 id of the video a record's clip was cut from: a hash of its
    `video/source_id`, so clips of one source video share it; without one, a hash of the
    whole serialized record, so the record is its own video, with the same id on every
    read (every epoch, every input pipeline). Not the filename: other writers may leave
    it out, and two datasets may both hold a `clip1.mp4`. FarmHash, stable across runs."""
    key = tf.where(tf.strings.length(source_id) > 0, source_id, serialized)
    return tf.strings.to_hash_bucket_fast(key, _ID_BUCKETS)


def _all_jpegs(frames: tf.Tensor, where: tf.Tensor, key: str) -> tf.Operation:
    """A check that every frame starts with the JPEG start-of-image marker (the decoder's
    own error names no file); it reads 3 bytes per frame."""
    is_jpeg = tf.equal(tf.strings.substr(frames, 0, 3), _JPEG_START)
    # The appended 0 keeps argmin defined for a video without frames.
    first_bad = tf.argmin(tf.concat([tf.cast(is_jpeg, tf.int32), [0]], 0), output_type=tf.int32)
    return tf.debugging.Assert(tf.reduce_all(is_jpeg), [tf.strings.join(
        [where, ": frame ", tf.strings.as_string(first_bad), f" of {key} is not a JPEG"])])
