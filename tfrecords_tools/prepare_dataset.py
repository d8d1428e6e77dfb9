"""The standard datasets, from their own split files, to TFRecord shards in one command.

    python -m tfrecords_tools.prepare_dataset --dataset=ucf101|hmdb51|kinetics|esc50 \
        --root=DIR --splits=DIR_OR_FILE --output=PREFIX [--split=1[,2,3]] \
        [--allow_missing [--allow_empty_classes]] [converter flags: --fps --short_side --jpeg_quality \
        --sample_rate --no_audio --num_shards --num_workers ...]

Each dataset's files are read as they are distributed, one reader per dataset:

- ucf101: --root holds the class folders (UCF-101/), --splits the folder of
  `classInd.txt`, `trainlist0N.txt` (`Class/v_..avi ID`) and `testlist0N.txt`. Labels
  are 0-based: classInd's 1-based id - 1. A train line whose id is not classInd's id
  of its folder is an error (a label off by one spoils every result).
- hmdb51: --root holds the class folders, --splits the 153 `<class>_test_split{1,2,3}.txt`
  (`video.avi ID`, ID 1 = train, 2 = test, 0 = unused). Labels: the sorted class names
  (HMDB51 ships no class index; CoCLR's own ClassInd.txt has another order, so its
  classifier heads' indices are not these).
- kinetics: --splits is an annotation CSV or a folder of them (`label,youtube_id,
  time_start,time_end,split,...`; Kinetics-400/600/700; a test CSV without `label` is
  written unlabeled), --root the downloaded videos, found anywhere below it by the
  downloaders' names: `<youtube_id>_<start:06d>_<end:06d>.<ext>` (a clip already cut to
  the segment: written up to the segment's length) or `<youtube_id>.<ext>` (the whole
  video: cut to [time_start, time_end]); a `path` or `filename` column names the file
  instead. Labels: the sorted class names (the order of DMVR and PySlowFast). Missing
  videos (YouTube takes videos down) are reported, never fatal.
- esc50: --splits is `meta/esc50.csv` (or its folder), --root the folder holding
  `audio/`. Audio only: records hold the waveform and no frames. Labels: the CSV's
  `target`. Each fold is written once (`PREFIX-fold{K}-*`); split K tests on fold K and
  trains on the others (`PREFIX-fold[!K]-*`).

Every record's `video/source_id` names the video its clip was cut from (records sharing
it are clips of one video: CoCLR's same-video positives): ucf101 the group
`<Class>_g<GG>` of `v_<Class>_g<GG>_c<CC>.avi` (each group's 4-7 clips were cut from one
YouTube video); kinetics the YouTube id; esc50 the `src_file` recording; hmdb51 the
file (its name below --root without the extension).

Written: `PREFIX-split{N}-train-*.tfrecord` and `-test-*` (ucf101, hmdb51),
`PREFIX-<split column>-*` (kinetics: train, val, test), `PREFIX-fold{K}-*` (esc50);
`PREFIX.labels.txt` (one class name per line in label order, the converter's label map,
refused when an earlier run wrote another); `PREFIX.counts.tsv` (videos written per
class and split, its first line saying where the labels come from; also printed);
`PREFIX.missing.txt` (`SPLIT<TAB>VIDEO<TAB>LISTED AT` for every listed video that is
not under --root; removed when none is); and per split the converter's
`PREFIX-<split>.errors.txt` and `PREFIX-<split>.list.tsv` (the videos it was given).

Checks before anything is written: a video in both the training and the test videos of
one split (for esc50: a source recording in two folds) is an error, and so is a video
listed twice; missing videos are an error for ucf101, hmdb51 and esc50 (whose archives
hold every video: a wrong --root or a broken extraction) unless --allow_missing, and
even then a class whose every listed video of a split is missing (the split's
classifier would never see it) is an error unless --allow_empty_classes (kinetics, whose
videos go missing on YouTube: a warning line). A class folder under --root spelled in
another case than the split files' class (`applyeyemakeup` for `ApplyEyeMakeup`) is
named as such in these messages.
The conversion is the converter's (`videos_to_tfrecords`): worker processes, shards
under temporary names, resumable re-runs (refused when a split's list of videos changed
since the run that wrote its shards, as they would mix two lists, and beside shards
holding other source ids, e.g. written before `video/source_id` existed), error report.

Exit status: 0 when done; 1 when a split has no readable video or the output cannot
be written; 2 for bad arguments or input. Fatal errors are one line
`prepare_dataset: error: ...` naming the file and line (--verbose shows the traceback).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import os
import re
import sys
from pathlib import Path

from tfrecords_tools import cli
from tfrecords_tools import videos_to_tfrecords as converter
from tfrecords_tools.cli import ToolError
from video_ssl.data import video_list

TOOL = "prepare_dataset"
DATASETS = ("ucf101", "hmdb51", "kinetics", "esc50")


@dataclasses.dataclass(frozen=True)
class Listed:
    """One video a split file names."""
    name: str  # what goes in `video/filename`: the path below --root (+ #t= when cut)
    path: str | None  # the file, None when it is missing
    label: int | None
    where: str  # FILE:LINE of the split file, for messages
    key: str  # identifies the video for the overlap check (the same video, another segment)
    start: float = 0.0
    end: float | None = None
    source_id: str = ""  # `video/source_id`; "" for the converter's default (its file)


@dataclasses.dataclass
class Dataset:
    """What a reader found: classes in label order and the videos of every split."""
    classes: list[str]
    splits: dict[str, list[Listed]]  # "split1-train" -> videos, in split-file order
    disjoint: list[tuple[str, ...]]  # splits that must share no video (train and test of one)
    label_origin: str  # where the label indices come from, for PREFIX.counts.tsv
    key_what: str = "video"  # what Listed.key is, for the overlap message
    missing_fatal: bool = True  # False for Kinetics, whose videos disappear from YouTube
    classes_from: str = "the split files"  # where the class names come from, for messages
    audio_only: bool = False


# --- readers, one per dataset -------------------------------------------------------

def _read_text(path: Path) -> str:
    """A split file's text (UTF-8, a BOM allowed), or a ToolError naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ToolError(f"--splits: {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ToolError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of a text split file's non-empty lines."""
    text = _read_text(path)
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _split_numbers(found: list[int], wanted: list[int] | None, what: str) -> list[int]:
    if not found:
        raise ToolError(f"--splits: no {what}")
    for n in wanted or []:
        if n not in found:
            raise ToolError(f"--split={n}: no such split ({what} has splits "
                            f"{','.join(map(str, found))})")
    return wanted or found


def _video(root: Path, name: str) -> str | None:
    path = root / name
    return str(path) if path.is_file() else None


def read_ucf101(splits: Path, root: Path, numbers: list[int] | None) -> Dataset:
    """classInd.txt, trainlist0N.txt and testlist0N.txt of ucfTrainTestlist/."""
    class_ind = splits / "classInd.txt"
    ids = {}
    for n, fields in _lines(class_ind):
        if len(fields) != 2 or not fields[0].isdigit():
            raise ToolError(f"{class_ind}:{n}: expected 'ID CLASS', got {' '.join(fields)!r}")
        ids[fields[1]] = int(fields[0])
    if sorted(ids.values()) != list(range(1, len(ids) + 1)):
        raise ToolError(f"{class_ind}: expected the ids 1..{len(ids)} once each")
    by_lower = {c.lower(): c for c in ids}
    found = sorted(int(m[1]) for p in splits.glob("trainlist*.txt")
                   if (m := re.fullmatch(r"trainlist0*(\d+)\.txt", p.name)))
    data = Dataset(classes=sorted(ids, key=ids.get), splits={}, disjoint=[],
                   label_origin="ucf101: label = classInd.txt id - 1 (0-based)",
                   classes_from=class_ind.name)
    for number in _split_numbers(found, numbers, f"trainlist0N.txt in {splits}"):
        for part in ("train", "test"):
            path = splits / f"{part}list{number:02d}.txt"
            listed = []
            for n, fields in _lines(path):
                where = f"{path}:{n}"
                name = fields[0].replace("\\", "/")
                folder = name.split("/")[0]
                # Folders match classInd.txt without case: the official files spell one
                # class both HandstandPushups and HandStandPushups.
                class_name = by_lower.get(folder.lower())
                if len(fields) > 2 or "/" not in name or class_name is None:
                    raise ToolError(f"{where}: expected 'CLASS/VIDEO.avi"
                                    f"{' ID' if part == 'train' else ''}' with CLASS in "
                                    f"{class_ind.name}, got {' '.join(fields)!r}")
                if len(fields) == 2 and fields[1] != str(ids[class_name]):
                    raise ToolError(f"{where}: class id {fields[1]} but {class_ind.name} gives "
                                    f"{class_name} the id {ids[class_name]}")
                listed.append(Listed(name, _video(root, name), ids[class_name] - 1, where, name,
                                     source_id=ucf101_group(name, where)))
            data.splits[f"split{number}-{part}"] = listed
        data.disjoint.append((f"split{number}-train", f"split{number}-test"))
    return data


def ucf101_group(name: str, where: str) -> str:
    """`<Class>_g<GG>` of `<Class>/v_<Class>_g<GG>_c<CC>.avi`: the YouTube video that
    group's clips were cut from (the official CoCLR code's video_source.json groups
    them so), or an error naming the split file's line."""
    match = re.fullmatch(r"v_(\w+_g\d+)_c\d+", Path(name).stem)
    if not match:
        raise ToolError(f"{where}: expected a UCF101 video name v_<Class>_g<GG>_c<CC>.avi "
                        f"(its group is its source video), got {name}")
    return match[1]


def read_hmdb51(splits: Path, root: Path, numbers: list[int] | None) -> Dataset:
    """The `<class>_test_split{N}.txt` files of testTrainMulti_7030_splits/."""
    files = {}
    for path in splits.glob("*_test_split*.txt") if splits.is_dir() else []:
        if m := re.fullmatch(r"(.+)_test_split(\d+)\.txt", path.name):
            files[m[1], int(m[2])] = path
    classes = sorted({c for c, _ in files})
    found = sorted({n for _, n in files})
    data = Dataset(classes=classes, splits={}, disjoint=[],
                   label_origin="hmdb51: label = index of the class in sorted class names")
    for number in _split_numbers(found, numbers, f"<class>_test_split<N>.txt in {splits}"):
        parts = {1: [], 2: []}
        for label, class_name in enumerate(classes):
            path = files.get((class_name, number))
            if path is None:
                raise ToolError(f"--splits: {splits / f'{class_name}_test_split{number}.txt'}: "
                                f"no such file (split {number} of class {class_name})")
            for n, fields in _lines(path):
                if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                    raise ToolError(f"{path}:{n}: expected 'VIDEO.avi 0|1|2' (0 unused, 1 train, "
                                    f"2 test), got {' '.join(fields)!r}")
                if fields[1] != "0":
                    name = f"{class_name}/{fields[0]}"
                    parts[int(fields[1])].append(
                        Listed(name, _video(root, name), label, f"{path}:{n}", name))
        data.splits[f"split{number}-train"] = parts[1]
        data.splits[f"split{number}-test"] = parts[2]
        data.disjoint.append((f"split{number}-train", f"split{number}-test"))
    return data


def read_kinetics(splits: Path, root: Path, numbers: list[int] | None) -> Dataset:
    """Kinetics annotation CSVs; videos looked up below --root by the downloaders' names."""
    if numbers:
        raise ToolError("--split: only for ucf101 and hmdb51 (kinetics writes every CSV given)")
    csvs = sorted(splits.glob("*.csv")) if splits.is_dir() else [splits]
    if not csvs:
        raise ToolError(f"--splits {splits}: no annotation CSV (*.csv)")
    index = _index_videos(root)
    rows = {path: _csv_rows(path, ("youtube_id", "time_start", "time_end")) for path in csvs}
    classes = sorted({row["label"] for r in rows.values() for _, row in r if row.get("label")})
    labels = {name: i for i, name in enumerate(classes)}
    data = Dataset(classes=classes, splits={}, disjoint=[],
                   label_origin="kinetics: label = index of the class in sorted class names",
                   key_what="YouTube video", missing_fatal=False)
    for path, path_rows in rows.items():
        for where, row in path_rows:
            split = row.get("split") or path.stem
            split = {"validate": "val", "validation": "val"}.get(split, split)
            if not re.fullmatch(r"\w+", split):
                raise ToolError(f"{where}: split {split!r} is not a name (letters, digits, _)")
            data.splits.setdefault(split, []).append(
                _kinetics_video(root, index, where, row, labels.get(row.get("label"))))
    order = {"train": 0, "val": 1, "test": 2}
    data.splits = dict(sorted(data.splits.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))
    data.disjoint.append(tuple(data.splits))
    return data


def _csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[str, dict]]:
    """(FILE:LINE, row) of a CSV with a header naming at least `required`."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [f.strip() for f in reader.fieldnames or []]
    missing = [c for c in required if c not in fields]
    if missing:
        raise ToolError(f"{path}:1: expected a header with the columns {','.join(required)}, "
                        f"got {','.join(fields) or 'nothing'}")
    reader.fieldnames = fields
    try:
        # Cells past the header's columns (key None) are dropped, missing ones are "".
        return [(f"{path}:{reader.line_num}",
                 {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)})
                for row in reader if any(row.values())]
    except csv.Error as e:
        raise ToolError(f"{path}:{reader.line_num}: {e}") from None


def _index_videos(root: Path) -> dict[str, str]:
    """File stem -> path below root of every file that may be a video (not hidden, not
    of a kind the converter never tries, such as .part downloads or .json info)."""
    if not root.is_dir():
        raise ToolError(f"--root {root}: no such folder")
    index = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if not name.startswith(".") and path.suffix.lower() not in \
                    video_list.NOT_VIDEO_EXTENSIONS:
                index.setdefault(path.stem, str(path))
    return index


def _kinetics_video(root: Path, index: dict[str, str], where: str, row: dict,
                    label: int | None) -> Listed:
    try:
        start, end = float(row["time_start"]), float(row["time_end"])
    except ValueError:
        start = end = -1.0
    if not 0 <= start < end:
        raise ToolError(f"{where}: expected seconds 0 <= time_start < time_end, got "
                        f"{row['time_start']!r}, {row['time_end']!r}")
    youtube_id = row["youtube_id"]
    clip = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
    named = row.get("path") or row.get("filename")
    if named:
        path = Path(named) if Path(named).is_absolute() else root / named
        path = str(path) if path.is_file() else None
    else:
        path = index.get(clip) or index.get(youtube_id)
    if path is None:
        return Listed(named or f"{clip}.mp4", None, label, where, youtube_id,
                      source_id=youtube_id)
    name = Path(os.path.relpath(path, root)).as_posix()
    if Path(path).stem == clip:  # already cut to the segment by the downloader
        return Listed(name, path, label, where, youtube_id, 0.0, end - start, youtube_id)
    return Listed(f"{name}#t={start:g},{end:g}", path, label, where, youtube_id, start, end,
                  youtube_id)


def read_esc50(splits: Path, root: Path, numbers: list[int] | None) -> Dataset:
    """meta/esc50.csv: filename,fold,target,category[,esc10,src_file,take]."""
    if numbers:
        raise ToolError("--split: only for ucf101 and hmdb51 (esc50 writes its 5 folds, "
                        "each once)")
    path = splits
    if splits.is_dir():
        path = next((c for c in (splits / "esc50.csv", splits / "meta" / "esc50.csv")
                     if c.is_file()), None)
        if path is None:
            raise ToolError(f"--splits {splits}: no esc50.csv or meta/esc50.csv in it")
    names, folds = {}, {}
    for where, row in _csv_rows(path, ("filename", "fold", "target", "category")):
        if not (row["fold"].isdigit() and row["target"].isdigit()):
            raise ToolError(f"{where}: expected integers fold and target, got "
                            f"{row['fold']!r}, {row['target']!r}")
        target, category = int(row["target"]), row["category"]
        if names.setdefault(target, category) != category:
            raise ToolError(f"{where}: target {target} is {category!r} here but "
                            f"{names[target]!r} earlier")
        name = f"audio/{row['filename']}"
        # Clips of one source recording share a fold: a leak otherwise.
        key = row.get("src_file") or row["filename"]
        folds.setdefault(f"fold{int(row['fold'])}", []).append(
            Listed(name, _video(root, name), target, where, key,
                   source_id=row.get("src_file", "")))
    if sorted(names) != list(range(len(names))):
        raise ToolError(f"{path}: expected the targets 0..{len(names) - 1}, got "
                        f"{sorted(names)}")
    return Dataset(classes=[names[t] for t in sorted(names)], splits=dict(sorted(folds.items())),
                   disjoint=[tuple(sorted(folds))], key_what="source recording (src_file)",
                   label_origin="esc50: label = esc50.csv target", audio_only=True)


READERS = {"ucf101": read_ucf101, "hmdb51": read_hmdb51, "kinetics": read_kinetics,
           "esc50": read_esc50}


# --- checks ------------------------------------------------------------------------

def check_overlaps(data: Dataset) -> None:
    """A video listed twice in one split, or in two splits that must be disjoint (the
    training and the test videos of one split), is an error naming both places."""
    for split, listed in data.splits.items():
        seen = {}
        for item in listed:
            if item.name in seen:
                raise ToolError(f"{item.where}: {item.name} is listed twice in {split} "
                                f"(also {seen[item.name]})")
            seen[item.name] = item.where
    for group in data.disjoint:
        first, clashes = {}, []
        for split in group:
            for item in data.splits[split]:
                other = first.setdefault(item.key, (split, item))
                if other[0] != split:
                    clashes.append((item, *other))
        if clashes:
            item, split, other = clashes[0]
            more = f"; {len(clashes)} such videos in all" if len(clashes) > 1 else ""
            raise ToolError(f"{item.where}: {item.name} is also in {split} ({other.where}): "
                            f"a {data.key_what} must not be in two of {', '.join(group)}{more}")


def case_hint(root: Path, data: Dataset, item: Listed) -> str | None:
    """For a missing video CLASS/VIDEO whose class folder is not under `root` but one
    spelled in another case is: "folder 'x' differs only in case from class 'X' in
    FILE" (case-sensitive file systems tell the two apart). None otherwise."""
    folder = item.name.split("/")[0]
    if "/" not in item.name or (root / folder).is_dir():
        return None
    try:
        other = next((entry for entry in sorted(os.listdir(root))
                      if entry.lower() == folder.lower() and (root / entry).is_dir()), None)
    except OSError:
        return None
    return (f"folder {other!r} differs only in case from class {folder!r} in "
            f"{data.classes_from}" if other else None)


def check_empty_classes(args, data: Dataset) -> None:
    """A class whose every video listed in a split is missing would be a class that
    split's classifier never sees: an error naming the split and the classes (and a
    folder spelled in another case, if that is why), unless --allow_empty_classes;
    for kinetics, whose videos go missing on YouTube, a warning line."""
    for split, listed in data.splits.items():
        present = {item.label for item in listed if item.path is not None}
        if not present:
            continue  # nothing of the split is there: not written (`_plan`)
        empty = {}
        for item in listed:
            if item.label is not None and item.label not in present | set(empty):
                empty[item.label] = case_hint(Path(args.root), data, item)
        if not empty:
            continue
        named = ", ".join(f"{data.classes[label]!r} (label {label}"
                          + (f": {hint}" if hint else "") + ")"
                          for label, hint in sorted(empty.items()))
        message = (f"{split}: every listed video of {len(empty)} class"
                   f"{'es' * (len(empty) > 1)} is missing under --root {args.root}: {named}")
        if not data.missing_fatal:
            print(f"warning: {message}")
        elif not args.allow_empty_classes:
            raise ToolError(f"{message}; the split's classifier would never see "
                            f"{'them' if len(empty) > 1 else 'it'} (--allow_empty_classes "
                            "converts the split anyway)")


def write_missing(prefix: str, data: Dataset) -> int:
    """PREFIX.missing.txt, one line per split and missing video; the number of missing
    videos (each counted once)."""
    lines = [f"{split}\t{item.name}\t{item.where}\n" for split, listed in data.splits.items()
             for item in listed if item.path is None]
    path = Path(prefix + ".missing.txt")
    if not lines:
        path.unlink(missing_ok=True)
        return 0
    _write_atomically(path, "".join(lines))
    return len({line.split("\t")[1] for line in lines})


def write_label_map(prefix: str, classes: list[str]) -> Path:
    """PREFIX.labels.txt, or an error when an earlier run wrote other classes (its shards'
    labels would then mean other classes)."""
    path = Path(prefix + ".labels.txt")
    text = "".join(c + "\n" for c in classes)
    if path.exists() and path.read_text(encoding="utf-8") != text:
        raise ToolError(f"{path}: holds other classes than these split files' "
                        f"{len(classes)}: written by another dataset or split files? Delete it "
                        "and the shards beside it, or use another --output")
    _write_atomically(path, text)
    return path


def check_list(prefix: str, entries: list[video_list.VideoEntry]) -> None:
    """PREFIX.list.tsv, the videos a split's shards hold; a re-run beside shards written
    from another list is refused: skipping its complete shards would mix the two lists."""
    path = Path(prefix + ".list.tsv")
    text = _list_text(entries)
    folder, base = os.path.split(prefix)
    shard = re.compile(re.escape(base) + r"-\d{5,}-of-\d{5,}\.tfrecord(\.tmp)?")
    earlier = [n for n in os.listdir(folder or ".") if shard.fullmatch(n)]
    if earlier and path.exists() and path.read_text(encoding="utf-8") != text:
        raise ToolError(f"{path}: the earlier run that wrote {prefix}-* had another list of "
                        "videos (videos added or removed since?); delete "
                        f"{prefix}-*.tfrecord* to convert this split again")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- the command --------------------------------------------------------------------

def _parse_args(argv):
    p = cli.ArgumentParser(TOOL, description="Convert UCF101, HMDB51, Kinetics or ESC-50, "
                           "from their own split files, to TFRecord shards.")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True, help="the folder of the videos (esc50: of audio/)")
    p.add_argument("--splits", required=True,
                   help="ucf101: ucfTrainTestlist/; hmdb51: the folder of the "
                        "<class>_test_split<N>.txt files; kinetics: an annotation CSV or a "
                        "folder of them; esc50: meta/esc50.csv")
    p.add_argument("--output", required=True,
                   help="prefix: PREFIX-split1-train-00000-of-000NN.tfrecord, ...")
    p.add_argument("--split", default="",
                   help="ucf101/hmdb51: the splits to write, e.g. 1 or 1,2,3 (default: all)")
    p.add_argument("--allow_missing", action="store_true",
                   help="ucf101/hmdb51/esc50: convert even when listed videos are missing "
                        "(kinetics always does; they are listed in PREFIX.missing.txt)")
    p.add_argument("--allow_empty_classes", action="store_true",
                   help="with --allow_missing: convert a split even when every listed video "
                        "of a class is missing (the class then has no video in that split)")
    converter.add_conversion_arguments(p)
    args = p.parse_args(argv)
    converter.check_conversion_arguments(p, args)
    try:
        args.split = sorted({int(n) for n in args.split.split(",") if n.strip()})
    except ValueError:
        p.error(f"--split: expected split numbers such as 1 or 1,2,3, got {args.split!r}")
    if args.dataset == "esc50" and (args.no_audio or args.flow):
        p.error(f"--{'no_audio' if args.no_audio else 'flow'}: esc50 is audio only")
    return args


def main(argv: list[str] | None = None) -> int:
    return cli.run(TOOL, _run, _parse_args(argv))


def _run(args) -> int:
    data = READERS[args.dataset](Path(args.splits), Path(args.root), args.split)
    check_overlaps(data)
    converter.make_output_folder(args.output)
    _report_missing(args, data)
    check_empty_classes(args, data)
    plans = _plan(args, data)  # every split checked before anything is converted
    write_label_map(args.output, data.classes)
    options, flow = converter.conversion_settings(args)
    if data.audio_only:
        options["audio_only"] = True
    written, unreadable = {}, []
    for split, prefix, entries, num_shards in plans:
        print(f"{split}: {len(entries)} videos -> {prefix}-*.tfrecord", flush=True)
        _write_atomically(Path(prefix + ".list.tsv"), _list_text(entries))
        num_workers = min(args.num_workers or os.cpu_count() or 1, len(entries))
        summary, report = converter.convert(entries, prefix, ignored=[], num_shards=num_shards,
                                            num_workers=num_workers, names=data.classes,
                                            options=options, flow=flow)
        print("\n".join("  " + line for line in summary.lines()))
        if report.path.exists():
            print(f"  {cli.printable(str(report.path))}: {report.counts()}")
        failed = {line.name for line in report.lines() if line.kind == "failed"}  # every run's
        written[split] = collections.Counter(e.label for e in entries if e.name not in failed)
        if len(failed) == len(entries):
            unreadable.append(split)
    table = counts_table(data, written)
    _write_atomically(Path(args.output + ".counts.tsv"), table)
    print(f"videos per class and split ({args.output}.counts.tsv):")
    print(_aligned(table))
    if unreadable:
        print(f"{TOOL}: error: no video of {', '.join(unreadable)} could be read (see "
              f"{args.output}-<split>.errors.txt)", file=sys.stderr)
        return 1
    return 0


def _report_missing(args, data: Dataset) -> None:
    """PREFIX.missing.txt and its count; an error where missing videos are fatal."""
    missing = write_missing(args.output, data)
    if not missing:
        return
    print(f"missing: {missing} of the videos the split files list are not under "
          f"{args.root} (listed in {args.output}.missing.txt)")
    if data.missing_fatal and not args.allow_missing:
        absent = [i for v in data.splits.values() for i in v if i.path is None]
        hint = next(filter(None, (case_hint(Path(args.root), data, i) for i in absent)), None)
        raise ToolError(f"{absent[0].where}: {absent[0].name}: no such file under --root "
                        f"{args.root} ({missing} missing, listed in "
                        f"{args.output}.missing.txt{'; ' + hint if hint else ''}; "
                        "--allow_missing converts the rest)")


def _plan(args, data: Dataset) -> list[tuple[str, str, list[video_list.VideoEntry], int]]:
    """(split, shard prefix, sorted converter entries, shard count) of every split with
    videos, after the converter's shard-count check and the list check."""
    plans = []
    for split, videos in data.splits.items():
        entries = sorted((video_list.VideoEntry(v.name, v.path, v.label, v.start, v.end,
                                               source_id=v.source_id)
                          for v in videos if v.path is not None),
                         key=lambda e: (e.name, e.path, e.start))  # as the converter sorts
        if not entries:
            print(f"{split}: none of its {len(videos)} videos is under {args.root}; not written")
            continue
        prefix = f"{args.output}-{split}"
        num_shards = args.num_shards or math.ceil(len(entries) / converter.VIDEOS_PER_SHARD)
        converter.check_shard_count(prefix, num_shards)
        check_list(prefix, entries)
        converter.check_source_ids(prefix, entries, num_shards)
        plans.append((split, prefix, entries, num_shards))
    if not plans:
        listed = sum(len(v) for v in data.splits.values())
        raise ToolError(f"--root {args.root}: none of the {listed} videos the split files "
                        "list is there")
    return plans


def _list_text(entries: list[video_list.VideoEntry]) -> str:
    return "".join(f"{e.name}\t{'' if e.label is None else e.label}\t{e.start:g}\t"
                   f"{'' if e.end is None else f'{e.end:g}'}\n" for e in entries)


def counts_table(data: Dataset, written: dict[str, collections.Counter]) -> str:
    """PREFIX.counts.tsv: a comment line on the labels' origin, a header, one row per
    class (and one for unlabeled videos, if any), and the totals."""
    splits = list(written)
    rows = [f"# {data.label_origin}; videos written per split\n",
            "\t".join(["label", "class"] + splits) + "\n"]
    labels = list(range(len(data.classes)))
    if any(None in c for c in written.values()):
        labels.append(None)
    for label in labels:
        name = "(unlabeled)" if label is None else data.classes[label]
        rows.append("\t".join(["-" if label is None else str(label), name]
                              + [str(written[s][label]) for s in splits]) + "\n")
    rows.append("\t".join(["-", "total"] + [str(sum(written[s].values())) for s in splits])
                + "\n")
    return "".join(rows)


def _aligned(table: str) -> str:
    lines = table.splitlines()
    cells = [line.split("\t") for line in lines[1:]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join([lines[0]] + ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                                   for row in cells])


if __name__ == "__main__":
    sys.exit(main())
