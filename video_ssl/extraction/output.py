"""The OUT/ folder of an extraction, written in chunks and resumable.

While it runs, OUT/.partial/ holds `settings.json` (what the run was asked for) and
one `chunk-NNNNN.npz` per finished chunk of videos (features, index rows, errors),
each written under a temporary name and renamed when complete. A re-run with the same
settings skips the chunks that exist; one with other settings is refused. When every
chunk is there the final files are assembled, each atomically: `features.npy` (rows x
D), `index.csv`, `errors.txt`, then `meta.json` last (its presence means OUT is
complete), and .partial/ is removed. Chunks hold whole videos and the model sees the
same batches either way, so a resumed run's files are byte for byte an
uninterrupted run's.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil

import numpy as np

from video_ssl import atomic

PARTIAL = ".partial"
INDEX_COLUMNS = ("row", "video", "label", "clip", "crop", "start_s", "end_s")


class OutputError(ValueError):
    """OUT holds another extraction, or nothing could be extracted."""


class ChunkedOutput:
    def __init__(self, directory: str, settings: dict):
        self.directory = directory
        self.partial = os.path.join(directory, PARTIAL)
        self.settings = json.loads(json.dumps(settings, default=str))  # as stored
        meta = self._read(os.path.join(directory, "meta.json"))
        if meta is not None:
            self._check(meta.get("settings"), os.path.join(directory, "meta.json"))
        self.complete = meta is not None
        if self.complete:
            shutil.rmtree(self.partial, ignore_errors=True)  # left by a kill after meta.json
            return
        os.makedirs(self.partial, exist_ok=True)
        settings_path = os.path.join(self.partial, "settings.json")
        stored = self._read(settings_path)
        if stored is None:
            atomic.write_text(settings_path, json.dumps(self.settings, indent=1, sort_keys=True))
        else:
            self._check(stored, settings_path)

    @staticmethod
    def _read(path: str) -> dict | None:
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _check(self, stored: dict | None, path: str) -> None:
        if stored != self.settings:
            changed = sorted(k for k in set(self.settings) | set(stored or {})
                             if (stored or {}).get(k) != self.settings.get(k))
            raise OutputError(f"{path}: --output holds an extraction with other settings "
                              f"({', '.join(changed)} differ); rerun with the same flags to "
                              "resume it, or choose another --output")

    def _chunk_path(self, index: int) -> str:
        return os.path.join(self.partial, f"chunk-{index:05d}.npz")

    def has_chunk(self, index: int) -> bool:
        return os.path.exists(self._chunk_path(index))

    def write_chunk(self, index: int, features: np.ndarray, rows: list[list],
                    errors: list[tuple[str, str]]) -> None:
        """features (rows, D) float32; rows: INDEX_COLUMNS without "row"; errors:
        (video, reason)."""
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, features=features, rows=np.array(json.dumps(rows)),
                         errors=np.array(json.dumps(errors)))
        atomic.write_file(self._chunk_path(index), write)

    def _chunks(self, count: int):
        for index in range(count):
            with np.load(self._chunk_path(index)) as chunk:
                yield (chunk["features"], json.loads(str(chunk["rows"])),
                       json.loads(str(chunk["errors"])))

    def finish(self, num_chunks: int, dtype: str, meta: dict) -> dict:
        """Assembles the final files from the chunks; returns meta.json's content."""
        shapes = [chunk[0].shape for chunk in self._chunks(num_chunks)]
        dims = {shape[1] for shape in shapes if shape[0]}
        if not dims:
            raise OutputError(f"{self.partial}: no features: none of the videos could be "
                              "read (see the errors above)")
        total = sum(shape[0] for shape in shapes)
        index, errors = io.StringIO(newline=""), []
        writer = csv.writer(index, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)

        def write_features(tmp):
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype,
                                              shape=(total, dims.pop()))
            row = 0
            for features, rows, chunk_errors in self._chunks(num_chunks):
                if len(features):  # a chunk whose videos all failed has no columns
                    array[row:row + len(features)] = features
                writer.writerows([row + i, *r] for i, r in enumerate(rows))
                errors.extend(chunk_errors)
                row += len(features)
            array.flush()
            del array

        atomic.write_file(os.path.join(self.directory, "features.npy"), write_features)
        atomic.write_text(os.path.join(self.directory, "index.csv"), index.getvalue())
        atomic.write_text(os.path.join(self.directory, "errors.txt"),
                          "".join(f"{name}\t{reason}\n" for name, reason in errors))
        meta = {**meta, "rows": total, "failed": len(errors), "settings": self.settings}
        atomic.write_text(os.path.join(self.directory, "meta.json"),
                          json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
        shutil.rmtree(self.partial)
        return meta
