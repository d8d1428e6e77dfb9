"""`--neighbours=K`: OUT/neighbours.png, a sheet of some query videos' K nearest
other videos by cosine similarity of their per-video features, so a user can look at
what the features capture.

Read from the finished OUT/ alone (features.npy, index.csv, meta.json's input), so it
works as well after a resumed or an earlier run. A video's feature is its `mean` row
(`--clips`), else the mean of its rows (windows, crops). Up to QUERIES queries, evenly
spread over the videos in index order; each sheet row is the query's middle frame then
its neighbours' middle frames, nearest first, each with its name and similarity under
it, framed green when its label is the query's, red when another (grey when either is
unknown). A frame that cannot be read is left dark; the sheet is still written.
"""
from __future__ import annotations

import csv
import json
import os
import re

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image

from video_ssl import atomic
from video_ssl.data import contact_sheet, reader, schema, video_files
from video_ssl.data.video_list import list_inputs
from video_ssl.extraction.inputs import is_shard_pattern

QUERIES = 8
THUMBNAIL = 112  # pixels, the side of each frame (as evaluation's sheet)
UNKNOWN = (150, 150, 150)  # frame colour when a label is missing
CAPTION_LINES = 2  # name, similarity


def video_features(output: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(names, labels, features (videos, D) float32, (videos, 2) [start, end] seconds)
    of the videos in OUT/index.csv, in its order."""
    with open(os.path.join(output, "index.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    features = np.load(os.path.join(output, "features.npy"), mmap_mode="r")  # read per video
    names, groups = [], {}
    for row in rows:
        if row["video"] not in groups:
            names.append(row["video"])
            groups[row["video"]] = []
        groups[row["video"]].append(row)
    labels, means, spans = [], [], []
    for name in names:
        mine = groups[name]
        means_rows = [int(r["row"]) for r in mine if r["clip"] == "mean"]
        chosen = means_rows or [int(r["row"]) for r in mine]
        means.append(features[chosen].astype(np.float64).mean(axis=0))
        labels.append(mine[0]["label"])
        spans.append((min(float(r["start_s"]) for r in mine),
                      max(float(r["end_s"]) for r in mine)))
    dim = features.shape[1] if features.ndim == 2 else 0
    return (names, labels, np.array(means, np.float32).reshape(-1, dim),
            np.array(spans, np.float64).reshape(-1, 2))


def query_indices(num_videos: int, count: int = QUERIES) -> np.ndarray:
    """Up to `count` videos evenly spread from the first to the last."""
    return np.unique(np.round(np.linspace(0, num_videos - 1, min(count, num_videos)))
                     .astype(np.int64))


def nearest(features: np.ndarray, queries: np.ndarray, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), each (queries, k): the k videos of highest cosine
    similarity to each query, the query itself excluded, nearest first (ties: the
    lower index). A zero feature has similarity 0 to all."""
    x = np.asarray(features, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    similarity = x[queries] @ x.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def save_sheet(output: str, k: int) -> tuple[int, int]:
    """Writes OUT/neighbours.png for the finished extraction in `output` (atomically);
    returns its (width, height)."""
    names, labels, features, spans = video_features(output)
    if len(names) < 2:
        raise ValueError(f"--neighbours={k}: {output} holds {len(names)} video; neighbours "
                         "need at least 2")
    k = min(k, len(names) - 1)
    queries = query_indices(len(names))
    indices, similarities = nearest(features, queries, k)
    with open(os.path.join(output, "meta.json")) as f:
        frames = _FrameReader(json.load(f)["input"])
    rows = []
    for query, row, sims in zip(queries, indices, similarities):
        cells = [_cell(frames(names[query], spans[query]), contact_sheet.QUERY,
                       names[query], "query")]
        for index, sim in zip(row, sims):
            known = labels[query] and labels[index]
            colour = (UNKNOWN if not known else contact_sheet.HIT
                      if labels[index] == labels[query] else contact_sheet.MISS)
            cells.append(_cell(frames(names[index], spans[index]), colour, names[index],
                               f"{sim:.3f}"))
        rows.append(np.stack(cells))
    sheet = Image.fromarray(contact_sheet.tile(rows))
    atomic.write_file(os.path.join(output, "neighbours.png"),
                      lambda path: sheet.save(path, format="PNG"))
    return sheet.size


def _cell(frame: np.ndarray | None, colour, name: str, note: str) -> np.ndarray:
    if frame is None:
        frame = np.zeros((THUMBNAIL, THUMBNAIL, 3), np.uint8)
    return contact_sheet.captioned(contact_sheet.framed(frame, colour), [name, note])


def _square(rgb: np.ndarray) -> np.ndarray:
    """The centre square of a frame, THUMBNAIL pixels a side."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return cv2.resize(np.ascontiguousarray(rgb[top:top + side, left:left + side]),
                      (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)


class _FrameReader:
    """(index.csv's video name, [start, end] s) -> the middle frame of that span
    (THUMBNAIL², uint8 RGB) from the extraction's input, or None when it cannot be
    read: files of a class folder or CSV (named as `list_inputs` names them) or
    records of shards (named `SHARD#RECORD`, after the stored file name if any)."""

    def __init__(self, input_path: str):
        self.shards = is_shard_pattern(input_path)
        try:
            if self.shards:
                self.files = {os.path.basename(p): p for p in reader.match_files(input_path)}
            else:
                self.files = {e.name: e for e in list_inputs(input_path)[0]}
        except Exception:  # noqa: BLE001 -- the input moved since: dark frames, names kept
            self.files = {}

    def __call__(self, name: str, span: np.ndarray) -> np.ndarray | None:
        middle = float(span[0] + span[1]) / 2
        try:
            return _square(self._shard_frame(name, middle) if self.shards
                           else self._file_frame(name, middle))
        except Exception:  # noqa: BLE001 -- a frame that cannot be read stays dark
            return None

    def _file_frame(self, name: str, middle: float) -> np.ndarray:
        entry = self.files[name]
        return next(video_files.iter_frames(entry.path, short_side=THUMBNAIL,
                                            start=entry.start + middle))

    def _shard_frame(self, name: str, middle: float) -> np.ndarray:
        shard, index = re.fullmatch(r"(?:.* \()?(.+)#(\d+)\)?", name).groups()
        record = next(iter(tf.data.TFRecordDataset(self.files[shard]).skip(int(index))))
        parsed = schema.parse_sequence_example(record)
        frames = parsed["frames"]
        position = min(int(middle * float(parsed["frame_rate"])), len(frames) - 1)
        return tf.io.decode_jpeg(frames[position], channels=3).numpy()
