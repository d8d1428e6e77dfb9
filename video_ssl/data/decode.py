"""Decoding only the sampled JPEGs, cropping while decoding where possible.

Training crops are chosen from the JPEG header's size (`frame_shape`) before any
pixel is decoded, then `tf.image.decode_and_crop_jpeg` decodes just that box, which
keeps the pipeline near the cost of plain decoding. Boxes are (offset_y, offset_x,
height, width) int32 in the stored frame's pixels. RGB comes out as uint8 (T, H, W, 3),
flow as float32 pixels (T, H, W, 2).
"""
from __future__ import annotations

import tensorflow as tf

from video_ssl.data import flow as flow_lib


def frame_shape(encoded_frames: tf.Tensor) -> tf.Tensor:
    """int32 (height, width) of a video's frames, read from the first JPEG's header."""
    return tf.image.extract_jpeg_shape(encoded_frames[0])[:2]


def decode_jpegs(encoded_frames: tf.Tensor, indices: tf.Tensor, box=None,
                 channels: int = 3) -> tf.Tensor:
    """uint8 (T, h, w, channels): frames `indices` of `encoded_frames`, each cropped to
    `box` while decoding (the whole frame when `box` is None). Other frames stay
    encoded."""
    selected = tf.gather(encoded_frames, indices)

    def decode(jpeg):
        if box is None:
            return tf.io.decode_jpeg(jpeg, channels=channels)
        return tf.image.decode_and_crop_jpeg(jpeg, box, channels=channels)

    frames = tf.map_fn(decode, selected, fn_output_signature=tf.uint8)
    return tf.ensure_shape(frames, [None, None, None, channels])


def resize_clip(clip: tf.Tensor, size: int, dtype=tf.float32) -> tf.Tensor:
    """(T, h, w, C) -> (T, size, size, C), bilinear with half-pixel centres and no
    antialiasing (as the references), in the input's units: 0-255 from uint8, whose
    1/255 the augmentation folds into normalization. dtype uint8 rounds to the nearest
    level (the compact form for `make_dataset(..., defer_augmentation=True)`)."""
    # Casting first: the resize kernel is ~1.6x slower on uint8 input.
    resized = tf.image.resize(tf.cast(clip, tf.float32), [size, size])
    if dtype == tf.uint8:
        # Bilinear weights are convex, so values stay in [0, 255]: truncating x + 0.5 rounds.
        return tf.cast(resized + 0.5, tf.uint8)
    return resized


def scale_box(box: tf.Tensor, from_hw: tf.Tensor, to_hw: tf.Tensor) -> tf.Tensor:
    """The same image region in a frame of another size (e.g. flow stored smaller
    than RGB), kept inside the frame and at least one pixel."""
    ratio = tf.cast(to_hw, tf.float32) / tf.cast(from_hw, tf.float32)
    ratio = tf.concat([ratio, ratio], axis=0)
    scaled = tf.cast(tf.round(tf.cast(box, tf.float32) * ratio), tf.int32)
    size = tf.clip_by_value(scaled[2:], 1, to_hw)
    offset = tf.clip_by_value(scaled[:2], 0, to_hw - size)
    return tf.concat([offset, size], axis=0)


def flow_indices(frame_indices: tf.Tensor, num_flow) -> tf.Tensor:
    """Flow frame i holds the motion from RGB frame i to i + 1; the last RGB frame
    has none and reuses the last flow frame."""
    return tf.minimum(frame_indices, tf.cast(num_flow, frame_indices.dtype) - 1)


def decode_flow(encoded_flow: tf.Tensor, indices: tf.Tensor, bound, box=None,
                channels=(0, 1)) -> tf.Tensor:
    """float32 (T, h, w, 2) flow in pixels for RGB frames `indices`. `channels` picks
    (dx, dy) from the JPEG: (0, 1) for our layout, (2, 1) for CoCLR's files."""
    quantized = decode_jpegs(encoded_flow, flow_indices(indices, tf.shape(encoded_flow)[0]), box)
    return flow_lib.dequantize_flow(quantized, bound, channels)
