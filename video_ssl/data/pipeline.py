"""The tf.data input pipeline: shards -> examples -> sampled, decoded, augmented views.

Stages, each public and usable on its own:

- `reader.match_files`, `reader.read_examples`, `reader.parse_example`: the shard
  list, (serialized SequenceExample, shard path) pairs, still-encoded features;
- `sample_and_decode(features, seed, views, training=...)`: one dict per `ViewSpec`
  ("rgb", "flow", "audio" with a leading clip axis); only sampled JPEGs are decoded;
- `make_view_dataset(pattern, views, ...)`: the stages wired up, batched, prefetched;
- `make_dataset(...)` (contract): one view, output flattened to "rgb"/"flow"/"audio"/"label".

Training clips are decoded inside their crop box, flipped while still uint8 (a 4x
smaller pass), resized, then augmented (colour jitter, grayscale, blur, normalization)
with the 1/255 folded into normalization. With `defer_augmentation=True` the pipeline
stops after decoding the crop: a crop that fits in crop_size x crop_size goes out as it
is, in the top-left corner of a uint8 canvas of that size ("rgb_size" holds its height
and width), a larger one resized to fill it; `augment.augment_batch` then resizes, flips
and augments the batch with each clip's seed ("augment_seed"), on the accelerator. The
CPU then does little more than decode (benchmarks/RESULTS.md), and the host-to-device
traffic is uint8, a quarter of float32.

A method with several views builds its `ViewSpec`s and calls `make_view_dataset`:
BraVe passes a narrow view and broad views with `sync="centre"` (or "start", or None
for independent starts); CoCLR asks for modalities ("rgb", "flow") in one view so each
flow clip shares its RGB clip's window, crop box and flip. Batches then hold "views",
a tuple of per-view dicts, and "label".

Randomness is stateless: every element gets its own seed, folded from the pipeline seed
and the element's position, so a seeded, deterministic pipeline repeats exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Mapping, Sequence

import tensorflow as tf

from video_ssl.data import audio as audio_lib
from video_ssl.data import augment
from video_ssl.data import decode
from video_ssl.data import reader
from video_ssl.data import sampling
from video_ssl.data import schema

AUTOTUNE = tf.data.AUTOTUNE
CROPS = ("random_resized", "scale_jitter")
SYNCS = (None, "start", "centre")


@dataclasses.dataclass(frozen=True)
class AudioSpec:
    """Log-mel settings for the "audio" modality (DMVR's defaults; BraVe: frame 320,
    step 160, log_scale 10000, log_offset 1).

    sample_rate: what every file must hold (files without a sample rate are assumed to
    hold it). duration: seconds of audio per clip; None = the clip's duration at the
    view's target_fps (or the default frame rate), so shapes stay static.
    """
    sample_rate: float = 48000.0
    duration: float | None = None
    num_mel_bins: int = 80
    frame_length: int = 2048
    frame_step: int = 1024
    fft_length: int | None = None
    lower_edge_hertz: float = 80.0
    upper_edge_hertz: float = 7600.0
    log_offset: float = 1e-6
    log_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """One view of a video: `num_clips` clips of `num_frames` frames at `crop_size`.

    Temporal: frame_stride counts stored frames, or frames at target_fps when given;
    same_window makes all clips share one window (rho = 1: two spatial augmentations of
    one clip); min_gap/max_gap bound the distance between clip starts in seconds;
    frame_rate_jitter scales each clip's stride by U[1 - j, 1 + j].
    Spatial (training): crop "random_resized" (area_range, aspect_range) or
    "scale_jitter" (short_side_range); `augmentation` holds `augment.augment_clip`'s
    keyword arguments; defer_augmentation stops training RGB clips after the decoded
    crop (uint8 canvases plus "rgb_size" and "augment_seed" for `augment.augment_batch`).
    Evaluation: num_clips uniformly spaced clips (or sliding windows
    every eval_window_stride stored frames) x eval_crops (1, 3 or 10) crops of
    crop_size after resizing the short side to short_side (default crop_size * 8 / 7,
    256 for 224), clip-major along the clip axis.
    """
    num_clips: int = 1
    num_frames: int = 8
    frame_stride: float = 8
    crop_size: int = 224
    modalities: tuple[str, ...] = ("rgb",)
    target_fps: float | None = None
    same_window: bool = False
    min_gap: float = 0.0
    max_gap: float | None = None
    frame_rate_jitter: float = 0.0
    crop: str = "random_resized"
    area_range: tuple[float, float] = (0.2, 0.766)
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
    short_side_range: tuple[int, int] = (256, 320)
    augmentation: Mapping = dataclasses.field(default_factory=dict)
    defer_augmentation: bool = False
    eval_crops: int = 1
    short_side: int | None = None
    eval_window_stride: float | None = None
    audio: AudioSpec = AudioSpec()

    def __post_init__(self):
        unknown = set(self.modalities) - set(schema.MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities {tuple(self.modalities)}: expected a non-empty "
                             f"subset of {schema.MODALITIES}")
        if self.crop not in CROPS:
            raise ValueError(f"crop={self.crop!r}: expected one of {CROPS}")
        if self.eval_crops not in (1, 3, 10):
            raise ValueError(f"eval_crops={self.eval_crops}: expected 1, 3 or 10")
        if self.num_clips < 1 or self.num_frames < 1:
            raise ValueError(f"num_clips={self.num_clips}, num_frames={self.num_frames}: "
                             "expected >= 1")
        if self.defer_augmentation and "rgb" not in self.modalities:
            raise ValueError(f"defer_augmentation=True defers RGB augmentation, but modalities "
                             f"{tuple(self.modalities)} have no rgb")

    def audio_samples(self, default_frame_rate: float) -> int:
        """Static number of waveform samples per clip."""
        duration = self.audio.duration
        if duration is None:
            fps = self.target_fps or default_frame_rate
            duration = self.num_frames * self.frame_stride / fps
        return int(round(duration * self.audio.sample_rate))


# -------------------------------------------------------------- temporal sampling


def _num_frames(features) -> tf.Tensor:
    """Length of the video in stored frames, from whichever modality was read."""
    if "frames" in features:
        return tf.size(features["frames"])
    if "flow" in features:
        return tf.size(features["flow"]) + 1
    seconds = tf.cast(tf.size(features["waveform"]), tf.float32) / features["sample_rate"]
    return tf.maximum(tf.cast(seconds * features["frame_rate"], tf.int32), 1)


def _clip_windows(view: ViewSpec, features, seed, training: bool):
    """(starts, strides) in stored frames, one per clip (dynamic count for sliding
    windows)."""
    num_available = tf.cast(_num_frames(features), tf.float32)
    stride = sampling.clip_stride(features["frame_rate"], view.frame_stride, view.target_fps)
    if not training:
        max_start = num_available - sampling.clip_span(view.num_frames, stride)
        if view.eval_window_stride:
            starts = sampling.sliding_window_starts(max_start, view.eval_window_stride)
        else:
            starts = sampling.uniform_clip_starts(view.num_clips, max_start)
        return starts, tf.fill(tf.shape(starts), stride)
    windows = 1 if view.same_window else view.num_clips
    jitter_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    strides = sampling.jittered_strides(jitter_seed, windows, stride, view.frame_rate_jitter)
    max_start = num_available - sampling.clip_span(view.num_frames, tf.reduce_max(strides))
    fps = features["frame_rate"]
    starts = sampling.random_clip_starts(
        start_seed, windows, max_start, min_gap=view.min_gap * fps,
        max_gap=None if view.max_gap is None else view.max_gap * fps)
    if view.same_window:
        starts, strides = tf.tile(starts, [view.num_clips]), tf.tile(strides, [view.num_clips])
    return starts, strides


# ---------------------------------------------------------------------- decoding


def _training_box(view: ViewSpec, image_hw, seed) -> tf.Tensor:
    if view.crop == "scale_jitter":
        return augment.scale_jitter_crop_box(image_hw, seed, crop_size=view.crop_size,
                                             short_side_range=view.short_side_range)
    return augment.random_resized_crop_box(image_hw, seed, area_range=view.area_range,
                                           aspect_range=view.aspect_range)


def _reference_shape(features) -> tf.Tensor:
    """(height, width) that crop boxes refer to: RGB frames, else flow frames."""
    return decode.frame_shape(features["frames"] if "frames" in features else features["flow"])


def _audio(view: ViewSpec, features, start_seconds, default_frame_rate) -> tf.Tensor:
    """(clips, frames, mel_bins, 1) log-mel of the audio under each clip."""
    spec = view.audio
    num_samples = view.audio_samples(default_frame_rate)
    waves = tf.map_fn(
        lambda s: audio_lib.slice_waveform(features["waveform"], s, num_samples,
                                           spec.sample_rate),
        start_seconds, fn_output_signature=tf.TensorSpec([num_samples], tf.float32))
    mel = audio_lib.log_mel_spectrogram(
        waves, spec.sample_rate, num_mel_bins=spec.num_mel_bins,
        frame_length=spec.frame_length, frame_step=spec.frame_step,
        fft_length=spec.fft_length, lower_edge_hertz=spec.lower_edge_hertz,
        upper_edge_hertz=spec.upper_edge_hertz, log_offset=spec.log_offset,
        log_scale=spec.log_scale)
    return mel[..., None]


def _canvas(crop: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(T, size, size, 3) uint8 and the (height, width) it holds: the crop in the top-left
    corner when it fits (the accelerator resizes it), else resized to fill the canvas."""
    crop_hw = tf.shape(crop)[1:3]

    def pad():
        padding = [[0, 0], [0, size - crop_hw[0]], [0, size - crop_hw[1]], [0, 0]]
        return tf.pad(crop, padding), crop_hw

    def fill():
        return decode.resize_clip(crop, size, tf.uint8), tf.constant([size, size])
    canvas, hw = tf.cond(tf.reduce_all(crop_hw <= size), pad, fill)
    return tf.ensure_shape(canvas, [None, size, size, 3]), hw


def _training_clips(view: ViewSpec, features, starts, strides, seed) -> dict:
    """Each clip: its own crop box (decoded directly), flip and colour jitter; a flow
    clip shares its RGB clip's window, box and flip. The flip (`augment_clip`'s own
    draw) mirrors the decoded crop before resizing, which commutes with it and is
    cheaper there. One traced body for all clips (tf.map_fn) keeps the graph small."""
    size = view.crop_size
    frames = [view.num_frames, size, size]
    signature = {}
    if "rgb" in view.modalities:
        signature["rgb"] = tf.TensorSpec(frames + [3], tf.uint8 if view.defer_augmentation
                                         else tf.float32)
        if view.defer_augmentation:
            signature["rgb_size"] = tf.TensorSpec([2], tf.int32)
            signature["augment_seed"] = tf.TensorSpec([2], tf.int64)
    if "flow" in view.modalities:
        signature["flow"] = tf.TensorSpec(frames + [2], tf.float32)
    if not signature:
        return {}
    num_available = _num_frames(features)
    image_hw = _reference_shape(features)
    flow_hw = decode.frame_shape(features["flow"]) if "flow" in view.modalities else None
    photometric = dict(view.augmentation)
    flip_prob = photometric.pop("flip_prob", augment.FLIP_PROB)

    def one_clip(args):
        start, stride, clip_seed = args
        box_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(clip_seed, 2))
        box = _training_box(view, image_hw, box_seed)
        indices = sampling.clip_indices(start, view.num_frames, stride, num_available)
        flip = functools.partial(augment.flip_left_right, seed=augment.flip_seed(aug_seed),
                                 prob=flip_prob)
        out = {}
        if "rgb" in view.modalities:
            crop = decode.decode_jpegs(features["frames"], indices, box)
            if view.defer_augmentation:
                out["rgb"], out["rgb_size"] = _canvas(crop, size)
                out["augment_seed"] = tf.cast(aug_seed, tf.int64)
            else:
                out["rgb"] = augment.augment_clip(decode.resize_clip(flip(crop), size), aug_seed,
                                                  flip_prob=0.0, max_value=255.0, **photometric)
        if "flow" in view.modalities:
            flow_box = decode.scale_box(box, image_hw, flow_hw)
            flow = decode.decode_flow(features["flow"], indices, features["flow_bound"], flow_box)
            out["flow"] = decode.resize_clip(flip(flow, is_flow=True), size)
        return out

    clip_seeds = tf.random.experimental.stateless_split(seed, view.num_clips)
    return tf.map_fn(one_clip, (starts, strides, clip_seeds), fn_output_signature=signature)


def _eval_boxes(view: ViewSpec, image_hw):
    """([K, 4] boxes, [K] flips) of the evaluation crops."""
    short_side = view.short_side or round(view.crop_size * 8 / 7)
    sizes = dict(crop_size=view.crop_size, short_side=short_side)
    if view.eval_crops == 10:
        return augment.ten_crop_boxes(image_hw, **sizes)
    boxes = (augment.three_crop_boxes(image_hw, **sizes) if view.eval_crops == 3
             else augment.center_crop_box(image_hw, **sizes)[None])
    return boxes, tf.zeros([view.eval_crops], tf.bool)


def _eval_crops(frames, clips, boxes, flips, size: int, is_flow: bool):
    """(clips * T, H, W, C) decoded frames -> (clips * K, T, size, size, C), clip-major."""
    crops = []
    for k in range(boxes.shape[0]):
        crop = augment.crop_and_resize_clip(frames, boxes[k], size)
        crops.append(tf.cond(flips[k], lambda c=crop: augment.flip_clip(c, is_flow),
                             lambda c=crop: c))
    stacked = tf.stack(crops, axis=1)  # (clips * T, K, size, size, C)
    shape = tf.shape(stacked)
    stacked = tf.reshape(stacked, tf.concat([[clips, -1, len(crops)], shape[2:]], 0))
    stacked = tf.transpose(stacked, [0, 2, 1, 3, 4, 5])
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], 0))


def eval_rgb_crops(view: ViewSpec, frames, clips) -> tf.Tensor:
    """(clips * T, H, W, 3) frames in [0, 1] -> (clips * eval_crops, T, S, S, 3): the
    view's evaluation crops, normalized as the view asks (the SavedModel export
    applies it to raw frames too)."""
    boxes, flips = _eval_boxes(view, tf.shape(frames)[1:3])
    rgb = _eval_crops(frames, clips, boxes, flips, view.crop_size, is_flow=False)
    if view.augmentation.get("normalize", True):
        rgb = augment.normalize(rgb, view.augmentation.get("mean", 0.45),
                                view.augmentation.get("std", 0.225))
    return rgb


def _eval_clips(view: ViewSpec, features, starts, strides) -> dict:
    """All clips share the deterministic crops; frames are decoded whole, once."""
    if not {"rgb", "flow"} & set(view.modalities):
        return {}
    num_available = _num_frames(features)
    indices = tf.reshape(sampling.clip_indices(starts, view.num_frames, strides, num_available),
                         [-1])
    clips = tf.size(starts)
    image_hw = _reference_shape(features)
    boxes, flips = _eval_boxes(view, image_hw)
    out = {}
    if "rgb" in view.modalities:
        frames = tf.cast(decode.decode_jpegs(features["frames"], indices), tf.float32) / 255.0
        out["rgb"] = eval_rgb_crops(view, frames, clips)
    if "flow" in view.modalities:
        flow_hw = decode.frame_shape(features["flow"])
        flow_boxes = tf.map_fn(lambda b: decode.scale_box(b, image_hw, flow_hw), boxes)
        flow = decode.decode_flow(features["flow"], indices, features["flow_bound"])
        out["flow"] = _eval_crops(flow, clips, flow_boxes, flips, view.crop_size, is_flow=True)
    return out


def _set_shapes(view: ViewSpec, out: dict, training: bool) -> dict:
    clips = view.num_clips * (1 if training else view.eval_crops)
    if not training and view.eval_window_stride:
        clips = None
    size = view.crop_size
    shapes = {"rgb": [clips, view.num_frames, size, size, 3],
              "flow": [clips, view.num_frames, size, size, 2],
              "audio": [clips, None, view.audio.num_mel_bins, 1],
              "rgb_size": [clips, 2], "augment_seed": [clips, 2]}
    return {k: tf.ensure_shape(v, shapes[k]) if k in shapes else v for k, v in out.items()}


def sample_and_decode(features: Mapping[str, tf.Tensor], seed, views: Sequence[ViewSpec], *,
                      training: bool, sync: str | None = None,
                      default_frame_rate: float = schema.DEFAULT_FRAME_RATE) -> list[dict]:
    """One dict per view: "rgb" (clips, T, S, S, 3) normalized, "flow" (clips, T, S, S, 2)
    pixels, "audio" (clips, frames, mel_bins, 1), for the modalities the view asks for;
    dense-evaluation views add "clip_mask" (clips,) bool.

    sync: None draws every view's windows independently; "start"/"centre" aligns each
    later view's clips on the first view's clips (same start / same centre, as BraVe's
    broad views around the narrow one; the views need equal num_clips).
    """
    if sync not in SYNCS:
        raise ValueError(f"sync={sync!r}: expected one of {SYNCS}")
    view_seeds = tf.random.experimental.stateless_split(seed, 2 * len(views))
    outputs = []
    reference = None
    for v, view in enumerate(views):
        window_seed, clip_seed = view_seeds[2 * v], view_seeds[2 * v + 1]
        starts, strides = _clip_windows(view, features, window_seed, training)
        if sync and reference is not None:
            ref_view, ref_starts, ref_strides = reference
            if view.num_clips != ref_view.num_clips:
                raise ValueError(f"sync={sync!r} needs equal num_clips in all views, got "
                                 f"{ref_view.num_clips} and {view.num_clips}")
            starts = sampling.synced_starts(
                ref_starts, sampling.clip_span(ref_view.num_frames, ref_strides),
                sampling.clip_span(view.num_frames, strides), sync)
        reference = reference or (view, starts, strides)
        if training:
            out = _training_clips(view, features, starts, strides, clip_seed)
            crops = 1
        else:
            out = _eval_clips(view, features, starts, strides)
            crops = view.eval_crops
            if view.eval_window_stride:
                out["clip_mask"] = tf.ones([tf.size(starts) * crops], tf.bool)
        if "audio" in view.modalities:
            # The audio starts with the clip's first frame.
            seconds = tf.floor(starts) / features["frame_rate"]
            out["audio"] = tf.repeat(_audio(view, features, seconds, default_frame_rate),
                                     crops, axis=0)
        outputs.append(_set_shapes(view, out, training))
    return outputs


# ----------------------------------------------------------------------- datasets


def make_view_dataset(file_pattern, views: Sequence[ViewSpec], *, training: bool,
                      batch_size: int, seed: int | None = None, sync: str | None = None,
                      input_context=None, default_frame_rate: float = schema.DEFAULT_FRAME_RATE,
                      shuffle_buffer: int = 64, num_parallel_calls: int = AUTOTUNE,
                      deterministic: bool | None = None, drop_remainder: bool | None = None,
                      repeat: bool | None = None, flatten: bool = False) -> tf.data.Dataset:
    """Batches of {"views": (one dict per view), "label": (B,) int32}; with flatten
    (one view only), the view's keys sit next to "label" instead.

    Training shuffles files and examples and repeats forever by default; evaluation
    reads every video once, in file order. With input_context, batch_size is the
    global batch and each pipeline reads its share of the files. shuffle_buffer holds
    whole serialized videos (memory: buffer x video size, ~4 MB for 10 s at 256p).
    A seed makes the file order, shuffle and augmentation reproducible; deterministic
    (default: seed given) also fixes the element order of the parallel stages.
    """
    views = tuple(views)
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
    modalities = tuple(m for m in schema.MODALITIES if any(m in v.modalities for v in views))
    audio_rates = {v.audio.sample_rate for v in views if "audio" in v.modalities}
    if len(audio_rates) > 1:
        raise ValueError(f"views ask for audio at different sample rates {sorted(audio_rates)}")
    audio_rate = audio_rates.pop() if audio_rates else None

    ds = reader.read_examples(reader.match_files(file_pattern), input_context=input_context,
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
        outputs = sample_and_decode(features, element_seed, views, training=training,
                                    sync=sync, default_frame_rate=default_frame_rate)
        if flatten:
            return {**outputs[0], "label": features["label"]}
        return {"views": tuple(outputs), "label": features["label"]}

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
                 input_context=None, target_fps: float | None = None,
                 same_window: bool = False, min_gap: float = 0.0,
                 max_gap: float | None = None, frame_rate_jitter: float = 0.0,
                 crop: str = "random_resized", area_range=(0.2, 0.766),
                 aspect_range=(3 / 4, 4 / 3), short_side_range=(256, 320),
                 defer_augmentation: bool = False, eval_crops: int = 1,
                 short_side: int | None = None, eval_window_stride: float | None = None,
                 audio: AudioSpec = AudioSpec(),
                 default_frame_rate: float = schema.DEFAULT_FRAME_RATE,
                 shuffle_buffer: int = 64, num_parallel_calls: int = AUTOTUNE,
                 deterministic: bool | None = None, drop_remainder: bool | None = None,
                 repeat: bool | None = None, **augmentation) -> tf.data.Dataset:
    """Batches of {"rgb": (B, num_clips, T, H, W, 3) float32 normalized, "label": (B,)
    int32 (-1 when unlabeled)}, plus "flow" (B, num_clips, T, H, W, 2) and "audio"
    (B, num_clips, frames, mel_bins, 1) when asked for (contract).

    Training: num_clips clips per video, each with its own crop, flip and colour
    jitter (`augmentation` = `augment.augment_clip` keywords). defer_augmentation=True
    (training only): "rgb" is uint8 canvases of the decoded crops (the top-left
    "rgb_size" (B, num_clips, 2) int32 of each), and "augment_seed" (B, num_clips, 2)
    int64 holds each clip's seed; `augment.augment_batch(rgb, augment_seed, rgb_size,
    **augmentation)` then gives what the pipeline would have. Evaluation: num_clips
    uniformly spaced clips x eval_crops crops form the clip axis (clip-major); with
    eval_window_stride, sliding windows instead, padded per batch, plus "clip_mask".
    See `ViewSpec` and `make_view_dataset` for the other options.
    """
    view = ViewSpec(
        num_clips=num_clips, num_frames=num_frames, frame_stride=frame_stride,
        crop_size=crop_size, modalities=tuple(modalities), target_fps=target_fps,
        same_window=same_window, min_gap=min_gap, max_gap=max_gap,
        frame_rate_jitter=frame_rate_jitter, crop=crop, area_range=tuple(area_range),
        aspect_range=tuple(aspect_range), short_side_range=tuple(short_side_range),
        augmentation=dict(augmentation), defer_augmentation=defer_augmentation,
        eval_crops=eval_crops, short_side=short_side,
        eval_window_stride=eval_window_stride, audio=audio)
    return make_view_dataset(
        file_pattern, [view], training=training, batch_size=batch_size, seed=seed,
        input_context=input_context, default_frame_rate=default_frame_rate,
        shuffle_buffer=shuffle_buffer, num_parallel_calls=num_parallel_calls,
        deterministic=deterministic, drop_remainder=drop_remainder, repeat=repeat,
        flatten=True)
