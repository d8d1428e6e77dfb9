"""`extract`: a model, an input and a sampling -> the OUT/ folder (`output`).

Videos are taken in the input's order, `chunk_videos` at a time; within a chunk their
clips go to the model in batches of `batch_size` (a batch may hold clips of several
videos of the chunk, never of two chunks), and the chunk is saved when its last
video is done. Video files are read ahead by `num_workers` processes
(`extraction.decoding`) while the model runs here; records of shards are parsed here.
A video that cannot be read or cut is listed in errors.txt and skipped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

import video_ssl
from video_ssl.console import Progress, error_line
from video_ssl.extraction import decoding
from video_ssl.extraction import encoder as encoder_lib
from video_ssl.extraction import inputs as inputs_lib
from video_ssl.extraction.output import ChunkedOutput
from video_ssl.extraction.clips import ClipMaker, VideoClips
from video_ssl.extraction.sampling import Sampling

CHUNK_VIDEOS = 32
MEAN = "mean"  # the clip and crop of a per-video mean row


def default_workers() -> int:
    """Decoding processes by default: the cores but one (the model's), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) - 1))


def extract(model: str, input_path: str, output: str, sampling: Sampling, *,
            encoder: str | None = None, batch_size: int = 32, float16: bool = False,
            chunk_videos: int = CHUNK_VIDEOS, num_workers: int | None = None) -> dict:
    """Writes OUT (see `output`); returns meta.json's content. num_workers: processes
    decoding video files (0: in this process; None: `default_workers()`); the files
    written do not depend on it."""
    model_encoder = encoder_lib.load_model(model, encoder)
    videos, reading = inputs_lib.list_videos(input_path, model_encoder.view,
                                             model_encoder.flow)
    view = model_encoder.view
    dtype = "float16" if float16 else "float32"
    listing = hashlib.sha256("\n".join(v.name for v in videos).encode()).hexdigest()
    settings = {"model": model_encoder.facts, "input": input_path, "videos": listing,
                "sampling": sampling.settings(), "dtype": dtype, "batch_size": batch_size,
                "chunk_videos": chunk_videos}
    out = ChunkedOutput(output, settings)
    if out.complete:
        _say(f"{output}: already complete")
        with open(os.path.join(output, "meta.json")) as f:
            return json.load(f)
    maker = ClipMaker(view, sampling)
    chunks = [videos[i:i + chunk_videos] for i in range(0, len(videos), chunk_videos)]
    todo = [i for i in range(len(chunks)) if not out.has_chunk(i)]
    if len(todo) < len(chunks):
        _say(f"{output}: resuming, {len(chunks) - len(todo)} of {len(chunks)} chunks of "
             f"{chunk_videos} videos done by an earlier run")
    started, rows_done = time.monotonic(), 0
    workers = default_workers() if num_workers is None else num_workers
    loaded = _loaded([v for i in todo for v in chunks[i]], reading, maker, view, workers)
    with contextlib.closing(loaded), \
            contextlib.closing(Progress(sum(len(chunks[i]) for i in todo), "clips")) as progress:
        for index in todo:
            features, rows, errors = _embed_chunk(
                [next(loaded) for _ in chunks[index]], maker, model_encoder.forward,
                batch_size, sampling, progress)
            out.write_chunk(index, features, rows, errors)
            rows_done += len(features)
    meta = {"model": model_encoder.facts, "modality": model_encoder.modality,
            **_input_settings(view), **_flow_settings(reading, model_encoder),
            "sampling": sampling.settings(), "input": input_path,
            "videos": len(videos), "dtype": dtype, "version": video_ssl.__version__}
    meta = out.finish(len(chunks), dtype, meta)
    seconds = time.monotonic() - started
    failed = f", {meta['failed']} failed (errors.txt)" if meta["failed"] else ""
    _say(f"{output}: {meta['rows']} rows from {len(videos) - meta['failed']} videos{failed}; "
         f"{rows_done / max(seconds, 1e-9):.1f} rows/s")
    return meta


def _input_settings(view) -> dict:
    """What meta.json records of the model's input: the clip (and the RGB
    normalization) of a frame modality, the log-mel settings of audio."""
    if view.modalities == ("audio",):
        return {"audio": dataclasses.asdict(view.audio)}
    clip = {k: getattr(view, k) for k in
            ("num_frames", "frame_stride", "crop_size", "target_fps", "short_side")}
    spec = view.augmentation
    normalization = ({"mean": spec.mean, "std": spec.std} if spec.normalize
                     else {"mean": 0.0, "std": 1.0})
    return {"clip": clip, **({"normalization": normalization}
                             if view.modalities == ("rgb",) else {})}


def _flow_settings(reading, model_encoder) -> dict:
    """meta.json's record of the flow computed from video files, if any."""
    if reading is None or reading.flow is None:
        return {}
    note = ({} if model_encoder.flow else {
        "note": "the model records no flow settings: the project's defaults were used"})
    return {"flow": {**reading.flow, **note}}


def _loaded(videos, reading, maker: ClipMaker, view, num_workers: int):
    """(video, parsed features or the reason it cannot be read) in order."""
    if reading is None:  # records of shards
        for video in videos:
            try:
                yield video, video.load()
            except inputs_lib.VideoError as error:
                yield video, str(error)
        return
    read = decoding.read_files([v.entry for v in videos], reading, maker.frame_indices,
                               num_workers)
    with contextlib.closing(read):
        for video, value in zip(videos, read):
            yield video, value if isinstance(value, str) else inputs_lib.file_features(
                value, view)


def _embed_chunk(loaded, maker: ClipMaker, forward, batch_size: int, sampling: Sampling,
                 progress) -> tuple[np.ndarray, list, list]:
    """(features, index rows, errors) of one chunk of (video, features or reason)."""
    batcher = _Batcher(forward, batch_size)
    done, errors = [], []
    for video, features in loaded:
        try:
            if isinstance(features, str):
                raise inputs_lib.VideoError(features)
            cut = maker(features)
        except (inputs_lib.VideoError, tf.errors.OpError) as error:
            reason = " ".join(error_line(error).split())
            errors.append((video.name, reason))
            progress.note(f"skipped {video.name}: {reason}")
            progress.update(failed=True)
            continue
        batcher.add(cut.clips)
        count, cut.clips = len(cut.clips), None  # the clips are the batcher's now
        done.append((_describe(video, features), count, cut))
        progress.update(failed=False, items=count)
    outputs = batcher.finish()
    features_out, rows, first = [], [], 0
    for described, count, cut in done:
        values = outputs[first:first + count]
        first += count
        video_rows, video_features = _rows(*described, cut, values, sampling)
        rows += video_rows
        features_out.append(video_features)
    dim = outputs.shape[1] if len(outputs) else 0
    return (np.concatenate(features_out) if features_out else np.zeros((0, dim), np.float32),
            rows, errors)


def _rows(name: str, label: str, cut: VideoClips, values: np.ndarray, sampling: Sampling):
    """Index rows and features of one video: one per (window, crop), the clips of a
    window averaged; with --clips, a last row holding the mean of all."""
    per_row = values.reshape(-1, cut.per_row, values.shape[-1])
    rows_features = per_row.astype(np.float64).mean(axis=1).astype(np.float32)
    crops = sampling.crops
    rows = [[name, label, w, c, f"{cut.starts_s[w]:.3f}", f"{cut.ends_s[w]:.3f}"]
            for w in range(len(cut.starts_s)) for c in range(crops)]
    if sampling.clips:
        mean = values.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)
        rows_features = np.concatenate([rows_features, mean])
        rows.append([name, label, MEAN, MEAN, f"{cut.starts_s.min():.3f}",
                     f"{cut.ends_s.max():.3f}"])
    return rows, rows_features


def _describe(video, features) -> tuple[str, str]:
    """(video, label) columns: a record's stored filename and class name (else index)."""
    name, label = video.name, video.label
    if "filename" in features:
        filename = features["filename"].numpy().decode("utf-8", "replace")
        name = f"{filename} ({video.name})" if filename else name
        text = features["label_text"].numpy().decode("utf-8", "replace")
        index = int(features["label"])
        label = text or (index if index >= 0 else None)
    return name, "" if label is None else str(label)


class _Batcher:
    """Clips in, features out in the same order, the model called on `batch_size`
    clips at a time (the last batch smaller)."""

    def __init__(self, forward, batch_size: int):
        self.forward, self.batch_size = forward, batch_size
        self.pending, self.outputs = [], []

    def add(self, clips: np.ndarray) -> None:
        self.pending.extend(clips)
        while len(self.pending) >= self.batch_size:
            self._run(self.batch_size)

    def _run(self, count: int) -> None:
        batch = np.stack(self.pending[:count])
        del self.pending[:count]
        self.outputs.append(np.asarray(self.forward(tf.constant(batch)), np.float32))

    def finish(self) -> np.ndarray:
        if self.pending:
            self._run(len(self.pending))
        return np.concatenate(self.outputs) if self.outputs else np.zeros((0, 0), np.float32)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
