"""The videos to extract features from, in a fixed order, and how each is read.

- TFRecord shards (`--input='PREFIX-*.tfrecord'`): every record, shard by shard, as
  stored (the model's modality must be in the records: flow needs the shards' flow);
  `Video.load` parses one in this process (what the pipeline's parser gives);
- a class folder or a CSV (`video_list.list_inputs`): `Video.entry` is the file, read
  by `decoding.read_files` (in worker processes) as a shard converted by
  `videos_to_tfrecords` at the model's frame rate (the file's own when the model has
  none) with the short side at the evaluation crop's (`short_side`, default
  crop_size * 8 / 7) would hold it, its flow computed from those frames with the
  settings the run recorded, and the audio at the model's sample rate;
  `file_features` makes the pipeline's tensors of what was read.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import tensorflow as tf

from video_ssl.console import error_line
from video_ssl.data import modalities as modalities_lib, optical_flow, reader, schema
from video_ssl.data import views as views_lib
from video_ssl.data.video_list import ListingError, VideoEntry, list_inputs
from video_ssl.extraction.decoding import Reading



class InputError(ValueError):
    """--input cannot give what the model needs."""


class VideoError(Exception):
    """One video cannot be read; the message is the reason (errors.txt)."""


@dataclasses.dataclass(frozen=True)
class Video:
    """name: the file as listed (folder: `class/file`, CSV: its path and segment) or
    `SHARD#RECORD`; label: the class name or index, None when unknown; a file's
    `entry`, or a record's `load()`."""
    name: str
    label: str | int | None
    entry: VideoEntry | None = None
    load: Callable[[], dict] | None = dataclasses.field(default=None, compare=False,
                                                        repr=False)


def is_shard_pattern(path: str) -> bool:
    """TFRecord shards: a name with .tfrecord, or a glob pattern that is no file."""
    return ".tfrecord" in os.path.basename(path) or (
        not os.path.exists(path) and any(c in path for c in "*?["))


def list_videos(input_path: str, view: views_lib.ViewSpec, flow: dict | None = None
                ) -> tuple[list[Video], Reading | None]:
    """The videos of `input_path` (shards, class folder or CSV) for a model whose
    evaluation view is `view` (its one modality, clip and audio settings), and how
    to read the files (None for shards). flow: a flow encoder's flow settings
    (None: `optical_flow.DEFAULT_SETTINGS`)."""
    modality = view.modalities[0]
    if is_shard_pattern(input_path):
        return _shard_videos(input_path, view), None
    try:
        entries, _ = list_inputs(input_path)
    except ListingError as error:
        raise InputError(str(error)) from None
    reading = Reading(modality, fps=view.target_fps,
                      short_side=view.short_side or round(view.crop_size * 8 / 7),
                      sample_rate=view.audio.sample_rate if modality == "audio" else None,
                      flow=(flow or optical_flow.DEFAULT_SETTINGS) if modality == "flow"
                      else None)
    return [Video(e.name, e.label, entry=e) for e in entries], reading


def file_features(read: dict, view: views_lib.ViewSpec) -> dict:
    """The parsed features (as `reader.parse_example` gives them) of what
    `decoding.read_files` read of a file."""
    if "waveform" in read:
        # Clip starts count frames at the model's frame rate (the pipeline's default
        # when it has none), as training's.
        return {"waveform": tf.constant(read["waveform"], tf.float32),
                "sample_rate": tf.constant(view.audio.sample_rate, tf.float32),
                "frame_rate": tf.constant(view.target_fps or schema.DEFAULT_FRAME_RATE,
                                          tf.float32)}
    if "flow" in read:
        return {"flow": tf.constant(read["flow"]),
                "flow_bound": tf.constant(read["flow_bound"], tf.float32),
                "frame_rate": tf.constant(read["frame_rate"], tf.float32)}
    return {"frames": tf.constant(read["frames"]),
            "frame_rate": tf.constant(read["frame_rate"], tf.float32)}


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
            videos.append(Video(f"{os.path.basename(path)}#{index}", None, load=load))
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
