"""Backbones: generic checks for every registered name (shapes, endpoints, gradients,
flow input, .keras round trip), the ResNet family's exact shapes and parameter counts,
the TSM shift, and the multiply-add counter."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from video_ssl.models import available_backbones, build_backbone, count_flops
from video_ssl.models.backbones.tsm import TemporalShift

TINY = 1 / 8
BATCH = 2

# Smallest sensible (T, H, W, C) per backbone: S3D and R(2+1)D downsample time by 8.
INPUT_SHAPES = {name: (4, 32, 32, 3) for name in available_backbones()}
INPUT_SHAPES.update({"s3d": (8, 32, 32, 3), "s3dg": (8, 32, 32, 3),
                     "r2plus1d_18": (8, 32, 32, 3), "audio_resnet50": (64, 32, 1)})

# Deeper, wider or ungated twins of other names (no layer type of their own): their
# generic checks are marked slow.
TWINS = {"slow_r101", "tsm_r50x2", "s3d"}
ALL_NAMES = [pytest.param(name, marks=pytest.mark.slow) if name in TWINS else name
             for name in available_backbones()]

# Pooled width at full width; every width used here divides by 8.
FEATURE_DIMS = {"slow_r18": 512, "slow_r50": 2048, "slow_r101": 2048, "r3d_50": 2048,
                "r2plus1d_18": 512,
                "s3d": 1024, "s3dg": 1024, "tsm_r50": 2048, "tsm_r50x2": 4096,
                "audio_resnet50": 2048}


def _resnet_endpoints(widths, leading):
    """conv1 at /2 and res2..res5 at /4../32 of a 32×32 input, after `leading` dims."""
    spatial = (16, 8, 4, 2, 1)
    names = ("conv1", "res2", "res3", "res4", "res5")
    return {n: (*leading, s, s, w) for n, s, w in zip(names, spatial, widths)}


EXPECTED_ENDPOINTS = {
    "slow_r18": _resnet_endpoints((8, 8, 16, 32, 64), (BATCH, 4)),
    "slow_r50": _resnet_endpoints((8, 32, 64, 128, 256), (BATCH, 4)),
    "slow_r101": _resnet_endpoints((8, 32, 64, 128, 256), (BATCH, 4)),
    "r3d_50": _resnet_endpoints((8, 32, 64, 128, 256), (BATCH, 2)),  # conv1's stride 2
    "tsm_r50": _resnet_endpoints((8, 32, 64, 128, 256), (BATCH, 4)),
    "tsm_r50x2": _resnet_endpoints((16, 64, 128, 256, 512), (BATCH, 4)),
    "audio_resnet50": {"conv1": (BATCH, 32, 16, 8), "res2": (BATCH, 16, 8, 32),
                       "res3": (BATCH, 8, 4, 64), "res4": (BATCH, 4, 2, 128),
                       "res5": (BATCH, 2, 1, 256)},
}

# Trainable parameters (no classifier) reported by the papers: Feichtenhofer et al. 2021
# (Slow R-50), Recasens et al. 2021 (TSM, audio); CVRL's README (R3D-50).
PAPER_PARAMS = {"slow_r50": 31.6e6, "r3d_50": 31.7e6, "tsm_r50": 23.5e6, "tsm_r50x2": 93.9e6,
                "audio_resnet50": 23.5e6}


def _clip(name, channels=None, seed=0):
    shape = INPUT_SHAPES[name]
    if channels is not None:
        shape = (*shape[:-1], channels)
    return np.random.default_rng(seed).normal(size=(BATCH, *shape)).astype("float32")


def _trainable_params(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.fixture(scope="module")
def tiny_models():
    """One tiny model per name (with endpoints), built on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            cache[name] = build_backbone(name, width_multiplier=TINY, return_endpoints=True)
        return cache[name]
    return get


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pooled_and_endpoint_shapes(name, tiny_models):
    outputs = tiny_models(name)(_clip(name), training=False)
    pooled = outputs["pooled"].numpy()
    assert pooled.shape == (BATCH, FEATURE_DIMS[name] // 8)
    rank = 4 if name == "audio_resnet50" else 5
    maps = {k: v.numpy() for k, v in outputs.items() if k != "pooled"}
    assert maps and all(m.ndim == rank and m.shape[0] == BATCH for m in maps.values())
    # The pooled features are the global average of one of the stage maps (the last).
    means = [m.mean(axis=tuple(range(1, rank - 1))) for m in maps.values()
             if m.shape[-1] == pooled.shape[-1]]
    assert any(np.allclose(mean, pooled, atol=1e-5) for mean in means)
    if name in EXPECTED_ENDPOINTS:
        assert {k: m.shape for k, m in maps.items()} == EXPECTED_ENDPOINTS[name]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_kernels_are_drawn_per_layer_from_the_keras_seed(name, tiny_models):
    """Two kernels of one shape start different, and the Keras seed alone decides the
    initialization (a shared initializer once gave every kernel of a shape the same
    values, drawn once per process)."""
    kernels = [w.numpy() for w in tiny_models(name).weights if "kernel" in w.path]
    same_shape = [(a, b) for i, a in enumerate(kernels) for b in kernels[:i]
                  if a.shape == b.shape]
    assert same_shape and not any(np.array_equal(a, b) for a, b in same_shape)
    keras.utils.set_random_seed(0)
    again = build_backbone(name, width_multiplier=TINY, return_endpoints=True)
    assert np.array_equal(again.weights[0].numpy(), tiny_models(name).weights[0].numpy())
    keras.utils.set_random_seed(1)
    other = build_backbone(name, width_multiplier=TINY, return_endpoints=True)
    assert not np.array_equal(other.weights[0].numpy(), again.weights[0].numpy())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pooled_model_takes_flow_input(name):
    channels = 1 if name == "audio_resnet50" else 2  # video: optical flow (dx, dy)
    model = build_backbone(name, width_multiplier=TINY, input_channels=channels)
    features = model(_clip(name, channels=channels), training=False).numpy()
    assert features.shape == (BATCH, FEATURE_DIMS[name] // 8)
    assert np.all(np.isfinite(features))


def test_input_shape_must_match_input_channels():
    with pytest.raises(ValueError, match="input_channels"):
        build_backbone("slow_r50", input_shape=(8, 32, 32, 3), input_channels=2)
    with pytest.raises(ValueError, match="mel_bins"):
        build_backbone("audio_resnet50", input_shape=(64, 32, 3, 1))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_keras_file_round_trip(name, tiny_models, tmp_path):
    model = tiny_models(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    clip = _clip(name, seed=3)
    expected, actual = model(clip, training=False), restored(clip, training=False)
    assert set(actual) == set(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_papers(name):
    params = _trainable_params(build_backbone(name))
    assert abs(params - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.02


@pytest.mark.slow
def test_slow_r50_res5_map_and_multiply_adds_at_paper_size():
    model = build_backbone("slow_r50", return_endpoints=True)
    shapes = model.compute_output_shape((1, 8, 224, 224, 3))
    assert tuple(shapes["res5"]) == (1, 8, 7, 7, 2048)
    assert abs(count_flops(model, (1, 8, 224, 224, 3)) - 41.7e9) < 0.1e9


def test_temporal_shift_moves_one_eighth_of_channels_each_way():
    batch, frames, channels = 2, 5, 16
    clip = np.random.default_rng(0).normal(size=(batch, frames, 3, 3, channels)).astype("float32")
    folded = clip.reshape(batch * frames, 3, 3, channels)
    shifted = TemporalShift(0.125)([folded, clip]).numpy().reshape(clip.shape)
    np.testing.assert_array_equal(shifted[:, :-1, ..., 0:2], clip[:, 1:, ..., 0:2])
    np.testing.assert_array_equal(shifted[:, -1, ..., 0:2], 0)
    np.testing.assert_array_equal(shifted[:, 1:, ..., 2:4], clip[:, :-1, ..., 2:4])
    np.testing.assert_array_equal(shifted[:, 0, ..., 2:4], 0)
    np.testing.assert_array_equal(shifted[..., 4:], clip[..., 4:])


def _frame_features(model, clip):
    return model(clip, training=False)["res5"].numpy().mean(axis=(2, 3))


@pytest.mark.parametrize("fraction", [0.0, 0.125])
def test_tsm_mixes_neighbouring_frames_only_when_shifting(fraction, tiny_models):
    model = tiny_models("tsm_r50") if fraction == 0.125 else build_backbone(
        "tsm_r50", width_multiplier=TINY, return_endpoints=True, channel_shift_fraction=0.0)
    clip = _clip("tsm_r50")
    changed = clip.copy()
    changed[:, 0] += 1.0
    difference = np.abs(_frame_features(model, changed) - _frame_features(model, clip))
    per_frame = difference.max(axis=(0, 2))
    assert per_frame[0] > 1e-3
    if fraction:
        assert np.all(per_frame[1:] > 1e-6)  # 16 shifting blocks reach every frame
    else:
        np.testing.assert_array_equal(per_frame[1:], 0)


def test_count_flops_equals_hand_count_for_conv_and_dense():
    inputs = keras.Input((4, 8, 8, 3))
    x = keras.layers.Conv3D(5, (3, 3, 3), strides=(1, 2, 2), padding="same")(inputs)
    x = keras.layers.Conv3D(6, 1)(x)
    outputs = keras.layers.Dense(7)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    batch = 2
    conv = batch * 4 * 4 * 4 * 5 * (3 * 3 * 3 * 3)
    pointwise = batch * 4 * 4 * 4 * 6 * 5
    dense = batch * 7 * (4 * 4 * 4 * 6)
    assert count_flops(model, (batch, 4, 8, 8, 3)) == conv + pointwise + dense


def test_count_flops_needs_a_full_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(build_backbone("slow_r18", width_multiplier=TINY), (1, None, 32, 32, 3))
