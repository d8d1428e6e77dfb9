"""The tf.data input pipeline: shards -> examples -> sampled, decoded, augmented views.

Stages, each public and usable on its own:

- `reader.match_files`, `reader.read_examples`, `reader.parse_example`: the shard
  list, (serialized SequenceExample, shard path) pairs, still-encoded features;
- `clips.sample_and_decode(features, seed, views, training=...)`: one dict per
  `views.ViewSpec` ("rgb", "flow", "audio" with a leading clip axis);
- `make_view_dataset(pattern, views, ...)`: the stages wired up, batched, prefetched;
- `make_dataset(...)` (contract): one view, output flattened to "rgb"/"flow"/"audio"/"label";
  iterating it in Python, a damaged record fails with an error naming its file and
  record (`reader.locate_damaged_record`), as the command-line tools say it.

Both raise `reader.DataPathError` when the input holds no record, rather than giving
no batch.

A method with several views builds its `ViewSpec`s and calls `make_view_dataset`;
batches then hold "views", a tuple of per-view dicts in the order given, "label" and
"video_id" (int64: the video each clip was cut from, `reader.video_id`; equal for
clips of one source video, e.g. UCF101's clips of one group: CoCLR's same-video
positives).
Every view draws its own clips (start, crop, flip, augmentation), each of its
`num_clips` clips independently, except where a view syncs on the first one:

- the first view is the reference (BraVe: the narrow view, `start="within"`, its start
  uniform in [0, T - tau_n]);
- `start="anywhere_looped"` starts a view's clips uniformly in [0, T] and loops the
  frames past the end from the video's start (BraVe's broad visual views, even one as
  long as the video), `num_clips=K` giving K broad clips (Table 3);
- `sync=None` keeps a view's starts independent of the first view's (BraVe's visual
  broad views: Table 4 shows syncing them hurts); `sync="start"` gives it the first
  view's start (BraVe's audio: modalities ("audio",) with `AudioSpec.duration` = tau_b,
  the waveform looped past its end; on a visual broad view, Table 4's synced row);
  `sync="centre"` the first view's centre;
- augmentation is per view: `augmentation=AugmentSpec(random_conv=True)` on the broad
  RGB view only; flow clips are only cropped and flipped (the modality table) unless
  the view's `AugmentSpec` asks for CoCLR's flow ops.

CoCLR asks for modalities ("rgb", "flow") in one view so each flow clip shares its RGB
clip's window, crop box, flip and draws (`ViewSpec.one_clip_prob`: half its pairs cut
from one window); a view's own "audio" starts with its clip's first frame.

Randomness is stateless: every element gets its own seed, folded from the pipeline seed
and the element's position, so a seeded, deterministic pipeline repeats exactly.
"""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import tensorflow as tf
# The base of tf.data's own pass-through datasets (e.g. with_options'): the one way to
# give a dataset's Python iteration its own error messages.
from tensorflow.python.data.ops.dataset_ops import UnaryUnchangedStructureDataset

from video_ssl.data import clips
from video_ssl.data import modalities as modalities_lib
from video_ssl.data import reader
from video_ssl.data import schema
from video_ssl.data.views import ViewSpec, view_from_options

AUTOTUNE = tf.data.AUTOTUNE


def make_view_dataset(file_pattern, views: Sequence[ViewSpec] | Mapping[str, ViewSpec], *,
                      training: bool,
                      batch_size: int, seed: int | None = None, input_context=None,
                      default_frame_rate: float = schema.DEFAULT_FRAME_RATE,
                      shuffle_buffer: int = 64, num_parallel_calls: int = AUTOTUNE,
                      deterministic: bool | None = None, drop_remainder: bool | None = None,
                      repeat: bool | None = None, flatten: bool = False) -> tf.data.Dataset:
    """Batches of {"views": (one dict per view), "label": (B,) int32, "video_id": (B,)
    int64}, or with views given as {name: ViewSpec} (a method's `views`), {"views":
    {name: dict}, "label", "video_id"}; with flatten (one view only), the view's keys
    sit next to "label" and "video_id" instead. "video_id" is the video each element
    was cut from (`reader.video_id`: from `video/source_id`, else the record). How the
    views' clips relate in time is each view's own (`ViewSpec.start` and `ViewSpec.sync`).
    The first view is the reference the others may sync on.

    Training shuffles files and examples and repeats forever by default; evaluation
    reads every video once, in file order. With input_context, batch_size is the
    global batch and each pipeline reads its share of the files. shuffle_buffer holds
    whole serialized videos (memory: buffer x video size, ~4 MB for 10 s at 256p).
    A seed makes the file order, shuffle and augmentation reproducible; deterministic
    (default: seed given) also fixes the element order of the parallel stages.
    """
    names = tuple(views) if isinstance(views, Mapping) else None
    views = tuple(views[n] for n in names) if names else tuple(views)
    if flatten and len(views) != 1:
        raise ValueError(f"flatten needs exactly one view, got {len(views)}")
    if not training and any(v.defer_augmentation for v in views):
        raise ValueError("defer_augmentation applies to training clips; evaluation clips are "
                         "normalized in the pipeline")
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    deterministic = (seed is not None) if deterministic is None else deterministic
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    pipeline_id = 0
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
    modalities = tuple(m for m in modalities_lib.NAMES if any(m in v.modalities for v in views))
    audio_rates = {v.audio.sample_rate for v in views if "audio" in v.modalities}
    if len(audio_rates) > 1:
        raise ValueError(f"views ask for audio at different sample rates {sorted(audio_rates)}")
    audio_rate = audio_rates.pop() if audio_rates else None

    files = reader.match_files(file_pattern)
    reader.require_records(files, repr(file_pattern))
    ds = reader.read_examples(files, input_context=input_context,
                       shuffle=training, seed=seed, deterministic=deterministic)
    if repeat:
        ds = ds.repeat()
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def load(index, example):
        serialized, shard = example
        features = reader.parse_example(serialized, shard, modalities,
                                 default_frame_rate=default_frame_rate,
                                 audio_sample_rate=audio_rate)
        element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        outputs = clips.sample_and_decode(features, element_seed, views, training=training,
                                          default_frame_rate=default_frame_rate)
        about = {"label": features["label"], "video_id": features["video_id"]}
        if flatten:
            return {**outputs[0], **about}
        return {"views": dict(zip(names, outputs)) if names else tuple(outputs), **about}

    ds = ds.enumerate().map(load, num_parallel_calls=num_parallel_calls,
                            deterministic=deterministic)
    if not training and any(v.eval_window_stride for v in views):
        ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(AUTOTUNE)


def make_dataset(file_pattern, *, training: bool, batch_size: int, num_clips: int = 1,
                 num_frames: int = 8, frame_stride: float = 8, crop_size: int = 224,
                 modalities: Sequence[str] = ("rgb",), seed: int | None = None,
                 input_context=None, default_frame_rate: float = schema.DEFAULT_FRAME_RATE,
                 shuffle_buffer: int = 64, num_parallel_calls: int = AUTOTUNE,
                 deterministic: bool | None = None, drop_remainder: bool | None = None,
                 repeat: bool | None = None, **options) -> tf.data.Dataset:
    """Batches of {"rgb": (B, num_clips, T, H, W, 3) float32 normalized, "label": (B,)
    int32 (-1 when unlabeled)}, plus "flow" (B, num_clips, T, H, W, 2) and "audio"
    (B, num_clips, frames, mel_bins, 1) when asked for (contract), and "video_id" (B,)
    int64 (see `make_view_dataset`).

    The one view of `make_view_dataset` (whose options the other keywords are): options
    are the other `ViewSpec` fields (target_fps, crop, eval_crops, audio, ...) and the
    `AugmentSpec` fields (the contract's `**augmentation`: flip_prob, color_strength,
    normalize, mean, std, ...; or `augmentation=AugmentSpec(...)` whole); an unknown
    one is a ValueError naming it.

    Training: num_clips clips per video, each with its own crop, flip and colour
    jitter. defer_augmentation=True (training only): "rgb" is uint8 canvases of the
    decoded crops (the top-left "rgb_size" (B, num_clips, 2) int32 of each), and
    "augment_seed" (B, num_clips, 2) int64 holds each clip's seed;
    `augment.augment_batch(rgb, augment_seed, rgb_size, spec)` with the view's
    `AugmentSpec` then gives what the pipeline would have. Evaluation: num_clips
    uniformly spaced clips x eval_crops crops form the clip axis (clip-major); with
    eval_window_stride, sliding windows instead, padded per batch, plus "clip_mask".
    See `ViewSpec` and `make_view_dataset` for the other options.
    """
    view = view_from_options(
        dict(options, num_clips=num_clips, num_frames=num_frames, frame_stride=frame_stride,
             crop_size=crop_size, modalities=modalities), where="make_dataset")
    dataset = make_view_dataset(
        file_pattern, [view], training=training, batch_size=batch_size, seed=seed,
        input_context=input_context, default_frame_rate=default_frame_rate,
        shuffle_buffer=shuffle_buffer, num_parallel_calls=num_parallel_calls,
        deterministic=deterministic, drop_remainder=drop_remainder, repeat=repeat,
        flatten=True)
    return _NamingDamagedRecords(dataset, reader.match_files(file_pattern))


class _NamingDamagedRecords(UnaryUnchangedStructureDataset):
    """The same dataset, whose Python iteration (for, iter, as_numpy_iterator) turns
    TensorFlow's error for a damaged record, which names no file, into one of the
    same type naming the file and record. (Datasets made from it, e.g. by take(),
    iterate without it: `reader.locate_damaged_record` then names the record.)"""

    def __init__(self, dataset: tf.data.Dataset, files: Sequence[str]):
        self._input_dataset = dataset
        self._files = list(files)
        super().__init__(dataset, dataset._variant_tensor)

    def __iter__(self):
        iterator = super().__iter__()
        return _NamingIterator(iterator, self._files) if tf.executing_eagerly() else iterator


class _NamingIterator:
    """An iterator of `_NamingDamagedRecords` (everything but next() is the wrapped
    iterator's)."""

    def __init__(self, iterator, files: Sequence[str]):
        self._iterator, self._files = iterator, files

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._iterator)
        except tf.errors.OpError as error:
            located = reader.locate_damaged_record(self._files, error.message)
            if located is None:
                raise
            raise type(error)(error.node_def, error.op, located) from error

    def __getattr__(self, name):
        return getattr(self._iterator, name)
