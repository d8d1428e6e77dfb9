"""What every evaluation protocol receives (`EvalData`: the labeled splits and how to
cut clips from them) and returns (`Result`), and the classification metrics they share.

Every dataset built here fails with a message naming its split when a video has no
label (-1, i.e. no clip/label/index) or, when the protocol knows its class count, a
label out of range: no protocol can score unlabeled videos.

Labels: the input pipeline gives each clip its video's first `clip/label/index`.
Multi-label protocols (AudioSet) need every label: `EvalData.label_sets` reads them
per video in evaluation order, and `EvalData.train(label_sets=...)` zips them with
the training clips (see there).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Sequence

import gin
import keras
import numpy as np
import tensorflow as tf

from video_ssl.data import crops, reader, schema
from video_ssl.data.pipeline import make_dataset
from video_ssl.data.reader import count_records
from video_ssl.evaluation.figures import spectrogram_image

# Training clips of several shards mixed (`EvalData.train(label_sets=...)`) are
# shuffled in a buffer of this many batches.
MIXED_SHUFFLE_BATCHES = 4


@dataclasses.dataclass
class Result:
    """metrics: the numbers (JSON-able). settings: the protocol's hyper-parameters.
    scores/labels: per-video test scores (videos, classes) and true labels ((videos,)
    class indices, or (videos, classes) multi-hot for multi-label protocols).
    confusion: (classes, classes) counts, rows = true class. model: backbone +
    classifier (linear probe, fine-tuning). neighbours: retrieval examples, one dict
    per example query: "query" (test index), "label", "neighbours" (train indices,
    nearest first), "neighbour_labels". arrays: further per-video data to save, {file
    stem: {key: array}} (one .npz each), e.g. retrieval's features and similarities."""
    metrics: dict
    settings: dict
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    confusion: np.ndarray | None = None
    model: keras.Model | None = None
    neighbours: list[dict] | None = None
    arrays: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


def _with_window_stride(options: dict) -> dict:
    """`window_overlap` (a fraction of the clip's span, CoCLR: 0.5) -> the pipeline's
    `eval_window_stride` in stored frames, so a config's dense windows follow the
    clip shape (e.g. when the demo overlay shrinks clips)."""
    options = dict(options)
    overlap = options.pop("window_overlap", None)
    if overlap is not None:
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"window_overlap={overlap}: expected a fraction in [0, 1)")
        if options.get("target_fps"):
            # The window stride counts stored frames, whose rate varies per video.
            raise ValueError(f"window_overlap={overlap} with target_fps="
                             f"{options['target_fps']}: expected one of them; bind "
                             "eval_window_stride (stored frames) instead")
        span = options.get("num_frames", 8) * options.get("frame_stride", 8)
        options["eval_window_stride"] = max(1.0, span * (1.0 - overlap))
    return options


@dataclasses.dataclass
class EvalData:
    """The labeled splits a protocol reads and how clips are cut from them.

    train_input / test_input / gallery_input: `make_dataset` keyword arguments (clip
    shape, normalization, augmentation, views) for augmented training clips, the test
    views and the retrieval gallery's views (train videos); `window_overlap` may stand
    for `eval_window_stride`; an "audio" `AudioSpec` gives the log-mel settings. key: the
    modality the backbone reads ("rgb", "flow" or "audio").
    train_source / test_source: how error messages name the splits (gin bindings).
    """
    train_files: Sequence[str]
    test_files: Sequence[str]
    train_input: dict = dataclasses.field(default_factory=dict)
    test_input: dict = dataclasses.field(default_factory=dict)
    gallery_input: dict = dataclasses.field(default_factory=dict)
    key: str = "rgb"
    batch_size: int = 32
    eval_batch_size: int = 4
    seed: int = 0
    train_source: str = "the train split"
    test_source: str = "the test split"

    @functools.cached_property
    def num_train_videos(self) -> int:
        return count_records(self.train_files)

    @functools.cached_property
    def num_test_videos(self) -> int:
        return count_records(self.test_files)

    def train(self, files: Sequence[str] | None = None, *, num_classes: int | None = None,
              label_sets: bool = False) -> tf.data.Dataset:
        """Augmented single clips of the train split (or of `files`), shuffled,
        repeated forever, `batch_size` per batch: {key: (B, 1, T, H, W, C), "label"}.

        label_sets (needs num_classes): add "labels" (B, num_classes) float32, the
        multi-hot of every `clip/label/index` of the clip's video. The pipeline carries
        one label per clip, so each shard is then read in record order by a pipeline of
        its own (no shuffle buffer), its labels zipped alongside from the same file; the
        shards are mixed at random in proportion to their videos and the clips shuffled
        in a buffer of MIXED_SHUFFLE_BATCHES batches. Every shard's pipeline is open at
        once: fine for a few hundred shards.
        """
        files = list(files or self.train_files)
        if not label_sets:
            ds = make_dataset(files, training=True, batch_size=self.batch_size,
                              modalities=(self.key,), seed=self.seed, **self.train_input)
            return self._checked(ds, self.train_source, num_classes)
        if num_classes is None:
            raise ValueError("EvalData.train: label_sets needs num_classes")
        streams, counts = [], []
        for index, path in enumerate(files):
            options = {**self.train_input, "shuffle_buffer": 1, "repeat": True,
                       "drop_remainder": False}
            clips = make_dataset([path], training=True, batch_size=1, modalities=(self.key,),
                                 seed=self.seed + 7919 * (index + 1), **options).unbatch()
            labels = tf.data.TFRecordDataset(path).map(
                functools.partial(_multi_hot, num_classes=num_classes,
                                  source=f"{self.train_source} ({path})")).repeat()
            streams.append(tf.data.Dataset.zip(clips, labels).map(functools.partial(
                _with_label_set, source=f"{self.train_source} ({path})")))
            counts.append(count_records([path]))
        if not sum(counts):
            raise ValueError(f"{self.train_source}: the shards hold no videos")
        weights = [c / sum(counts) for c in counts]
        ds = tf.data.Dataset.sample_from_datasets(
            [s for s, c in zip(streams, counts) if c],
            weights=[w for w, c in zip(weights, counts) if c], seed=self.seed)
        ds = ds.shuffle(MIXED_SHUFFLE_BATCHES * self.batch_size, seed=self.seed)
        ds = ds.batch(self.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        return self._checked(ds, self.train_source, num_classes)

    def videos(self, split: str) -> list[tuple[str, tuple[int, ...]]]:
        """(video/filename, every clip/label/index) of each video of `split` ("train" or
        "test"), in the order `gallery()` / `test()` yield them."""
        return [(name.decode("utf-8", "replace"), tuple(labels.tolist()))
                for name, labels in self._records(split).as_numpy_iterator()]

    def label_sets(self, split: str, num_classes: int) -> np.ndarray:
        """(videos, num_classes) float32 multi-hot of every clip/label/index of each video
        of `split`, in the order `gallery()` / `test()` yield them; an error naming the
        split when a label is outside [0, num_classes)."""
        source = self.train_source if split == "train" else self.test_source
        rows = []
        for position, (name, indices) in enumerate(self.videos(split)):
            if not indices or not all(0 <= i < num_classes for i in indices):
                raise ValueError(f"{source}: video {position} ({name or 'no video/filename'}) "
                                 f"has labels {list(indices)}; expected one or more in "
                                 f"[0, {num_classes})")
            rows.append(np.isin(np.arange(num_classes), indices).astype(np.float32))
        return np.stack(rows) if rows else np.zeros((0, num_classes), np.float32)

    def _records(self, split: str) -> tf.data.Dataset:
        """(filename, labels) per video of `split`, read as the pipeline reads them."""
        files = self.train_files if split == "train" else self.test_files
        context = {schema.FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
                   schema.LABEL_INDEX: tf.io.VarLenFeature(tf.int64)}

        def parse(serialized, shard):
            del shard
            parsed, _ = tf.io.parse_single_sequence_example(serialized, context)
            return parsed[schema.FILENAME], parsed[schema.LABEL_INDEX].values
        # The evaluation pipelines' own reading (`make_view_dataset`, training=False).
        return reader.read_examples(reader.match_files(list(files)), shuffle=False,
                                    seed=self.seed, deterministic=True).map(parse)

    def test(self, *, num_classes: int | None = None) -> tf.data.Dataset:
        """Every test video once, in file order, as its test views."""
        return self._views(self.test_files, self.test_input, self.test_source, num_classes)

    def gallery(self) -> tf.data.Dataset:
        """Every train video once, in file order, as its gallery views (retrieval)."""
        return self._views(self.train_files, self.gallery_input, self.train_source, None)

    def class_names(self, num_classes: int) -> list[str] | None:
        """Class names by label index, for figures: the converter's label map beside
        the train shards (`PREFIX.labels.txt` for `PREFIX-00000-of-000NN.tfrecord`),
        else the test videos' `clip/label/text` (read until every class has a name);
        None when neither names every class."""
        for path in sorted({re.sub(r"-\d{5}-of-\d{5}\.tfrecord$", ".labels.txt", f)
                            for f in self.train_files}):
            if path.endswith(".labels.txt") and tf.io.gfile.exists(path):
                with tf.io.gfile.GFile(path) as f:
                    names = [line.rstrip("\n") for line in f]
                if len(names) >= num_classes:
                    return names[:num_classes]
        context = {schema.LABEL_INDEX: tf.io.VarLenFeature(tf.int64),
                   schema.LABEL_TEXT: tf.io.FixedLenFeature([], tf.string, default_value="")}

        def label_and_text(serialized):
            parsed, _ = tf.io.parse_single_sequence_example(serialized, context)
            index = parsed[schema.LABEL_INDEX].values
            first = tf.cond(tf.size(index) > 0, lambda: index[0],
                            lambda: tf.constant(-1, tf.int64))
            return first, parsed[schema.LABEL_TEXT]
        names = {}
        for index, text in tf.data.TFRecordDataset(list(self.test_files)).map(label_and_text):
            index, text = int(index), text.numpy().decode("utf-8", "replace")
            if 0 <= index < num_classes and text:
                names.setdefault(index, text)
                if len(names) == num_classes:
                    return [names[i] for i in range(num_classes)]
        return None

    def first_frames(self, split: str, indices: Sequence[int], size: int = 112
                     ) -> dict[int, np.ndarray]:
        """{index: (size, size, 3) uint8}: the first RGB frame (centre crop) of the
        videos at `indices` in `split`'s ("train" or "test") evaluation order."""
        files = self.train_files if split == "train" else self.test_files
        # Clip 0 of two uniformly spaced one-frame clips starts the video.
        ds = make_dataset(list(files), training=False, batch_size=16, num_clips=2,
                          num_frames=1, frame_stride=1, crop_size=size, short_side=size,
                          seed=self.seed, normalize=False)
        wanted, frames, position = set(indices), {}, 0
        for batch in ds:
            for rgb in batch["rgb"].numpy():
                if position in wanted:
                    frames[position] = np.round(np.clip(rgb[0, 0], 0, 1) * 255).astype(np.uint8)
                position += 1
            if len(frames) == len(wanted):
                break
        return frames

    def thumbnails(self, split: str, indices: Sequence[int], size: int = 112
                   ) -> dict[int, np.ndarray]:
        """{index: (size, size, 3) uint8} picturing the videos at `indices` of `split`
        in evaluation order: the first RGB frame (`first_frames`), or, for an audio
        backbone, the log-mel of the video's first clip as the backbone hears it
        (`figures.spectrogram_image`; audio-only shards have no frames)."""
        if self.key != "audio":
            return self.first_frames(split, indices, size)
        files = self.train_files if split == "train" else self.test_files
        options = self.test_input if split == "test" else self.gallery_input
        clip = {k: options[k] for k in ("num_frames", "frame_stride", "target_fps", "audio")
                if k in options}
        ds = make_dataset(list(files), training=False, batch_size=16, num_clips=1,
                          modalities=("audio",), seed=self.seed, **clip)
        wanted, images, position = set(indices), {}, 0
        for batch in ds:
            for mel in batch["audio"].numpy():
                if position in wanted:
                    images[position] = spectrogram_image(mel[0, ..., 0], size)
                position += 1
            if len(images) == len(wanted):
                break
        return images

    def _views(self, files, options, source, num_classes) -> tf.data.Dataset:
        if options.get("eval_crops") == 10:
            _warn_if_ten_crops_coincide(files[0], options)
        ds = make_dataset(list(files), training=False, batch_size=self.eval_batch_size,
                          modalities=(self.key,), seed=self.seed,
                          **_with_window_stride(options))
        return self._checked(ds, source, num_classes)

    @staticmethod
    def _checked(ds: tf.data.Dataset, source: str, num_classes: int | None) -> tf.data.Dataset:
        def check(batch):
            label = batch["label"]
            checks = [tf.debugging.Assert(tf.reduce_all(label >= 0), [
                f"{source}: a video has no label (clip/label/index missing, read as -1); "
                "evaluation needs labeled shards"])]
            if num_classes is not None:
                checks.append(tf.debugging.Assert(tf.reduce_all(label < num_classes), [
                    f"{source}: a label is >= num_classes={num_classes}; expected labels in "
                    f"[0, {num_classes})"]))
            with tf.control_dependencies(checks):
                return {k: tf.identity(v) for k, v in batch.items()}
        return ds.map(check)


def _multi_hot(serialized, *, num_classes: int, source: str) -> tf.Tensor:
    """(num_classes,) float32 multi-hot of a record's clip/label/index."""
    parsed, _ = tf.io.parse_single_sequence_example(
        serialized, {schema.LABEL_INDEX: tf.io.VarLenFeature(tf.int64)})
    indices = parsed[schema.LABEL_INDEX].values
    check = tf.debugging.Assert(tf.reduce_all((indices >= 0) & (indices < num_classes)), [
        f"{source}: a label is outside [0, {num_classes}); expected labels in "
        f"[0, {num_classes})"])
    with tf.control_dependencies([check]):
        counts = tf.reduce_sum(tf.one_hot(indices, num_classes), axis=0)
        return tf.cast(counts > 0, tf.float32)


def _with_label_set(clip: dict, labels: tf.Tensor, *, source: str) -> dict:
    """The clip with its video's multi-hot "labels"; the clip's own (first) label must
    be among them, or clips and labels are not of the same videos."""
    first = tf.maximum(clip["label"], 0)
    check = tf.debugging.Assert(
        (clip["label"] < 0) | (tf.gather(labels, first) > 0),
        [f"{source}: the clips and their label sets are out of step"])
    with tf.control_dependencies([check]):
        return {**clip, "labels": tf.identity(labels)}


# The gin names of the protocols (`evaluate.protocol = @NAME`).
PROTOCOLS = ("linear_probe", "finetune", "retrieval", "linear_svm", "mlp_probe")


def check_protocol_bindings(gin_params: Sequence[str]) -> None:
    """Raises a ValueError naming the first command-line binding (`gin_params`) that
    sets an argument of another protocol than the bound `evaluate.protocol`, or of its
    optimizer spec (`<protocol>/OptimizerSpec.<field>`): it would do nothing. Gin files
    are not checked: the demo overlay sets every protocol's settings on purpose."""
    try:
        chosen = gin.query_parameter("evaluate.protocol").configurable.name
    except (ValueError, AttributeError):  # unset (evaluate says so) or not a reference
        return
    for param in gin_params:
        # The configurable and its scopes: [stream/][protocol/]name.argument
        names = [part.split(".", 1)[0] for part in param.split("=", 1)[0].strip().split("/")]
        if any(name in PROTOCOLS and name != chosen for name in names):
            raise ValueError(f"--gin_param={param}: has no effect, evaluate.protocol is "
                             f"@{chosen}; expected {chosen}.* bindings")


def require(value, binding: str):
    """`value`, or a ValueError naming the gin binding that must set it."""
    if value is None:
        raise ValueError(f"{binding} is not set; bind it in the gin config or with "
                         f"--gin_param={binding}=...")
    return value


def classification_metrics(scores: np.ndarray, labels: np.ndarray,
                           num_classes: int) -> tuple[dict, np.ndarray]:
    """Top-1, top-5 (top-k for fewer than 5 classes) and mean per-class accuracy of
    per-video scores (videos, classes), and the confusion matrix (rows: true class)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    ranked = np.argsort(-scores, axis=1, kind="stable")
    predictions = ranked[:, 0]
    top5 = (ranked[:, :min(5, num_classes)] == labels[:, None]).any(axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    present = confusion.sum(axis=1) > 0
    per_class = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    metrics = {"top1": float(np.mean(predictions == labels)), "top5": float(np.mean(top5)),
               "mean_class_accuracy": float(per_class.mean()), "num_videos": int(len(labels))}
    return metrics, confusion


def multilabel_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Multi-label metrics of per-video scores (videos, classes) against multi-hot labels
    (videos, classes): mAP, the mean over the classes with a positive video of the
    average precision (sklearn's, the AudioSet metric), and top-1, the fraction of
    videos whose highest-scored class is one of theirs."""
    from sklearn.metrics import average_precision_score

    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"multi-label metrics: expected scores and multi-hot labels of one "
                         f"shape (videos, classes), got {scores.shape} and {labels.shape}")
    present = labels.any(axis=0)
    precisions = [average_precision_score(labels[:, c], scores[:, c])
                  for c in np.flatnonzero(present)]
    top1 = labels[np.arange(len(labels)), np.argmax(scores, axis=1)]
    return {"mAP": float(np.mean(precisions)) if precisions else 0.0,
            "top1": float(np.mean(top1)), "num_videos": int(len(labels)),
            "num_classes_scored": int(present.sum())}


def score_metrics(scores: np.ndarray, labels: np.ndarray,
                  num_classes: int) -> tuple[dict, np.ndarray | None]:
    """(metrics, confusion) of per-video scores: `classification_metrics` for class
    indices (videos,), `multilabel_metrics` (no confusion matrix) for multi-hot labels
    (videos, classes)."""
    if np.ndim(labels) == 2:
        return multilabel_metrics(scores, labels), None
    return classification_metrics(scores, labels, num_classes)


def _warn_if_ten_crops_coincide(path: str, options: dict) -> None:
    """CoCLR's 10-crop test on frames no larger than the crop: the 5 positions are one,
    so the 10 views are 2 (unflipped, flipped). Said once, from the first video's size."""
    context = {schema.HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
               schema.WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0)}
    for serialized in tf.data.TFRecordDataset([path]).take(1):
        parsed, _ = tf.io.parse_single_sequence_example(serialized, context)
        height, width = int(parsed[schema.HEIGHT]), int(parsed[schema.WIDTH])
        if not height or not width:
            return
        crop_size = options.get("crop_size", 224)
        short_side = options.get("short_side") or round(crop_size * 8 / 7)
        boxes, _ = crops.ten_crop_boxes([height, width], crop_size=crop_size,
                                        short_side=short_side)
        if np.all(boxes.numpy()[:5] == boxes.numpy()[0]):
            print(f"evaluate: note: 10-crop test views of {path}'s {height}x{width} frames "
                  f"(crop {crop_size}, short side {short_side}): the 5 crop positions "
                  "coincide, so the 10 views are 2 distinct ones (unflipped and flipped)")
