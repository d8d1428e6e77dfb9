"""The videos to extract features from, in a fixed order, each able to give its parsed
features (the dict `reader.parse_example` gives: still-encoded JPEG frames, frame rate,
waveform, flow) or a one-line reason why it cannot.

- TFRecord shards (`--input='PREFIX-*.tfrecord'`): every record, shard by shard, as
  stored (the model's modality must be in the records: flow needs the shards' flow);
- a class folder or a CSV (`videos_to_tfrecords`'s listing): each file decoded by the
  converter's own decoder (`video_io.decode_video`) at the model's frame rate (the
  file's own when the model has none) with the short side at the evaluation crop's
  (`short_side`, default crop_size * 8 / 7), and the audio at the model's sample rate:
  what a shard converted with those settings would hold.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import tensorflow as tf

from tfrecords_tools import video_io
from tfrecords_tools.cli import ToolError
from tfrecords_tools.videos_to_tfrecords import list_inputs
from video_ssl.console import error_line
from video_ssl.data import modalities as modalities_lib, reader, schema, views as views_lib

# Where a modality comes from in a video file, for the modalities that can be read.
FILE_MODALITIES = ("rgb", "audio")


class InputError(ValueError):
    """--input cannot give what the model needs."""


class VideoError(Exception):
    """One video cannot be read; the message is the reason (errors.txt)."""


@dataclasses.dataclass(frozen=True)
class Video:
    """name: the file as listed (folder: `class/file`, CSV: its path and segment) or
    `SHARD#RECORD`; label: the class name or index, None when unknown."""
    name: str
    label: str | int | None
    load: Callable[[], dict] = dataclasses.field(compare=False, repr=False)


def is_shard_pattern(path: str) -> bool:
    """TFRecord shards: a name with .tfrecord, or a glob pattern that is no file."""
    return ".tfrecord" in os.path.basename(path) or (
        not os.path.exists(path) and any(c in path for c in "*?["))


def list_videos(input_path: str, view: views_lib.ViewSpec) -> list[Video]:
    """The videos of `input_path` (shards, class folder or CSV) for a model whose
    evaluation view is `view` (its one modality, clip and audio settings)."""
    modality = view.modalities[0]
    if is_shard_pattern(input_path):
        return _shard_videos(input_path, view)
    if modality not in FILE_MODALITIES:
        raise InputError(f"the model takes {modality}, which --input={input_path} (video "
                         "files) does not offer; convert them with the flow the model was "
                         "trained on (videos_to_tfrecords --flow=ALGORITHM) and pass "
                         "--input='PREFIX-*.tfrecord'")
    try:
        entries, _ = list_inputs(input_path)
    except ToolError as error:
        raise InputError(str(error)) from None
    return [Video(e.name, e.label, lambda e=e: _file_features(e, view)) for e in entries]


def _file_features(entry, view: views_lib.ViewSpec) -> dict:
    try:
        if view.modalities[0] == "audio":
            return _file_audio(entry, view)
        video = video_io.decode_video(
            entry.path, fps=view.target_fps, start=entry.start, end=entry.end,
            short_side=view.short_side or round(view.crop_size * 8 / 7), sample_rate=None)
    except VideoError:
        raise
    except Exception as error:  # noqa: BLE001 -- any failure skips this video, with its reason
        raise VideoError(error_line(error)) from None
    return {"frames": tf.constant(video.frames),
            "frame_rate": tf.constant(video.frame_rate, tf.float32)}


def _file_audio(entry, view: views_lib.ViewSpec) -> dict:
    """The waveform alone, at the model's sample rate; clip starts count frames at
    the model's frame rate (the pipeline's default when it has none), as training's."""
    rate = view.audio.sample_rate
    waveform = video_io.read_audio(entry.path, sample_rate=int(rate), start=entry.start,
                                   end=entry.end)
    if waveform is None or not waveform.size:
        raise VideoError(f"{entry.path}: no audio (the model takes audio)")
    return {"waveform": tf.constant(waveform, tf.float32),
            "sample_rate": tf.constant(rate, tf.float32),
            "frame_rate": tf.constant(view.target_fps or schema.DEFAULT_FRAME_RATE, tf.float32)}


def _shard_videos(pattern: str, view: views_lib.ViewSpec) -> list[Video]:
    try:
        files = reader.match_files(pattern)
    except reader.DataPathError as error:
        raise InputError(f"--input={pattern}: {error}") from None
    modality = modalities_lib.get(view.modalities[0])
    records = _Records()
    first = records.get(files[0], 0) if reader.count_records(files[:1]) else None
    if first is not None and not _has_feature_list(first, modality.feature_list):
        raise InputError(f"the model takes {modality.name}, which --input={pattern} does not "
                         f"offer: {files[0]} has no {modality.feature_list}")
    sample_rate = view.audio.sample_rate if modality.name == "audio" else None
    videos = []
    for path in files:
        for index in range(reader.count_records([path])):
            def load(path=path, index=index):
                return _record_features(records.get(path, index), path, view.modalities,
                                        sample_rate)
            videos.append(Video(f"{os.path.basename(path)}#{index}", None, load))
    return videos


def _has_feature_list(serialized: bytes, key: str) -> bool:
    return key in tf.train.SequenceExample.FromString(serialized).feature_lists.feature_list


def _record_features(serialized: bytes, path: str, modalities, sample_rate) -> dict:
    try:
        return reader.parse_example(tf.constant(serialized), path, modalities,
                                    audio_sample_rate=sample_rate)
    except tf.errors.OpError as error:
        raise VideoError(error_line(error)) from None


class _Records:
    """Records of shards read in order, the file kept open between calls (a re-run
    starting mid-shard skips the records before)."""

    def __init__(self):
        self.path, self.next_index, self.iterator = None, 0, None

    def get(self, path: str, index: int) -> bytes:
        if path != self.path or index < self.next_index:
            self.path, self.next_index = path, 0
            self.iterator = tf.data.TFRecordDataset(path).as_numpy_iterator()
        try:
            while self.next_index <= index:
                record = next(self.iterator)
                self.next_index += 1
        except (StopIteration, tf.errors.OpError) as error:
            self.path = None  # read again from the start next time
            raise VideoError(f"{path}: record {index} cannot be read: "
                             f"{error_line(error) if str(error) else 'the file ends before it'}"
                             ) from None
        return record
