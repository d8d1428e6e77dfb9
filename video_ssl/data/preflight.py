"""Checks of the shards against what the views ask for, on the first record, before
any model is trained: a mismatch fails in seconds with a line naming the file, rather
than as an in-graph assertion once the first batch is read."""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf
from google.protobuf.message import DecodeError

from video_ssl.data import schema
from video_ssl.data.views import ViewSpec


def check_audio_sample_rate(files: Sequence[str], views: Mapping[str, ViewSpec]) -> None:
    """Raises ValueError naming the first shard, its first video and both rates when
    that video's `WAVEFORM/feature/sample_rate` is not the `AudioSpec.sample_rate` of
    a view that asks for audio. (A file without a sample rate is taken to hold the
    view's; the pipeline checks every record in the graph.)"""
    audio_views = {name: view for name, view in views.items() if "audio" in view.modalities}
    if not audio_views or not files:
        return
    example = _first_example(files[0])
    if example is None:
        return
    rates = example.context.feature[schema.SAMPLE_RATE].float_list.value
    if not rates:
        return
    video = example.context.feature[schema.FILENAME].bytes_list.value
    where = f"{files[0]}: video {video[0].decode(errors='replace') if video else '0'}"
    for name, view in audio_views.items():
        if abs(rates[0] - view.audio.sample_rate) >= 1e-3:
            raise ValueError(
                f"{where} has audio at {rates[0]:g} Hz ({schema.SAMPLE_RATE}), but view "
                f"{name!r} expects {view.audio.sample_rate:g} Hz (its AudioSpec.sample_rate); "
                "resample the audio or set the view's sample rate")


def _first_example(path: str) -> tf.train.SequenceExample | None:
    try:
        record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        if record is None:
            return None
        return tf.train.SequenceExample.FromString(record.numpy())
    except (tf.errors.OpError, DecodeError) as error:
        message = error.message if isinstance(error, tf.errors.OpError) else str(error)
        raise ValueError(f"{path}: the first record cannot be read as a SequenceExample "
                         f"({message.strip().splitlines()[0]})") from None
