"""Clips of one parsed video: temporal windows, training and evaluation clips, audio.

`sample_and_decode(features, seed, views, training=...)` gives one dict per `ViewSpec`
("rgb", "flow", "audio" with a leading clip axis); only sampled JPEGs are decoded. The
first view is the reference: a later view with `sync` set takes its clip starts from
the first view's clips, the others draw their own (`ViewSpec.start`).
`eval_rgb_crops` is the evaluation crops and normalization alone (the SavedModel
export applies it to raw frames too). `eval_windows` and `eval_clips` are the
evaluation path in two steps (where the clips start, then the clips at given starts),
for callers that choose the starts themselves (`video_ssl.extract`'s windows).

Training clips are decoded inside their crop box, flipped while still uint8 (a 4x
smaller pass), resized, then augmented (colour jitter, grayscale, blur, normalization)
with the 1/255 folded into normalization. With `defer_augmentation=True` the pipeline
stops after decoding the crop: a crop that fits in crop_size x crop_size goes out as it
is, in the top-left corner of a uint8 canvas of that size ("rgb_size" holds its height
and width), a larger one resized to fill it; `augment.augment_batch` then resizes, flips
and augments the batch with each clip's seed ("augment_seed"), on the accelerator. The
CPU then does little more than decode (benchmarks/RESULTS.md), and the host-to-device
traffic is uint8, a quarter of float32.

A two-clip training view with `one_clip_prob` (CoCLR's official one-clip pairs) draws
per video whether both clips share one window; the clips' photometric gates then come
from the pipeline (`_pair_mode`), and with deferred augmentation go out as
"augment_photometric" for `augment.augment_batch`.

Evaluation clips share deterministic crops, and their frames are decoded whole, once.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import tensorflow as tf

from video_ssl.data import audio as audio_lib
from video_ssl.data import augment
from video_ssl.data import crops
from video_ssl.data import decode
from video_ssl.data import modalities
from video_ssl.data import sampling
from video_ssl.data import schema
from video_ssl.data import stateless
from video_ssl.data.views import ViewSpec


# -------------------------------------------------------------- temporal sampling


def stored_frames(features) -> tf.Tensor:
    """Length of the video in stored frames, from whichever modality was read."""
    if "frames" in features:
        return tf.size(features["frames"])
    if "flow" in features:
        return tf.size(features["flow"]) + 1
    seconds = tf.cast(tf.size(features["waveform"]), tf.float32) / features["sample_rate"]
    return tf.maximum(tf.cast(seconds * features["frame_rate"], tf.int32), 1)


def clip_spans(view: ViewSpec, features, strides) -> tf.Tensor:
    """Stored frames a view's clips cover: the clip's, or an audio-only view's audio
    duration when it has one."""
    if view.modalities == ("audio",) and view.audio.duration is not None:
        return tf.fill(tf.shape(strides), view.audio.duration * features["frame_rate"])
    return sampling.clip_span(view.num_frames, strides)


def _pair_mode(view: ViewSpec, window_seed):
    """(one_clip, picked) of a two-clip training view (`ViewSpec.one_clip_prob`):
    whether this video's clips share one window, and (2,) bools marking the clip that
    then gets the photometric ops; None when the view has no such pairs."""
    if not view.one_clip_prob:
        return None
    if view.num_clips != 2:
        raise ValueError(f"ViewSpec.one_clip_prob={view.one_clip_prob}: expected a view of 2 "
                         f"clips (a pair), got num_clips={view.num_clips}")
    # Folded in, so the window seed's own draws stay what they were.
    seed = tf.random.experimental.stateless_fold_in(
        window_seed, tf.constant(2, window_seed.dtype))
    coin_seed, pick_seed = tf.unstack(stateless.split(seed, 2))
    picked = tf.equal(tf.range(2), stateless.uniform_int(pick_seed, 2))
    return stateless.uniform(coin_seed) < view.one_clip_prob, picked


def _clip_windows(view: ViewSpec, features, seed, training: bool, pair=None):
    """(starts, strides) in stored frames, one per clip (dynamic count for sliding
    windows). Training starts follow `view.start`; evaluation clips stay within. A
    one-clip pair (`_pair_mode`) gives both clips the first clip's window."""
    if not training:
        return eval_windows(view, features)
    num_available = tf.cast(stored_frames(features), tf.float32)
    stride = sampling.clip_stride(features["frame_rate"], view.frame_stride, view.target_fps)
    windows = 1 if view.same_window else view.num_clips
    jitter_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    strides = sampling.jittered_strides(jitter_seed, windows, stride, view.frame_rate_jitter)
    max_start = sampling.max_clip_start(
        num_available, clip_spans(view, features, tf.reduce_max(strides)), view.start)
    fps = features["frame_rate"]
    starts = sampling.random_clip_starts(
        start_seed, windows, max_start, min_gap=view.min_gap * fps,
        max_gap=None if view.max_gap is None else view.max_gap * fps)
    if view.same_window:
        starts, strides = tf.tile(starts, [view.num_clips]), tf.tile(strides, [view.num_clips])
    if pair is not None:
        one_clip = pair[0]
        starts = tf.where(one_clip, tf.tile(starts[:1], [2]), starts)
        strides = tf.where(one_clip, tf.tile(strides[:1], [2]), strides)
    return starts, strides


def eval_windows(view: ViewSpec, features) -> tuple[tf.Tensor, tf.Tensor]:
    """(starts, strides) in stored frames of a view's evaluation clips: `num_clips`
    uniformly spaced from the video's start to its end, or sliding windows every
    `eval_window_stride` stored frames; all inside the video (a shorter one: start 0)."""
    stride = sampling.clip_stride(features["frame_rate"], view.frame_stride, view.target_fps)
    max_start = (tf.cast(stored_frames(features), tf.float32)
                 - clip_spans(view, features, stride))
    if view.eval_window_stride:
        starts = sampling.sliding_window_starts(max_start, view.eval_window_stride)
    else:
        starts = sampling.uniform_clip_starts(view.num_clips, max_start)
    return starts, tf.fill(tf.shape(starts), stride)


# ---------------------------------------------------------------------- decoding


def _training_box(view: ViewSpec, image_hw, seed) -> tf.Tensor:
    if view.crop == "scale_jitter":
        return crops.scale_jitter_crop_box(image_hw, seed, crop_size=view.crop_size,
                                             short_side_range=view.short_side_range)
    return crops.random_resized_crop_box(image_hw, seed, area_range=view.area_range,
                                           aspect_range=view.aspect_range)


def _reference_shape(features) -> tf.Tensor:
    """(height, width) that crop boxes refer to: RGB frames, else flow frames."""
    return decode.frame_shape(features["frames"] if "frames" in features else features["flow"])


def _audio(view: ViewSpec, features, starts, default_frame_rate) -> tf.Tensor:
    """(clips, frames, mel_bins, 1) log-mel of the audio under each clip: from the
    clip's first frame, taken inside the video as its frames are (a start past the end
    or before 0 loops), the waveform looping from its start past its end."""
    spec = view.audio
    num_samples = view.audio_samples(default_frame_rate)
    first_frames = tf.math.floormod(tf.floor(starts), tf.cast(stored_frames(features), tf.float32))
    start_seconds = first_frames / features["frame_rate"]
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


def _clip_shape(view: ViewSpec, modality: str) -> list:
    """One clip's static shape: (T, S, S, C) frames, or (frames, mel_bins, 1) log-mel."""
    entry = modalities.get(modality)
    if entry.frames:
        return [view.num_frames, view.crop_size, view.crop_size, entry.channels]
    return [None, view.audio.num_mel_bins, entry.channels]


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


def _training_clips(view: ViewSpec, features, starts, strides, seed, pair=None) -> dict:
    """Each clip: its own crop box (decoded directly), flip and photometric
    augmentation (the view's: random convolution only where it asks); a flow clip
    shares its RGB clip's window, box, flip and draws, and gets the flip alone (dx
    negated) unless the view's `AugmentSpec` asks otherwise. The flip (the clip's
    `augment.draw_clip` flip, as `augment_clip` draws it) mirrors the decoded crop
    before resizing, which commutes with it and is cheaper there. A one-clip pair
    (`_pair_mode`) sets the clips' photometric gates. One traced body for all clips
    (tf.map_fn) keeps the graph small."""
    size = view.crop_size
    signature = {}
    if "rgb" in view.modalities:
        signature["rgb"] = tf.TensorSpec(_clip_shape(view, "rgb"), tf.uint8
                                         if view.defer_augmentation else tf.float32)
        if view.defer_augmentation:
            signature["rgb_size"] = tf.TensorSpec([2], tf.int32)
            signature["augment_seed"] = tf.TensorSpec([2], tf.int64)
            if pair is not None:
                signature["augment_photometric"] = tf.TensorSpec([], tf.bool)
    if "flow" in view.modalities:
        signature["flow"] = tf.TensorSpec(_clip_shape(view, "flow"), tf.float32)
    if not signature:
        return {}
    num_available = stored_frames(features)
    image_hw = _reference_shape(features)
    flow_hw = decode.frame_shape(features["flow"]) if "flow" in view.modalities else None
    spec = view.augmentation
    unflipped = dataclasses.replace(spec, flip_prob=0.0)  # the flip is the uint8 crop's

    def one_clip(args):
        start, stride, clip_seed, paired, picked = args
        box_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(clip_seed, 2))
        box = _training_box(view, image_hw, box_seed)
        indices = sampling.clip_indices(start, view.num_frames, stride, num_available)
        # One draw for the clip: its flip (and photometric draws) apply to the RGB crop
        # and the flow alike.
        draws = augment.draws_of(aug_seed, spec)
        flip = functools.partial(augment.apply_flip,
                                 where=augment.decide(draws.flip, spec.flip_prob))
        gate = None
        if pair is not None:  # a one-clip pair's gate, else the clip's own coin's
            own = tf.convert_to_tensor(augment.decide(draws.photometric, spec.photometric_prob))
            gate = tf.where(paired, picked, own)
        out = {}
        if "rgb" in view.modalities:
            crop = decode.decode_jpegs(features["frames"], indices, box)
            if view.defer_augmentation:
                out["rgb"], out["rgb_size"] = _canvas(crop, size)
                out["augment_seed"] = tf.cast(aug_seed, tf.int64)
                if gate is not None:
                    out["augment_photometric"] = gate
            else:
                out["rgb"] = augment.apply_draws(decode.resize_clip(flip(crop), size), draws,
                                                 unflipped, max_value=255.0, photometric=gate)
        if "flow" in view.modalities:
            flow_box = decode.scale_box(box, image_hw, flow_hw)
            flow = decode.decode_flow(features["flow"], indices, features["flow_bound"], flow_box)
            flow = decode.resize_clip(flip(flow, is_flow=spec.flow_flip_negates_dx), size)
            if spec.flow_photometric:
                flow = augment.apply_draws(flow, draws, unflipped, is_flow=True,
                                           photometric=gate, flow_bound=features["flow_bound"])
            out["flow"] = flow
        return out

    clip_seeds = tf.random.experimental.stateless_split(seed, view.num_clips)
    paired, picked = ((tf.fill([view.num_clips], pair[0]), pair[1]) if pair is not None else
                      (tf.zeros([view.num_clips], tf.bool),) * 2)
    return tf.map_fn(one_clip, (starts, strides, clip_seeds, paired, picked),
                     fn_output_signature=signature)


def _eval_boxes(view: ViewSpec, image_hw):
    """([K, 4] boxes, [K] flips) of the evaluation crops."""
    short_side = view.short_side or round(view.crop_size * 8 / 7)
    sizes = dict(crop_size=view.crop_size, short_side=short_side)
    if view.eval_crops == 10:
        return crops.ten_crop_boxes(image_hw, **sizes)
    boxes = (crops.three_crop_boxes(image_hw, **sizes) if view.eval_crops == 3
             else crops.center_crop_box(image_hw, **sizes)[None])
    return boxes, tf.zeros([view.eval_crops], tf.bool)


def _eval_crops(frames, clips, boxes, flips, size: int, is_flow: bool):
    """(clips * T, H, W, C) decoded frames -> (clips * K, T, size, size, C), clip-major."""
    cropped = []
    for k in range(boxes.shape[0]):
        crop = crops.crop_and_resize_clip(frames, boxes[k], size)
        cropped.append(tf.cond(flips[k], lambda c=crop: augment.flip_clip(c, is_flow),
                               lambda c=crop: c))
    stacked = tf.stack(cropped, axis=1)  # (clips * T, K, size, size, C)
    shape = tf.shape(stacked)
    stacked = tf.reshape(stacked, tf.concat([[clips, -1, len(cropped)], shape[2:]], 0))
    stacked = tf.transpose(stacked, [0, 2, 1, 3, 4, 5])
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], 0))


def eval_rgb_crops(view: ViewSpec, frames, clips) -> tf.Tensor:
    """(clips * T, H, W, 3) frames in [0, 1] -> (clips * eval_crops, T, S, S, 3): the
    view's evaluation crops, normalized as the view asks (the SavedModel export
    applies it to raw frames too)."""
    boxes, flips = _eval_boxes(view, tf.shape(frames)[1:3])
    rgb = _eval_crops(frames, clips, boxes, flips, view.crop_size, is_flow=False)
    spec = view.augmentation
    return augment.normalize(rgb, spec.mean, spec.std) if spec.normalize else rgb


def eval_indices(view: ViewSpec, features, starts, strides) -> tf.Tensor:
    """int32 (clips * T,) the stored frames the evaluation clips at `starts` take."""
    return tf.reshape(sampling.clip_indices(starts, view.num_frames, strides,
                                            stored_frames(features)), [-1])


def _eval_clips(view: ViewSpec, features, starts, strides) -> dict:
    """All clips share the deterministic crops; frames are decoded whole, once."""
    if not any(modalities.get(m).frames for m in view.modalities):
        return {}
    indices = eval_indices(view, features, starts, strides)
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
    shapes = {"rgb_size": [clips, 2], "augment_seed": [clips, 2],
              "augment_photometric": [clips],
              **{m: [clips] + _clip_shape(view, m) for m in view.modalities}}
    return {k: tf.ensure_shape(v, shapes[k]) if k in shapes else v for k, v in out.items()}


def _synced_starts(view: ViewSpec, index: int, features, strides, reference) -> tf.Tensor:
    """Starts of view `index` aligned on the reference (first) view's clips."""
    ref_view, ref_starts, ref_strides = reference
    if ref_view.num_clips not in (1, view.num_clips):
        raise ValueError(f"views[{index}] sync={view.sync!r}: the first view has "
                         f"{ref_view.num_clips} clips; expected 1 or {view.num_clips} "
                         "(one reference clip per clip, or one for all)")
    shape = tf.shape(strides)
    ref_starts = tf.broadcast_to(ref_starts, shape)
    ref_span = tf.broadcast_to(clip_spans(ref_view, features, ref_strides), shape)
    return sampling.synced_starts(ref_starts, ref_span, clip_spans(view, features, strides),
                                  view.sync)


def sample_and_decode(features: Mapping[str, tf.Tensor], seed, views: Sequence[ViewSpec], *,
                      training: bool,
                      default_frame_rate: float = schema.DEFAULT_FRAME_RATE) -> list[dict]:
    """One dict per view: "rgb" (clips, T, S, S, 3) normalized, "flow" (clips, T, S, S, 2)
    pixels, "audio" (clips, frames, mel_bins, 1), for the modalities the view asks for;
    dense-evaluation views add "clip_mask" (clips,) bool.

    Each view draws its own windows (`ViewSpec.start`), crops and augmentation, except
    that a later view with `ViewSpec.sync` set takes its clip starts from the first
    view's clips (same start or same centre); the first view's sync must be None.
    """
    if views and views[0].sync is not None:
        raise ValueError(f"views[0] sync={views[0].sync!r}: the first view is the one the "
                         "others sync to; expected sync=None")
    view_seeds = tf.random.experimental.stateless_split(seed, 2 * len(views))
    outputs = []
    reference = None
    for v, view in enumerate(views):
        window_seed, clip_seed = view_seeds[2 * v], view_seeds[2 * v + 1]
        pair = _pair_mode(view, window_seed) if training else None
        starts, strides = _clip_windows(view, features, window_seed, training, pair)
        if view.sync is not None:
            starts = _synced_starts(view, v, features, strides, reference)
        reference = reference or (view, starts, strides)
        if training:
            out = _training_clips(view, features, starts, strides, clip_seed, pair)
            if "audio" in view.modalities:
                out["audio"] = _audio(view, features, starts, default_frame_rate)
        else:
            out = eval_clips(view, features, starts, strides, default_frame_rate)
            if view.eval_window_stride:
                out["clip_mask"] = tf.ones([tf.size(starts) * view.eval_crops], tf.bool)
        outputs.append(_set_shapes(view, out, training))
    return outputs


def eval_clips(view: ViewSpec, features: Mapping[str, tf.Tensor], starts, strides,
               default_frame_rate: float = schema.DEFAULT_FRAME_RATE) -> dict:
    """The evaluation clips of one parsed video at the given `starts` and `strides`
    (stored frames): "rgb", "flow" (clips * eval_crops, T, S, S, C) and "audio"
    (clips * eval_crops, frames, mel_bins, 1) as the view asks, clip-major."""
    out = _eval_clips(view, features, starts, strides)
    if "audio" in view.modalities:
        out["audio"] = tf.repeat(_audio(view, features, starts, default_frame_rate),
                                 view.eval_crops, axis=0)
    return out
