"""The videos of a class folder or a CSV, in a fixed order: what `videos_to_tfrecords`
converts and `video_ssl.extract` embeds.

- a class folder `DIR/<class>/<video>`: every file in a class folder is tried as a
  video (FFmpeg opens far more containers than any list of extensions) except hidden
  files and extensions of other kinds of file (NOT_VIDEO_EXTENSIONS); those, and files
  outside a class folder, come back as `Ignored` with why;
- a CSV `path,label[,start,end[,source_id]]` (UTF-8; relative paths are relative to
  the CSV; an optional header row naming the columns gives their order).

No TensorFlow here.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import NamedTuple

from video_ssl.console import printable

# Files in class folders that are not tried as videos: text, images, audio-only,
# archives, data. Anything else is tried; what does not open as video is `failed`.
NOT_VIDEO_EXTENSIONS = frozenset("""
    .txt .md .rst .csv .tsv .json .jsonl .xml .yaml .yml .html .htm .pdf .doc .docx .rtf
    .odt .log .ini .cfg .nfo .srt .vtt .ass .ssa .sub .idx .sbv
    .jpg .jpeg .png .bmp .tif .tiff .webp .heic .svg .ico .psd
    .wav .mp3 .flac .aac .m4a .opus .wma .aif .aiff .ac3 .wv .mka .mid
    .zip .tar .gz .tgz .bz2 .xz .7z .rar .py .sh .npy .npz .pkl .h5 .tfrecord
    .md5 .sha1 .sha256 .db .part .crdownload .tmp""".split())
# A CSV's columns, in the order they are read without a header naming them.
CSV_COLUMNS = ("path", "label", "start", "end", "source_id")


class ListingError(ValueError):
    """The input cannot be listed; the message names the file (and line) and what was
    expected."""


class Ignored(NamedTuple):
    """A file of a class folder not tried as a video, and why."""
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One input video (or segment of one); `name` is what goes in `video/filename`."""
    name: str
    path: str
    label: str | int | None = None  # class name, index, or unlabeled
    start: float = 0.0
    end: float | None = None
    notes: tuple[str, ...] = ()  # warnings found while listing
    source_id: str = ""  # the video it was cut from; "" for its own file (`source_id`)


def list_folder(root: Path) -> tuple[list[VideoEntry], list[Ignored]]:
    """Files under `root/<class name>/` (recursively), labelled by their class folder,
    and the files not tried, with why. Symbolic links are followed, each folder once."""
    entries, ignored, seen = [], [], set()

    def ignore(path: str, why: str):
        ignored.append(Ignored(printable(os.path.relpath(path, root)), why))

    for folder, dirs, files in os.walk(root, followlinks=True,
                                       onerror=lambda e: ignore(e.filename, e.strerror)):
        real = os.path.realpath(folder)
        if real in seen:
            ignore(folder, f"folder already listed as {os.path.relpath(real, root)}")
            dirs[:] = []
            continue
        seen.add(real)
        for d in sorted(d for d in dirs if d.startswith(".")):
            ignore(os.path.join(folder, d), "hidden folder, not searched")
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file_name in sorted(files):
            path = Path(folder, file_name)
            why = _not_a_video(path, at_root=Path(folder) == root)
            if why:
                ignore(str(path), why)
                continue
            relative = path.relative_to(root).as_posix()
            name = printable(relative)
            notes = (() if name == relative else
                     (f"file name is not valid UTF-8; stored as video/filename {name}",))
            entries.append(VideoEntry(name, str(path), printable(relative.split("/")[0]),
                                      notes=notes))
    return entries, ignored


def _not_a_video(path: Path, at_root: bool) -> str | None:
    """Why a file in the input folder is not tried as a video, or None."""
    if path.name.startswith("."):
        return "hidden file"
    if at_root:
        return "not in a class folder (expected DIR/<class>/<video>)"
    if path.suffix.lower() in NOT_VIDEO_EXTENSIONS:
        return f"not a video file ({path.suffix.lower()})"
    if not path.is_file():
        return "not a regular file (a broken link?)"
    return None


def list_csv(csv_path: Path) -> list[VideoEntry]:
    """Rows `path,label[,start,end[,source_id]]` of a CSV; a first row starting with `path`
    is a header, which gives the columns' order when it names CSV_COLUMNS only."""
    data = csv_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (as Excel writes) is dropped
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ListingError(f"{csv_path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                        "save the CSV as UTF-8") from None
    entries, columns = [], CSV_COLUMNS
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            row = [c.strip() for c in row]
            if reader.line_num == 1 and row and row[0].lower() == "path":
                named = [c.lower() for c in row]
                if set(named) <= set(CSV_COLUMNS) and len(set(named)) == len(named):
                    columns = tuple(named)
                continue
            entry = _csv_entry(csv_path, reader.line_num, row, columns)
            if entry:
                entries.append(entry)
    except csv.Error as e:
        raise ListingError(f"{csv_path}:{reader.line_num}: {e}") from None
    return entries


def _csv_entry(csv_path: Path, line: int, row: list[str],
               columns: tuple[str, ...]) -> VideoEntry | None:
    if not row or not any(row):
        return None
    if len(row) > len(columns):
        expected = ("path,label[,start,end[,source_id]]" if columns == CSV_COLUMNS
                    else ",".join(columns))
        raise ListingError(f"{csv_path}:{line}: expected {expected}, got {row}")
    cells = dict(zip(columns, row))
    path, label, start, end = (cells.get(c, "") for c in CSV_COLUMNS[:4])
    try:
        start_s = float(start) if start else 0.0
        end_s = float(end) if end else None
    except ValueError:
        start_s = -1.0
    if start_s < 0 or (end_s is not None and end_s <= start_s):
        raise ListingError(f"{csv_path}:{line}: expected seconds 0 <= start < end, "
                        f"got start={start!r}, end={end!r}")
    name = path + (f"#t={start_s:g},{end_s:g}" if end_s is not None
                   else f"#t={start_s:g}" if start_s else "")
    full = Path(path) if Path(path).is_absolute() else csv_path.parent / path
    return VideoEntry(name, str(full), _parse_label(label), start_s, end_s,
                      source_id=cells.get("source_id", ""))


def _parse_label(text: str) -> str | int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def list_inputs(input_path: str) -> tuple[list[VideoEntry], list[Ignored]]:
    """The sorted input list of a class folder or a CSV, and the files not tried;
    errors if missing or empty."""
    path = Path(input_path)
    if not path.exists():
        raise ListingError(f"--input {input_path}: no such file or folder")
    entries, ignored = list_folder(path) if path.is_dir() else (list_csv(path), [])
    if not entries:
        what = (f"no videos in class subfolders (expected DIR/<class>/<video>; "
                f"{len(ignored)} files ignored)" if path.is_dir()
                else "no rows (expected path,label[,start,end])")
        raise ListingError(f"--input {input_path}: {what}")
    return sorted(entries, key=lambda e: (e.name, e.path, e.start)), ignored
