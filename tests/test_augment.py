"""Clip augmentations: shapes, ranges, per-clip consistency, seeding, the batch path."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from video_ssl.data import augment
from video_ssl.data.augment import AugmentSpec

SEEDS = [tf.constant([s, 7], tf.int32) for s in range(40)]


@pytest.fixture(scope="module")
def clip():
    """A random (4, 32, 32, 3) clip in [0, 1]."""
    return tf.random.stateless_uniform([4, 32, 32, 3], seed=[1, 2])


@pytest.fixture(scope="module")
def static_clip():
    """Four identical random frames."""
    frame = tf.random.stateless_uniform([1, 32, 32, 3], seed=[3, 4])
    return tf.tile(frame, [4, 1, 1, 1])


ALL_ON = dict(flip_prob=1.0, color_jitter_prob=1.0, grayscale_prob=1.0, blur_prob=1.0)


def test_augment_clip_shape_and_normalized_range(clip):
    out = augment.augment_clip(clip, SEEDS[0], AugmentSpec(normalize=False, **ALL_ON))
    assert out.shape == clip.shape and out.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    normalized = augment.augment_clip(clip, SEEDS[0], AugmentSpec(**ALL_ON))
    np.testing.assert_allclose(normalized, (out - 0.45) / 0.225, atol=1e-5)


def test_augment_clip_is_temporally_consistent(static_clip):
    for seed in SEEDS[:4]:
        out = augment.augment_clip(static_clip, seed,
                                   AugmentSpec(random_conv=True, **ALL_ON)).numpy()
        for t in range(1, 4):
            np.testing.assert_allclose(out[t], out[0], atol=1e-6)


def test_same_seed_same_clip_different_seed_different_clip(clip):
    a = augment.augment_clip(clip, SEEDS[1])
    b = augment.augment_clip(clip, SEEDS[1])
    np.testing.assert_array_equal(a, b)
    outputs = [augment.augment_clip(clip, s).numpy() for s in SEEDS[:6]]
    assert all(not np.allclose(outputs[0], o) for o in outputs[1:])


def test_augment_clip_works_inside_tf_data(clip):
    ds = tf.data.Dataset.from_tensors(clip).repeat(2).enumerate().map(
        lambda i, c: augment.augment_clip(c, tf.stack([i, tf.constant(5, tf.int64)])))
    first, second = [c.numpy() for c in ds]
    assert first.shape == (4, 32, 32, 3) and not np.allclose(first, second)


def test_flip_of_flow_mirrors_and_negates_dx_with_the_rgb_decision(clip):
    flow = tf.random.stateless_normal([4, 32, 32, 2], [5, 6])
    flipped = augment.flip_left_right(flow, SEEDS[0], prob=1.0, is_flow=True).numpy()
    np.testing.assert_allclose(flipped[..., 0], -flow.numpy()[:, :, ::-1, 0])
    np.testing.assert_allclose(flipped[..., 1], flow.numpy()[:, :, ::-1, 1])
    decisions = set()
    for seed in SEEDS[:10]:
        rgb = augment.augment_clip(clip, seed, AugmentSpec(
            color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, normalize=False))
        rgb_flipped = not np.allclose(rgb, clip)
        paired = augment.augment_clip(flow, seed, is_flow=True)
        assert np.allclose(paired, augment.flip_clip(flow, is_flow=True)) == rgb_flipped
        assert np.allclose(paired, flow) != rgb_flipped
        decisions.add(rgb_flipped)
    assert decisions == {True, False}


def test_augment_clip_rejects_wrong_shapes(clip):
    with pytest.raises(ValueError, match=r"\(T, H, W, 2\) flow clip"):
        augment.augment_clip(clip, SEEDS[0], is_flow=True)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) RGB clip"):
        augment.augment_clip(clip[0], SEEDS[0])


@pytest.mark.parametrize("exact", [False, True])
def test_color_jitter_changes_clip_within_range(clip, exact):
    out = augment.color_jitter(clip, SEEDS[0], prob=1.0, exact=exact)
    assert out.shape == clip.shape and not np.allclose(out, clip)
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    fixed = augment.color_jitter(clip, SEEDS[0], prob=1.0, random_order=False, exact=exact)
    assert fixed.shape == clip.shape
    np.testing.assert_array_equal(augment.color_jitter(clip, SEEDS[0], prob=0.0), clip)


def test_fast_color_jitter_equals_exact_steps_on_gray_mid_range_clip():
    # Gray pixels have no hue and mid-range values are never clipped: here the one
    # affine map must equal torchvision's steps, in every order.
    gray = 0.4 + 0.2 * tf.random.stateless_uniform([2, 8, 8, 1], [5, 5])
    clip = tf.tile(gray, [1, 1, 1, 3])
    for seed in SEEDS[:8]:
        np.testing.assert_allclose(augment.color_jitter(clip, seed, prob=1.0),
                                   augment.color_jitter(clip, seed, prob=1.0, exact=True),
                                   atol=1e-5)


def test_fast_color_jitter_is_close_to_exact_on_a_natural_like_clip():
    # Smooth tinted grays, like most of a video frame: the HSV hue shift and the
    # final-only clip are approximated; on real video the mean difference is ~0.004.
    luma = tf.random.stateless_uniform([2, 4, 4, 1], [6, 6], minval=0.2, maxval=0.8)
    tint = tf.random.stateless_uniform([2, 4, 4, 3], [7, 7], minval=-0.12, maxval=0.12)
    clip = tf.image.resize(luma + tint, [16, 16])
    for seed in SEEDS[:8]:
        fast = augment.color_jitter(clip, seed, prob=1.0)
        exact = augment.color_jitter(clip, seed, prob=1.0, exact=True)
        assert float(tf.reduce_mean(tf.abs(fast - exact))) < 0.02


def test_grayscale_gives_equal_channels_of_luma(clip):
    out = augment.random_grayscale(clip, SEEDS[0], prob=1.0).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1])
    np.testing.assert_allclose(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[..., :1], tf.image.rgb_to_grayscale(clip), atol=1e-3)


def test_gaussian_blur_smooths_and_keeps_constant_images(clip):
    blurred = augment.gaussian_blur(clip, SEEDS[0], prob=1.0, sigma_range=(1.5, 2.0),
                                    kernel_size=5)
    assert blurred.shape == clip.shape
    assert float(tf.math.reduce_std(blurred)) < float(tf.math.reduce_std(clip))
    flat = tf.fill([2, 16, 16, 3], 0.3)
    np.testing.assert_allclose(augment.gaussian_blur(flat, SEEDS[1], prob=1.0), flat, atol=1e-6)
    tiny = augment.gaussian_blur(clip[:, :3, :3], SEEDS[2], prob=1.0, sigma_range=(2.0, 2.0))
    assert tiny.shape == (4, 3, 3, 3)
    with pytest.raises(ValueError, match="padding"):
        augment.gaussian_blur(clip, SEEDS[0], prob=1.0, padding="ZERO")


def _numpy_blur(clip: np.ndarray, sigma: float, radius: int, mode: str) -> np.ndarray:
    """Separable blur by explicit shifted sums (np.pad modes: "reflect", "constant")."""
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    pads = [(0, 0), (radius, radius), (radius, radius), (0, 0)]
    padded = np.pad(clip, pads, mode=mode)
    height, width = clip.shape[1:3]
    rows = sum(w * padded[:, radius + t:radius + t + height] for t, w in zip(taps, kernel))
    return sum(w * rows[:, :, radius + t:radius + t + width] for t, w in zip(taps, kernel))


@pytest.mark.parametrize("padding, mode", [("REFLECT", "reflect"), ("SAME", "constant")])
def test_gaussian_blur_matches_direct_convolution(clip, padding, mode):
    out = augment.gaussian_blur(clip, SEEDS[2], prob=1.0, sigma_range=(1.2, 1.2),
                                kernel_size=7, padding=padding)
    np.testing.assert_allclose(out, _numpy_blur(clip.numpy(), 1.2, 3, mode), atol=1e-5)


def test_truncated_blur_is_close_to_simclr_kernel(clip):
    for seed in SEEDS[:6]:
        truncated = augment.gaussian_blur(clip, seed, prob=1.0)
        full = augment.gaussian_blur(clip, seed, prob=1.0, kernel_size=23)
        np.testing.assert_allclose(truncated, full, atol=3e-3)


def test_augment_clip_exact_options(clip):
    out = augment.augment_clip(clip, SEEDS[3], AugmentSpec(
        normalize=False, color_jitter_exact=True, blur_kernel_size=23, **ALL_ON))
    assert out.shape == clip.shape
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    fast = augment.augment_clip(clip, SEEDS[3], AugmentSpec(normalize=False, **ALL_ON))
    assert float(tf.reduce_mean(tf.abs(out - fast))) < 0.05


def test_temporal_difference(static_clip, clip):
    static = augment.temporal_difference(static_clip, SEEDS[0], prob=1.0)
    assert static.shape == static_clip.shape
    np.testing.assert_allclose(static, 0.0, atol=1e-6)
    moving = augment.temporal_difference(clip, SEEDS[0], prob=1.0).numpy()
    gray = tf.image.rgb_to_grayscale(clip).numpy()[..., 0]
    np.testing.assert_allclose(moving[:3, ..., 2], gray[1:] - gray[:-1], atol=1e-5)
    np.testing.assert_allclose(moving[3], 0.0)


def _kernel_support(seed) -> int:
    impulse = np.zeros([1, 23, 23, 3], np.float32)
    impulse[0, 11, 11, :] = 1.0
    out = augment.random_convolution(tf.constant(impulse), seed).numpy()
    columns = np.nonzero(np.abs(out[0]).sum(axis=(0, 2)))[0]
    return int(columns.max() - columns.min() + 1)


def test_random_convolution_kernel_size_varies_and_shape_kept(static_clip):
    sizes = {_kernel_support(seed) for seed in SEEDS[:12]}
    assert sizes <= {1, 3, 5, 7, 9, 11} and len(sizes) >= 3
    out = augment.random_convolution(static_clip, SEEDS[0]).numpy()
    assert out.shape == static_clip.shape
    for t in range(1, 4):
        np.testing.assert_allclose(out[t], out[0], atol=1e-6)
    other = augment.random_convolution(static_clip, SEEDS[1]).numpy()
    assert not np.allclose(out, other)


def test_random_convolution_weights_are_he_normal():
    # A 1x1 kernel maps a constant image to constant = sum of weights per output channel.
    weights = []
    ones = tf.ones([1, 1, 1, 3])
    for s in range(300):
        out = augment.random_convolution(ones, tf.constant([s, 1]), kernel_sizes=(1,))
        weights.append(out.numpy().ravel())
    # Each output is a sum of 3 weights of std sqrt(2/3): std sqrt(2).
    assert abs(np.std(np.concatenate(weights)) - np.sqrt(2.0)) < 0.15


def test_normalize_per_channel_and_from_0_255(clip):
    out = augment.normalize(clip, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3]).numpy()
    np.testing.assert_allclose(out[..., 2], (clip.numpy()[..., 2] - 0.6) / 0.3, atol=1e-6)
    scaled = augment.normalize(clip * 255.0, max_value=255.0)
    np.testing.assert_allclose(scaled, (clip.numpy() - 0.45) / 0.225, atol=1e-5)


def _uint8_batch(batch=2, clips=3):
    """(batch, clips, 4, 16, 16, 3) smooth random uint8 clips and their (batch, clips, 2) seeds."""
    small = tf.random.stateless_uniform([batch * clips * 4, 4, 4, 3], [8, 8])
    frames = tf.cast(tf.image.resize(small, [16, 16]) * 255.0 + 0.5, tf.uint8)
    seeds = tf.reshape(tf.range(batch * clips * 2, dtype=tf.int64), [batch, clips, 2])
    return tf.reshape(frames, [batch, clips, 4, 16, 16, 3]), seeds


def _per_clip(rgb, seeds, flip_prob=0.5, **options):
    """The pipeline's path on every clip of a uint8 batch: the flip first (on the crop),
    then augment_clip from 0-255 values."""
    flat = tf.reshape(tf.cast(rgb, tf.float32), [-1, 4, 16, 16, 3])

    def flip(clip, seed):
        return augment.apply_flip(clip, augment.decide(augment.draw_clip(seed).flip, flip_prob))

    spec = AugmentSpec(flip_prob=0.0, **options)
    out = [augment.augment_clip(flip(c, s), s, spec, max_value=255.0)
           for c, s in zip(flat, tf.reshape(seeds, [-1, 2]))]
    return tf.reshape(tf.stack(out), rgb.shape).numpy()


@pytest.mark.parametrize("options", [
    {},
    dict(color_jitter_prob=0.5, grayscale_prob=0.5, blur_prob=0.5, temporal_difference_prob=0.5),
    dict(blur_kernel_size=5, color_strength=1.5, normalize=False),
    dict(color_jitter_exact=True, random_conv=True),
    dict(color_jitter_style="brave", blur_kernel_size="tenth", blur_padding="SAME",
         blur_before_color=True, blur_prob=1.0),
    dict(photometric_prob=0.5, grayscale_mode="channel_per_frame", grayscale_prob=0.5,
         blur_padding="SAME"),
])
def test_augment_batch_equals_augment_clip_per_clip(options):
    rgb, seeds = _uint8_batch()
    out = augment.augment_batch(rgb, seeds, spec=AugmentSpec(flip_prob=0.5, **options))
    assert out.shape == rgb.shape and out.dtype == tf.float32
    np.testing.assert_allclose(out, _per_clip(rgb, seeds, **options), atol=2e-5)


def test_augment_batch_resizes_each_crop_from_its_canvas_corner():
    """Canvases hold crops of several sizes in their top-left corner, zeros elsewhere:
    each comes out as tf.image.resize of the crop alone, then augment_clip, flips too."""
    rgb, seeds = _uint8_batch(batch=1, clips=5)
    sizes = tf.constant([[[16, 16], [9, 12], [16, 5], [1, 1], [3, 16]]])
    canvases, expected = [], []
    for clip, seed, (h, w) in zip(rgb[0], seeds[0], sizes[0].numpy()):
        crop = clip[:, :h, :w]
        canvases.append(tf.pad(crop, [[0, 0], [0, 16 - h], [0, 16 - w], [0, 0]]))
        resized = tf.image.resize(tf.cast(crop, tf.float32), [16, 16])
        expected.append(augment.augment_clip(resized, seed, AugmentSpec(flip_prob=0.5),
                                             max_value=255.0))
    out = augment.augment_batch(tf.stack(canvases)[None], seeds, sizes, AugmentSpec(flip_prob=0.5))
    np.testing.assert_allclose(out[0], tf.stack(expected), atol=1e-4)
    ramp = tf.constant([[[[0], [1]]]])
    flips = [bool(augment.draw_clip(s).flip < 0.5) for s in seeds[0]]
    assert any(flips) and not all(flips)  # both branches of the flip were checked


def test_augment_batch_draws_per_clip_and_rejects_float_clips():
    rgb, seeds = _uint8_batch(batch=1, clips=6)
    same = tf.broadcast_to(rgb[:, :1], rgb.shape)  # one clip, six seeds
    out = augment.augment_batch(same, seeds, spec=AugmentSpec(color_jitter_prob=1.0)).numpy()[0]
    assert all(not np.allclose(out[0], o) for o in out[1:])
    with pytest.raises(ValueError, match=r"augment_batch: expected uint8 clips"):
        augment.augment_batch(tf.cast(rgb, tf.float32), seeds)


def test_draw_batch_is_draw_clip_of_each_seed():
    seeds = tf.reshape(tf.range(12, dtype=tf.int64), [6, 2])
    batch = augment.draw_batch(seeds, color_strength=0.7)
    assert batch.order.shape == (6, 4) and batch.conv_seed.dtype == tf.int64
    for i in range(6):
        for name, value in augment.draw_clip(seeds[i], color_strength=0.7)._asdict().items():
            np.testing.assert_array_equal(getattr(batch, name)[i], value, err_msg=name)


def test_color_strength_half_is_moco_v2_jitter():
    """s = 0.5 (the default) is ColorJitter(0.4, 0.4, 0.4, 0.1); s = 1 doubles it."""
    seeds = tf.reshape(tf.range(800, dtype=tf.int64), [400, 2])
    default, strong = augment.draw_batch(seeds), augment.draw_batch(seeds, color_strength=1.0)
    assert augment.COLOR_STRENGTH == 0.5
    for name in ("brightness", "contrast", "saturation"):
        values = getattr(default, name).numpy()
        assert 0.6 <= values.min() < 0.62 and 1.38 < values.max() <= 1.4, name
        np.testing.assert_allclose(getattr(strong, name) - 1.0, 2.0 * (values - 1.0), atol=1e-5)
    hue = default.hue.numpy()
    assert -0.1 <= hue.min() < -0.098 and 0.098 < hue.max() <= 0.1
    np.testing.assert_allclose(strong.hue, 2.0 * hue, atol=1e-6)


def test_apply_draws_on_a_batch_equals_clip_by_clip():
    rgb, seeds = _uint8_batch(batch=1, clips=6)
    clips = tf.cast(rgb[0], tf.float32)
    draws = augment.draw_batch(seeds[0])
    spec = AugmentSpec(color_jitter_prob=0.5, grayscale_prob=0.5, blur_prob=0.5,
                       temporal_difference_prob=0.5, flip_prob=0.5)
    batched = augment.apply_draws(clips, draws, spec, max_value=255.0)
    for i in range(6):
        one = augment.apply_draws(clips[i], augment.draw_clip(seeds[0, i]), spec, max_value=255.0)
        np.testing.assert_allclose(batched[i], one, atol=2e-5)
    with pytest.raises(ValueError, match="runs clip by clip"):
        augment.apply_draws(clips, draws, AugmentSpec(color_jitter_exact=True))
    with pytest.raises(ValueError, match="runs clip by clip"):
        augment.apply_draws(clips, draws, AugmentSpec(random_conv=True))


def test_flip_commutes_with_resize_and_uint8_resize_rounds(clip):
    from video_ssl.data import decode
    crop = tf.cast(clip[:, :20, :28] * 255.0, tf.uint8)
    # Values are 0-255: mirrored interpolation weights differ in float rounding only.
    np.testing.assert_allclose(decode.resize_clip(augment.flip_clip(crop), 24),
                               augment.flip_clip(decode.resize_clip(crop, 24)), atol=1e-3)
    as_uint8 = decode.resize_clip(crop, 24, tf.uint8)
    assert as_uint8.dtype == tf.uint8
    np.testing.assert_array_equal(as_uint8, np.floor(decode.resize_clip(crop, 24).numpy() + 0.5))


def test_drawn_flip_is_augment_clips_flip(clip):
    for seed in SEEDS[:8]:
        flipped = augment.apply_flip(clip, augment.decide(augment.draw_clip(seed).flip, 0.5))
        plain = augment.augment_clip(clip, seed, AugmentSpec(
            color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, normalize=False))
        np.testing.assert_array_equal(flipped, plain)


@pytest.mark.parametrize("options", [dict(normalize=False), dict(color_jitter_exact=True),
                                     dict(random_conv=True, temporal_difference_prob=1.0)])
def test_augment_clip_of_0_255_values_equals_0_1_path(clip, options):
    # The pipeline leaves resized uint8 clips in 0-255 and folds the 1/255 into
    # normalization; every op must scale with it (clip bounds, HSV hue, convolutions).
    for seed in SEEDS[:4]:
        spec = AugmentSpec(**ALL_ON, **options)
        unit = augment.augment_clip(clip, seed, spec)
        scaled = augment.augment_clip(clip * 255.0, seed, spec, max_value=255.0)
        np.testing.assert_allclose(scaled, unit, atol=2e-5)


# ------------------------------------------- the official codes' variants (CoCLR, BraVe)


def _hsv_map(clip: np.ndarray, fn) -> np.ndarray:
    """fn(h, s, v) -> (h, s, v) on every pixel, through colorsys."""
    import colorsys
    flat = clip.reshape(-1, 3)
    out = [colorsys.hsv_to_rgb(*fn(*colorsys.rgb_to_hsv(*p))) for p in flat]
    return np.asarray(out, np.float64).reshape(clip.shape)


def _numpy_brave_jitter(clip, brightness, saturation, contrast, hue):
    """BraVe's code's colour augmentation by its steps' definitions (tf.image's
    brightness, HSV saturation clipped to [0, 1], per-channel frame-mean contrast, HSV
    hue), then one clip to [0, 1]."""
    x = clip.astype(np.float64) + brightness
    x = _hsv_map(x, lambda h, s, v: (h, min(max(s * saturation, 0.0), 1.0), v))
    mean = x.mean(axis=(1, 2), keepdims=True)
    x = (x - mean) * contrast + mean
    x = _hsv_map(x, lambda h, s, v: ((h + hue) % 1.0, s, v))
    return np.clip(x, 0.0, 1.0)


def test_brave_color_jitter_matches_numpy_reference():
    # Mid-range values: brightness keeps them in [0, 1], where HSV is defined.
    clip = tf.random.stateless_uniform([2, 6, 6, 3], [9, 9], minval=0.25, maxval=0.75)
    params = dict(brightness=-0.1, contrast=1.3, saturation=0.7, hue=0.15)
    out = augment.apply_color_jitter(clip, True, order=tf.constant(augment.BRAVE_ORDER),
                                     style="brave", **params)
    expected = _numpy_brave_jitter(clip.numpy(), -0.1, 0.7, 1.3, 0.15)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    scaled = augment.apply_color_jitter(clip * 255.0, True, order=tf.constant(augment.BRAVE_ORDER),
                                        style="brave", max_value=255.0, **params)
    np.testing.assert_allclose(scaled / 255.0, expected, atol=1e-5)


def test_brave_jitter_draws_the_official_ranges_in_a_fixed_order():
    seeds = tf.reshape(tf.range(800, dtype=tf.int64), [400, 2])
    draws = augment.draw_batch(seeds, jitter_style="brave")
    brightness = draws.brightness.numpy()
    assert -32 / 255 <= brightness.min() < -31 / 255 and 31 / 255 < brightness.max() <= 32 / 255
    for name in ("contrast", "saturation"):
        values = getattr(draws, name).numpy()
        assert 0.6 <= values.min() < 0.62 and 1.38 < values.max() <= 1.4, name
    hue = draws.hue.numpy()
    assert -0.2 <= hue.min() < -0.19 and 0.19 < hue.max() <= 0.2
    np.testing.assert_array_equal(draws.order, np.tile([0, 2, 1, 3], [400, 1]))
    half = augment.draw_batch(seeds, jitter_style="brave", color_strength=0.25)
    np.testing.assert_allclose(half.hue, 0.5 * hue, atol=1e-6)  # s scales BraVe's too
    # The other draws are the "simclr" style's.
    simclr = augment.draw_batch(seeds)
    for name in ("flip", "jitter", "grayscale", "blur", "sigma", "photometric"):
        np.testing.assert_array_equal(getattr(draws, name), getattr(simclr, name), name)


def test_tenth_of_the_width_zero_padded_blur_matches_direct_convolution():
    wide = tf.random.stateless_uniform([2, 12, 64, 3], [4, 4])
    out = augment.gaussian_blur(wide, SEEDS[2], prob=1.0, sigma_range=(1.5, 1.5),
                                kernel_size=augment.TENTH, padding="SAME")
    # BraVe's kernel_size = 64 // 10 = 6 -> radius 3, 7 taps.
    np.testing.assert_allclose(out, _numpy_blur(wide.numpy(), 1.5, 3, "constant"), atol=1e-5)


def test_blur_before_color_is_braves_order():
    clip = tf.random.stateless_uniform([2, 16, 64, 3], [4, 4])
    spec = AugmentSpec(color_jitter_style="brave", blur_before_color=True, blur_padding="SAME",
                       blur_kernel_size=augment.TENTH, normalize=False, **ALL_ON)
    wide_blurs = [s for s in SEEDS if augment.draw_clip(s).sigma > 1.0]
    for seed in wide_blurs[:3]:
        draws = augment.draw_clip(seed, jitter_style="brave")
        expected = augment.apply_blur(clip, draws.sigma, True, kernel_size=augment.TENTH,
                                      padding="SAME")
        expected = augment.apply_color_jitter(expected, True, **draws.jitter_params(),
                                              style="brave")
        expected = augment.flip_clip(augment.to_grayscale(expected))
        np.testing.assert_allclose(augment.augment_clip(clip, seed, spec), expected, atol=1e-6)
        after = augment.augment_clip(clip, seed, dataclasses.replace(spec, blur_before_color=False))
        assert not np.allclose(after, expected, atol=1e-3)


@pytest.mark.parametrize("mode", ["channel", "channel_per_frame"])
def test_channel_grayscale_copies_one_channel(clip, mode):
    picked = []
    for seed in SEEDS[:12]:
        out = augment.random_grayscale(clip, seed, prob=1.0, mode=mode).numpy()
        channels = []
        for t in range(4):
            match = [c for c in range(3) if np.array_equal(out[t], np.repeat(
                clip.numpy()[t, ..., c:c + 1], 3, axis=-1))]
            assert len(match) == 1
            channels.append(match[0])
        picked.append(tuple(channels))
    assert set(np.ravel(picked)) == {0, 1, 2}
    varies_in_a_clip = any(len(set(c)) > 1 for c in picked)
    assert varies_in_a_clip == (mode == "channel_per_frame")


def test_photometric_gate_scales_the_ops_per_clip():
    seeds = tf.reshape(tf.range(8000, dtype=tf.int64), [4000, 2])
    draws = augment.draw_batch(seeds)
    spec = AugmentSpec(photometric_prob=0.3, color_jitter_prob=0.8, grayscale_prob=0.2,
                       blur_prob=0.5)
    gated = augment.photometric_decisions(draws, spec)
    for name, rate in (("color_jitter", 0.24), ("grayscale", 0.06), ("blur", 0.15)):
        assert abs(float(tf.reduce_mean(tf.cast(gated[name], tf.float32))) - rate) < 0.02, name
    # One coin gates the three ops: no clip has any of them where its gate is closed.
    gate = draws.photometric.numpy() < 0.3
    assert not any(gated[name].numpy()[~gate].any() for name in gated)
    forced = augment.photometric_decisions(draws, spec, photometric=tf.zeros([4000], tf.bool))
    assert not any(forced[name].numpy().any() for name in forced)
    # photometric_prob 1 leaves the ops' own coins, as before the gate existed.
    ungated = augment.photometric_decisions(draws, AugmentSpec())
    np.testing.assert_array_equal(ungated["blur"], draws.blur.numpy() < 0.5)


def test_closed_gate_leaves_crop_and_flip_only(clip):
    for seed in SEEDS[:6]:
        plain = augment.augment_clip(clip, seed, AugmentSpec(
            color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0))
        closed = augment.augment_clip(clip, seed, AugmentSpec(
            photometric_prob=0.0, color_jitter_prob=1.0, grayscale_prob=1.0, blur_prob=1.0))
        np.testing.assert_array_equal(closed, plain)


FLOW_OPS = dict(flow_photometric=True, color_jitter_prob=1.0, grayscale_prob=0.0,
                blur_prob=1.0, flip_prob=0.0)


def test_flow_photometric_is_the_rgb_ops_on_the_jpeg_values():
    flow = 6.0 * tf.random.stateless_normal([4, 16, 16, 2], [5, 6])
    bound = 20.0
    spec = AugmentSpec(**FLOW_OPS, grayscale_mode="channel")
    levels = (flow.numpy() + bound) * 255.0 / (2 * bound)
    image = np.concatenate([np.full_like(levels[..., :1], 128.0), levels[..., 1:],
                            levels[..., :1]], axis=-1)  # CoCLR's (128, dy, dx)
    for seed in SEEDS[:4]:
        out = augment.augment_clip(flow, seed, spec, is_flow=True, flow_bound=bound).numpy()
        rgb = augment.augment_clip(image, seed, dataclasses.replace(spec, normalize=False),
                                   max_value=255.0).numpy() * 255.0
        expected = np.stack([rgb[..., 2], rgb[..., 1]], axis=-1) * 2 * bound / 255.0 - bound
        np.testing.assert_allclose(out, expected, atol=1e-4)
        assert np.abs(out - flow.numpy()).mean() > 0.05
    off = augment.augment_clip(flow, SEEDS[0], dataclasses.replace(spec, flow_photometric=False),
                               is_flow=True)
    np.testing.assert_array_equal(off, flow)
    gray = augment.augment_clip(flow, SEEDS[0], dataclasses.replace(
        spec, grayscale_prob=1.0, color_jitter_prob=0.0, blur_prob=0.0), is_flow=True,
        flow_bound=bound).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 1])  # one channel copied: dx = dy
    with pytest.raises(ValueError, match="flow_photometric needs the clip's flow_bound"):
        augment.augment_clip(flow, SEEDS[0], spec, is_flow=True)


def test_flow_flip_keeps_dx_when_asked():
    flow = tf.random.stateless_normal([4, 8, 8, 2], [5, 6])
    kept = augment.augment_clip(flow, SEEDS[0], AugmentSpec(flip_prob=1.0,
                                                            flow_flip_negates_dx=False),
                                is_flow=True)
    np.testing.assert_array_equal(kept, flow.numpy()[:, :, ::-1])
    negated = augment.augment_clip(flow, SEEDS[0], AugmentSpec(flip_prob=1.0), is_flow=True)
    np.testing.assert_array_equal(negated, augment.flip_clip(flow, is_flow=True))


def test_augment_batch_takes_the_pipelines_photometric_gates():
    rgb, seeds = _uint8_batch(batch=1, clips=4)
    gates = tf.constant([[True, False, True, False]])
    spec = AugmentSpec(photometric_prob=0.5, grayscale_mode="channel", **ALL_ON)
    out = augment.augment_batch(rgb, seeds, spec=spec, photometric=gates).numpy()[0]
    for i in range(4):
        clip = augment.apply_flip(tf.cast(rgb[0, i], tf.float32), True)
        one = augment.apply_draws(clip, augment.draw_clip(seeds[0, i]), dataclasses.replace(
            spec, flip_prob=0.0), max_value=255.0, photometric=gates[0, i])
        np.testing.assert_allclose(out[i], one, atol=2e-5)
