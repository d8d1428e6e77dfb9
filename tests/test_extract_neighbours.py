"""`python -m video_ssl.extract --neighbours=K`: OUT/neighbours.png of the query
videos' nearest videos (cosine of the per-video features), from video files or shards,
after a fresh or an already complete run."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from helpers import run_main, shard_pattern, write_shards
from test_extract import _tiny_run, media  # noqa: F401 (media: the module's fixture)
from video_ssl import extract
from video_ssl.data import contact_sheet
from video_ssl.extraction import neighbours

PAD, SIDE = contact_sheet.PAD, neighbours.THUMBNAIL
CELL_HEIGHT = SIDE + neighbours.CAPTION_LINES * contact_sheet.CAPTION_LINE


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _tiny_run(str(tmp_path_factory.mktemp("runs") / "moco"))


def _sheet(out):
    return np.asarray(Image.open(os.path.join(out, "neighbours.png")).convert("RGB"))


def _cell(sheet, row, column):
    y, x = PAD + row * (CELL_HEIGHT + PAD), PAD + column * (SIDE + PAD)
    return sheet[y:y + CELL_HEIGHT, x:x + SIDE]


def _numpy_top_k(out, k):
    """Each video's `mean` row of features.npy, cosine top-k of the others, per video."""
    with open(os.path.join(out, "index.csv")) as f:
        rows = [int(r["row"]) for r in csv.DictReader(f) if r["clip"] == "mean"]
    x = np.load(os.path.join(out, "features.npy"))[rows].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -2)
    return np.argsort(-similarity, axis=1)[:, :k]


@pytest.mark.slow
def test_sheet_of_files_neighbours_in_cosine_order(tmp_path, run_dir, media):  # noqa: F811
    out = str(tmp_path / "out")
    argv = [f"--model={run_dir}", f"--input={media}", f"--output={out}", "--clips=2"]
    code, _, err = run_main(extract, argv + ["--neighbours=2"])
    assert code == 0, err
    names, labels, features, _ = neighbours.video_features(out)
    assert names == ["cycling/bikes.mp4", "cycling/demo.gif", "film/bunny.mp4",
                     "film/demo.webm"]  # film/broken.mp4 failed
    queries = neighbours.query_indices(len(names))
    assert list(queries) == [0, 1, 2, 3]
    order, similarity = neighbours.nearest(features, queries, 2)
    np.testing.assert_array_equal(order, _numpy_top_k(out, 2)[queries])
    assert np.all(np.diff(similarity, axis=1) <= 0)
    # 4 query rows of the query and 2 neighbours.
    sheet = _sheet(out)
    assert sheet.shape == (PAD + 4 * (CELL_HEIGHT + PAD), PAD + 3 * (SIDE + PAD), 3)
    for row, query in enumerate(queries):
        assert tuple(_cell(sheet, row, 0)[0, 0]) == contact_sheet.QUERY
        assert _cell(sheet, row, 0)[10:SIDE - 10, 10:SIDE - 10].std() > 5  # a frame, not dark
        for column, index in enumerate(order[row], 1):
            colour = (contact_sheet.HIT if labels[index] == labels[query]
                      else contact_sheet.MISS)
            assert tuple(_cell(sheet, row, column)[0, 0]) == colour
    assert not [f for f in os.listdir(out) if ".tmp" in f]

    # An already complete OUT: the sheet is drawn again from its files.
    code, _, err = run_main(extract, argv + ["--neighbours=1"])
    assert code == 0 and "already complete" in err, err
    assert _sheet(out).shape == (PAD + 4 * (CELL_HEIGHT + PAD), PAD + 2 * (SIDE + PAD), 3)


@pytest.mark.slow
def test_sheet_of_shards_shows_each_videos_middle_frame(tmp_path, run_dir):
    """Windows (no mean row): a video's feature is the mean of its rows; frames come
    from the records, the middle one of the video's windows (green = 8 x frame)."""
    pattern = shard_pattern(write_shards(tmp_path / "tiny", [0, 1, 0], num_frames=40,
                                         class_names=["a", "b"]))
    out = str(tmp_path / "out")
    code, _, err = run_main(extract, [f"--model={run_dir}", f"--input={pattern}",
                                      f"--output={out}", "--stride_s=0.25",
                                      "--neighbours=5"])
    assert code == 0, err
    _, labels, features, spans = neighbours.video_features(out)
    assert labels == ["a", "b", "a"]
    with open(os.path.join(out, "index.csv")) as f:
        rows = list(csv.DictReader(f))
    x = np.load(os.path.join(out, "features.npy"))
    first = [r for r in rows if r["video"].endswith("#0)")]
    assert len(first) > 1
    np.testing.assert_allclose(features[0], x[[int(r["row"]) for r in first]].mean(0),
                               rtol=1e-6)
    sheet = _sheet(out)  # K=5 is cut to the 2 other videos
    assert sheet.shape == (PAD + 3 * (CELL_HEIGHT + PAD), PAD + 3 * (SIDE + PAD), 3)
    middle = int((spans[0, 0] + spans[0, 1]) / 2 * 25)
    green = _cell(sheet, 0, 0)[SIDE // 2, SIDE // 2, 1]
    assert abs(int(green) - 8 * middle) <= 3, (green, middle)


def test_neighbours_flag_must_not_be_negative():
    with pytest.raises(SystemExit):
        extract.parse_flags(["--model=m", "--input=i", "--output=o", "--neighbours=-1"])
