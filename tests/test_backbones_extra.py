"""Architecture-specific checks for S3D, S3D-G and R(2+1)D-18 (generic shape, gradient and
save/load checks for every backbone live in test_backbones.py)."""
import keras
import numpy as np
import pytest

from video_ssl.models import build_backbone
from video_ssl.models.backbones.layers import width
from video_ssl.models.backbones.r2plus1d import mid_channels
from video_ssl.models.backbones.s3d import INCEPTION_WIDTHS, SelfGating

TINY = 1 / 8


def _trainable_params(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def _inception_out(block):
    b0, _, b1, _, b2, b3 = (width(w, TINY) for w in INCEPTION_WIDTHS[block])
    return b0 + b1 + b2 + b3


@pytest.fixture(scope="module")
def tiny_s3dg():
    return build_backbone("s3dg", width_multiplier=TINY, return_endpoints=True)


@pytest.fixture(scope="module")
def full_r2plus1d():
    return {rule: build_backbone("r2plus1d_18", mid_channels_rule=rule)
            for rule in ("paper", "torchvision")}


def test_s3d_endpoints_follow_paper_strides(tiny_s3dg):
    clip = np.random.rand(1, 16, 64, 64, 3).astype("float32")
    shapes = {k: tuple(v.shape) for k, v in tiny_s3dg(clip).items()}
    assert shapes == {
        "conv1a": (1, 8, 32, 32, width(64, TINY)),
        "conv2c": (1, 8, 16, 16, width(192, TINY)),
        "mixed3c": (1, 8, 8, 8, _inception_out("mixed3c")),
        "mixed4f": (1, 4, 4, 4, _inception_out("mixed4f")),
        "mixed5c": (1, 2, 2, 2, _inception_out("mixed5c")),
        "pooled": (1, _inception_out("mixed5c")),
    }


def test_s3dg_gates_every_inception_branch_and_s3d_none(tiny_s3dg):
    plain = build_backbone("s3d", width_multiplier=TINY)
    gated = [layer.name for layer in tiny_s3dg.layers if isinstance(layer, SelfGating)]
    assert sorted(gated) == sorted(f"{block}_b{i}_gating"
                                   for block in INCEPTION_WIDTHS for i in range(4))
    assert not any(isinstance(layer, SelfGating) for layer in plain.layers)


@pytest.mark.parametrize("name, paper_count", [("s3d", 7.91e6), ("s3dg", 9.1e6)])
def test_s3d_parameter_count_matches_paper(name, paper_count):
    count = _trainable_params(build_backbone(name))
    print(f"{name}: {count:,} trainable parameters (paper {paper_count / 1e6:.2f}M)")
    assert abs(count - paper_count) / paper_count < 0.02


def test_self_gating_matches_numpy():
    x = np.random.randn(2, 3, 4, 5, 6).astype("float32")
    layer = SelfGating()
    layer.build(x.shape)
    kernel = np.random.randn(6, 6).astype("float32")
    bias = np.random.randn(6).astype("float32")
    layer.set_weights([kernel, bias])
    gates = 1 / (1 + np.exp(-(x.mean(axis=(1, 2, 3)) @ kernel + bias)))
    np.testing.assert_allclose(layer(x), x * gates[:, None, None, None, :],
                               rtol=1e-5, atol=1e-6)


def test_mid_channels_formula():
    # torchvision's r2plus1d_18 widths, from the same formula with t = d = 3.
    assert [mid_channels(64, 64), mid_channels(64, 128), mid_channels(128, 128),
            mid_channels(128, 256), mid_channels(256, 256), mid_channels(256, 512),
            mid_channels(512, 512)] == [144, 230, 288, 460, 576, 921, 1152]
    assert mid_channels(3, 64, temporal=3, spatial=7) == _paper_mid(3, 64, t=3, d=7)


def _paper_mid(n_in, n_out, t=3, d=3):
    return (t * d * d * n_in * n_out) // (d * d * n_in + t * n_out)


def _expected_blocks(rule):
    """(name, in channels, out channels, conv1 M, conv2 M) of each residual block."""
    rows, n_in = [], 64
    for stage, n_out in zip(range(2, 6), (64, 128, 256, 512)):
        for block in range(2):
            first = _paper_mid(n_in, n_out)
            second = first if rule == "torchvision" else _paper_mid(n_out, n_out)
            rows.append((f"res{stage}_{block}", n_in, n_out, first, second))
            n_in = n_out
    return rows


@pytest.mark.parametrize("rule", ["paper", "torchvision"])
def test_r2plus1d_mid_channels_per_stage(full_r2plus1d, rule):
    model = full_r2plus1d[rule]
    for block, _, _, first, second in _expected_blocks(rule):
        assert model.get_layer(f"{block}_conv1_spatial").filters == first, block
        assert model.get_layer(f"{block}_conv2_spatial").filters == second, block


@pytest.mark.parametrize("rule", ["paper", "torchvision"])
def test_r2plus1d_parameter_count(full_r2plus1d, rule):
    expected = 3 * 49 * 45 + 2 * 45 + 45 * 3 * 64 + 2 * 64  # stem convs + BNs
    for _, n_in, n_out, first, second in _expected_blocks(rule):
        for cin, mid in ((n_in, first), (n_out, second)):
            expected += 9 * cin * mid + 2 * mid + 3 * mid * n_out + 2 * n_out
        if n_in != n_out:
            expected += n_in * n_out + 2 * n_out  # projection shortcut + BN
    count = _trainable_params(full_r2plus1d[rule])
    print(f"r2plus1d_18 ({rule} rule): {count:,} trainable parameters")
    assert count == expected
    if rule == "torchvision":  # torchvision's 31,505,325 less its 512x400 fc
        assert count == 31_505_325 - 512 * 400 - 400


def test_r2plus1d_endpoints_follow_strides():
    model = build_backbone("r2plus1d_18", width_multiplier=TINY, return_endpoints=True)
    shapes = {k: tuple(v.shape) for k, v in model(np.zeros((1, 8, 32, 32, 3), "float32")).items()}
    assert shapes == {"conv1": (1, 8, 16, 16, 8), "res2": (1, 8, 16, 16, 8),
                      "res3": (1, 4, 8, 8, 16), "res4": (1, 2, 4, 4, 32),
                      "res5": (1, 1, 2, 2, 64), "pooled": (1, 64)}


@pytest.mark.parametrize("name", ["s3d", "r2plus1d_18"])
def test_flow_input(name):
    model = build_backbone(name, width_multiplier=TINY, input_channels=2)
    features = keras.ops.convert_to_numpy(model(np.random.rand(2, 8, 32, 32, 2).astype("float32")))
    assert features.shape == (2, model.output_shape[-1])
    assert np.isfinite(features).all() and np.abs(features[0] - features[1]).max() > 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="input_channels=2"):
        build_backbone("s3d", input_channels=2, input_shape=(8, 32, 32, 3))
    with pytest.raises(ValueError, match="mid_channels_rule"):
        build_backbone("r2plus1d_18", mid_channels_rule="vmz")
