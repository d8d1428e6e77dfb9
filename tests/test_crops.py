"""Crop boxes: inside the frame, area/aspect/scale in range, fixed evaluation positions."""
import numpy as np
import tensorflow as tf

from video_ssl.data import crops

SEEDS = [tf.constant([s, 7], tf.int32) for s in range(40)]


def test_random_resized_crop_box_in_image_with_area_and_aspect_in_range():
    for image_hw in [(240, 320), (320, 240), (64, 64)]:
        height, width = image_hw
        for seed in SEEDS:
            y, x, h, w = crops.random_resized_crop_box(image_hw, seed).numpy()
            assert 0 <= y and y + h <= height and 0 <= x and x + w <= width
            area = h * w / (height * width)
            assert 0.2 - 0.02 <= area <= 0.766 + 0.02
            assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_random_resized_crop_box_falls_back_to_centre_crop():
    # A 10x100 strip holds no crop of >= 90% of its area with aspect in [3/4, 4/3]:
    # the fallback is the widest allowed centre crop, 10 x round(10 * 4/3).
    box = crops.random_resized_crop_box((10, 100), SEEDS[0], area_range=(0.9, 1.0))
    np.testing.assert_array_equal(box, [0, 43, 10, 13])


def test_random_resized_crop_box_decodes_with_decode_and_crop_jpeg():
    image = tf.cast(tf.random.stateless_uniform([48, 64, 3], [0, 1]) * 255, tf.uint8)
    box = crops.random_resized_crop_box((48, 64), SEEDS[3])
    cropped = tf.image.decode_and_crop_jpeg(tf.io.encode_jpeg(image), box)
    assert cropped.shape[:2] == tuple(box.numpy()[2:])


def test_scale_jitter_crop_box_square_inside_with_jittered_scale():
    sides = set()
    for seed in SEEDS:
        y, x, h, w = crops.scale_jitter_crop_box((240, 320), seed, crop_size=224).numpy()
        assert h == w and 0 <= y and y + h <= 240 and 0 <= x and x + w <= 320
        # Short side 240 resized to S in [256, 320]: the square is 224 * 240 / S.
        assert round(224 * 240 / 320) <= h <= round(224 * 240 / 256)
        sides.add(h)
    assert len(sides) > 3


def test_center_three_and_ten_crop_positions():
    y, x, h, w = crops.center_crop_box((240, 320), crop_size=224, short_side=256).numpy()
    assert h == w == 210 and (y, x) == (15, 55)
    three = crops.three_crop_boxes((240, 320), crop_size=240, short_side=240).numpy()
    np.testing.assert_array_equal(three[:, 0], [0, 0, 0])
    np.testing.assert_array_equal(three[:, 1], [0, 40, 80])
    portrait = crops.three_crop_boxes((320, 240), crop_size=240, short_side=240).numpy()
    np.testing.assert_array_equal(portrait[:, 0], [0, 40, 80])
    np.testing.assert_array_equal(portrait[:, 1], [0, 0, 0])
    boxes, flips = crops.ten_crop_boxes((240, 320), crop_size=200, short_side=240)
    boxes = boxes.numpy()
    np.testing.assert_array_equal(boxes[:5, :2], [[0, 0], [0, 120], [40, 0], [40, 120], [20, 60]])
    np.testing.assert_array_equal(boxes[5:], boxes[:5])
    assert (boxes[:, 2:] == 200).all()
    np.testing.assert_array_equal(flips, [False] * 5 + [True] * 5)


def test_crop_and_resize_clip():
    clip = tf.random.stateless_uniform([4, 32, 32, 3], seed=[1, 2])
    out = crops.crop_and_resize_clip(clip, [4, 8, 16, 16], 16)
    np.testing.assert_allclose(out, clip[:, 4:20, 8:24], atol=1e-6)
    assert crops.crop_and_resize_clip(clip, [0, 0, 20, 10], (8, 6)).shape == (4, 8, 6, 3)
