"""Crop boxes and cropping: where a clip's frames are cut, in original pixels.

Boxes are (offset_y, offset_x, height, width) int32 in the frame's own pixels, so the
pipeline can crop while decoding (`tf.image.decode_and_crop_jpeg`) and a paired
RGB/flow clip can share one box (`decode.scale_box`). Training boxes are drawn from a
seed (an int tensor of shape [2]): `random_resized_crop_box` (Inception-style, area and
aspect ranges) and `scale_jitter_crop_box` (VGG-style, short side jittered). Evaluation
boxes are fixed: `center_crop_box`, `three_crop_boxes`, `ten_crop_boxes` (with flips,
applied by `augment.flip_clip`). `crop_and_resize_clip` cuts a box out of decoded
frames.
"""
from __future__ import annotations

import math

import tensorflow as tf

from video_ssl.data.stateless import plain_graph, split, uniform, uniform_int

# Fallback of the Inception-style crop after this many rejected draws (torchvision).
_CROP_ATTEMPTS = 10


def _hw(image_hw) -> tuple[tf.Tensor, tf.Tensor]:
    hw = tf.cast(image_hw, tf.int32)
    return hw[0], hw[1]


def _box(y, x, h, w) -> tf.Tensor:
    return tf.cast(tf.stack([y, x, h, w]), tf.int32)


@plain_graph
def random_resized_crop_box(image_hw, seed, *, area_range=(0.2, 0.766),
                            aspect_range=(3 / 4, 4 / 3)) -> tf.Tensor:
    """Inception-style crop box: area fraction ~ U[area_range], aspect (w/h) log-uniform.

    Draws 10 candidates at once and keeps the first that fits; if none fits, falls back
    to the largest centre crop whose aspect is inside aspect_range (torchvision).
    """
    height, width = _hw(image_hw)
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area_seed, aspect_seed, y_seed, x_seed = tf.unstack(split(seed, 4))
    area = h_f * w_f * uniform(area_seed, area_range[0], area_range[1], (_CROP_ATTEMPTS,))
    log_aspect = uniform(aspect_seed, math.log(aspect_range[0]), math.log(aspect_range[1]),
                          (_CROP_ATTEMPTS,))
    aspect = tf.exp(log_aspect)
    crop_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    image_aspect = w_f / h_f
    fallback_w = tf.where(image_aspect > aspect_range[1],
                          tf.cast(tf.round(h_f * aspect_range[1]), tf.int32), width)
    fallback_h = tf.where(image_aspect < aspect_range[0],
                          tf.cast(tf.round(w_f / aspect_range[0]), tf.int32), height)
    any_fits = tf.reduce_any(fits)
    crop_h = tf.where(any_fits, crop_h[first], fallback_h)
    crop_w = tf.where(any_fits, crop_w[first], fallback_w)
    offset_y = tf.where(any_fits, uniform_int(y_seed, height - crop_h + 1), (height - crop_h) // 2)
    offset_x = tf.where(any_fits, uniform_int(x_seed, width - crop_w + 1), (width - crop_w) // 2)
    return _box(offset_y, offset_x, crop_h, crop_w)


def _square_side(height, width, crop_size, short_side) -> tf.Tensor:
    """Side in original pixels of a crop_size square taken after resizing the short side."""
    short = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.round(tf.cast(crop_size, tf.float32) * short / tf.cast(short_side, tf.float32))
    return tf.clip_by_value(tf.cast(side, tf.int32), 1, tf.minimum(height, width))


@plain_graph
def scale_jitter_crop_box(image_hw, seed, *, crop_size: int,
                          short_side_range=(256, 320)) -> tf.Tensor:
    """VGG-style box: short side resized to S ~ U{range} (integers), random square crop.

    A uniform offset in the resized image is a uniform offset in the original one, so the
    square is drawn directly in original pixels.
    """
    height, width = _hw(image_hw)
    size_seed, y_seed, x_seed = tf.unstack(split(seed, 3))
    short_side = tf.random.stateless_uniform(
        (), size_seed, minval=short_side_range[0], maxval=short_side_range[1] + 1, dtype=tf.int32)
    side = _square_side(height, width, crop_size, short_side)
    return _box(uniform_int(y_seed, height - side + 1), uniform_int(x_seed, width - side + 1),
                side, side)


@plain_graph
def center_crop_box(image_hw, *, crop_size: int, short_side: int) -> tf.Tensor:
    """Centre crop_size square after resizing the short side to short_side."""
    height, width = _hw(image_hw)
    side = _square_side(height, width, crop_size, short_side)
    return _box((height - side) // 2, (width - side) // 2, side, side)


@plain_graph
def three_crop_boxes(image_hw, *, crop_size: int, short_side: int) -> tf.Tensor:
    """[3, 4] boxes: start, centre and end of the long side, centred on the short side.

    PySlowFast's 3-crop testing (left/centre/right for landscape, top/centre/bottom
    for portrait frames).
    """
    height, width = _hw(image_hw)
    side = _square_side(height, width, crop_size, short_side)
    spare_y, spare_x = height - side, width - side
    landscape = width >= height
    along = tf.stack([0, (tf.maximum(spare_y, spare_x) + 1) // 2, tf.maximum(spare_y, spare_x)])
    centred = tf.fill([3], tf.minimum(spare_y, spare_x) // 2)
    offset_y = tf.where(landscape, centred, along)
    offset_x = tf.where(landscape, along, centred)
    sides = tf.fill([3], side)
    return tf.cast(tf.stack([offset_y, offset_x, sides, sides], axis=1), tf.int32)


@plain_graph
def ten_crop_boxes(image_hw, *, crop_size: int, short_side: int) -> tuple[tf.Tensor, tf.Tensor]:
    """([10, 4] boxes, [10] flips): 4 corners + centre (torchvision order), unflipped then flipped.

    Apply the flips with `flip_clip`.
    """
    height, width = _hw(image_hw)
    side = _square_side(height, width, crop_size, short_side)
    bottom, right = height - side, width - side
    offset_y = tf.stack([0, 0, bottom, bottom, bottom // 2])
    offset_x = tf.stack([0, right, 0, right, right // 2])
    sides = tf.fill([5], side)
    boxes = tf.cast(tf.stack([offset_y, offset_x, sides, sides], axis=1), tf.int32)
    flips = tf.constant([False] * 5 + [True] * 5)
    return tf.concat([boxes, boxes], axis=0), flips


@plain_graph
def crop_and_resize_clip(clip: tf.Tensor, box, size) -> tf.Tensor:
    """Crops every frame of a decoded (T, H, W, C) clip to box, then resizes (bilinear).

    size: an int (square output) or (height, width).
    """
    box = tf.cast(box, tf.int32)
    cropped = clip[:, box[0]:box[0] + box[2], box[1]:box[1] + box[3], :]
    size = (size, size) if isinstance(size, int) else tuple(size)
    return tf.image.resize(cropped, size, method="bilinear")
