"""BraVe's released `.npy` checkpoints (deepmind/brave): every tensor of a parameter
tree in the official naming lands in its Keras weight (heads with their biases folded
into BN), the run is BraVe's recipe with the source model's input, BraVe's channel-shift
layout against a NumPy reference, and the errors.

The trees are built here from the official module names (brave/models/brave/
tsm_resnet.py, resnet.py, modules.py, brave.py:159-217, with dm-haiku's "~" for modules
made in a constructor), at 1/8 width. The official Haiku model itself is not importable
here (not on PyPI); its features were compared outside the repository (docs/brave.md).
"""
import json
import os

import numpy as np
import pytest

from helpers import restored_method
from video_ssl import pretrained
from video_ssl.import_checkpoint import import_checkpoint
from video_ssl.importing import brave, npy_file
from video_ssl.methods.base import read_input_spec
from video_ssl.models.backbones.tsm import TemporalShift, tsm_resnet50

WIDTH = 0.125
HIDDEN, EMBEDDING = 16, 8
CONFIG = dict(include_video_in_broad_view=True, include_audio_in_broad_view=True,
              num_frames_narrow=16, image_size_narrow=224, step_broad=4, num_frames_broad=64,
              image_size_broad=112, step_narrow=2, output_dims=EMBEDDING,
              tsm_resnet_width_multiplier=1, num_spectrogram_bins=80, fft_step=160,
              dataset_shards=[], input_video_sample_rate=25.0, input_audio_sample_rate=48000)


class _Tree:
    """A Haiku params/state tree in BraVe's naming, and where each tensor must land:
    `expected[(model, Keras variable path)]` (model: an encoder or head attribute)."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.params, self.state, self.expected = {}, {}, {}

    def array(self, shape, low=None):
        if low is not None:
            return self.rng.uniform(low, low + 1.0, shape).astype(np.float32)
        return self.rng.normal(0, 0.3, shape).astype(np.float32)

    def conv(self, module, shape, targets):
        self.params[module] = {"w": self.array(shape)}
        for model, layer in targets:
            self.expected[(model, f"{layer}/kernel")] = self.params[module]["w"]

    def batch_norm(self, module, channels, targets, rank=4, bias=None):
        shape = (1,) * (rank - 1) + (channels,)
        self.params[module] = {"scale": self.array(shape, 0.5), "offset": self.array(shape)}
        for ema, low in (("mean_ema", None), ("var_ema", 0.5)):
            self.state[f"{module}/~/{ema}"] = {"average": self.array(shape, low),
                                              "hidden": self.array(shape),
                                              "counter": np.int32(1000)}
        mean = self.state[f"{module}/~/mean_ema"]["average"].reshape(-1)
        for model, layer in targets:
            for name, value in (
                    ("gamma", self.params[module]["scale"]),
                    ("beta", self.params[module]["offset"]),
                    ("moving_mean", mean if bias is None else mean - bias),
                    ("moving_variance", self.state[f"{module}/~/var_ema"]["average"])):
                self.expected[(model, f"{layer}/{name}")] = value.reshape(-1)

    def resnet50(self, model, base, stem, unit, in_channels, sep):
        """tsm_resnet.py's TSMResNetV2 (sep "/") or resnet.py's ResNetV2 (sep "/~/":
        its stem, block groups and convs are made in constructors)."""
        at = lambda layer: [(model, layer)]  # noqa: E731
        width = int(64 * WIDTH)
        self.conv(f"{base}{sep}{stem}", (7, 7, in_channels, width), at("conv1"))
        for u, (count, channels) in enumerate(zip((3, 4, 6, 3), (256, 512, 1024, 2048))):
            out = int(channels * WIDTH)
            for b in range(count):
                block, name = f"{base}{sep}{unit}_{u}/block_{b}", f"res{u + 2}_{b}"
                conv = f"{block}{sep}"
                cin = width if b == 0 else out
                self.batch_norm(f"{block}/batch_norm", cin, at(f"{name}_preact_bn"))
                if b == 0:
                    self.conv(f"{conv}shortcut_conv", (1, 1, cin, out), at(f"{name}_proj"))
                self.conv(f"{conv}conv_0", (1, 1, cin, out // 4), at(f"{name}_a"))
                self.batch_norm(f"{block}/batch_norm_1", out // 4, at(f"{name}_a_bn"))
                self.conv(f"{conv}conv_1", (3, 3, out // 4, out // 4), at(f"{name}_b"))
                self.batch_norm(f"{block}/batch_norm_2", out // 4, at(f"{name}_b_bn"))
                self.conv(f"{conv}conv_2", (1, 1, out // 4, out), at(f"{name}_c"))
            width = out
        self.batch_norm(f"{base}/batch_norm", width, at("final_bn"))

    def tsm(self, model, root, in_channels=3):
        self.resnet50(model, f"{root}/TSMResNetV2", "tsm_resnet_stem", "tsm_resnet_unit",
                      in_channels, "/")

    def audio(self):
        self.resnet50("broad_audio", "broad_audio_embedding/res_net_v2", "initial_conv",
                      "block_group", 1, "/~/")

    def heads(self, module, models, features):
        """modules.py's ProjectAndPredict; `models`: the heads of ours it lands in."""
        def linear(name, shape, heads, layer, bias_to_bn):
            self.params[name] = {"w": self.array(shape), "b": self.array(shape[-1:])}
            for head in heads:
                self.expected[(head, f"{head}/{head}_{layer}/kernel")] = self.params[name]["w"]
                if not bias_to_bn:
                    self.expected[(head, f"{head}/{head}_{layer}/bias")] = self.params[name]["b"]
            return self.params[name]["b"]

        projectors = [f"{m}_projector" for m in models]
        predictors = [f"{m}_predictor" for m in models]
        for kind, heads, dims, output_bn in (
                ("projector", projectors, (features, HIDDEN, EMBEDDING), True),
                ("predictor", predictors, (EMBEDDING, HIDDEN, EMBEDDING), False)):
            prefix = f"{module}/{kind}"
            bias = linear(f"{prefix}/linear", dims[:2], heads, "linear0", True)
            self.batch_norm(f"{prefix}/batch_norm", HIDDEN,
                            [(h, f"{h}/{h}_bn0") for h in heads], rank=2, bias=bias)
            bias = linear(f"{prefix}/linear_1", dims[1:], heads, "linear1", output_bn)
            if output_bn:
                self.batch_norm(f"{prefix}/batch_norm_1", EMBEDDING,
                                [(h, f"{h}/{h}_bn_out") for h in heads], rank=2, bias=bias)

    def save(self, path, config=CONFIG):
        np.save(path, {"params": self.params, "state": self.state, "config": config})
        return str(path)


def _v_fa_tree(seed=0):
    """V/AF as the official trainer would write it with a flow broad view: narrow TSM,
    broad flow TSM (2 channels), audio ResNet, the shared head and one unused copy."""
    tree = _Tree(seed)
    tree.tsm("narrow", "narrow_video_embedding")
    tree.tsm("broad_flow", "broad_video_embedding", in_channels=2)
    tree.audio()
    models = ["broad_flow", "narrow_flow", "broad_audio", "narrow_audio"]
    tree.heads("shared_project", models, int(2048 * WIDTH))
    tree.heads("shared_project_1", [], int(2048 * WIDTH))  # init's copy: dropped
    return tree


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The V/FA tree, saved as the released file and imported as a run."""
    tree = _v_fa_tree()
    folder = tmp_path_factory.mktemp("brave")
    path = tree.save(folder / "29557527_2_0.npy")
    out = str(folder / "run")
    import_checkpoint("brave", path, out)
    return tree, path, out


def test_every_tensor_lands_in_its_keras_weight(imported):
    tree, path, _ = imported
    converted = brave.convert(path)
    got = {(model, key): value for part in (converted.encoders, converted.heads)
           for model, weights in part.items() for key, value in weights.items()}
    assert sorted(got) == sorted(tree.expected)
    for key, value in tree.expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))
    dropped = converted.source.dropped
    counters = [k for k in dropped if k.endswith(("/hidden", "/counter"))]
    assert len(counters) == 2 * sum(k.endswith("_ema") for k in tree.state)
    copies = {f"{m}/{n}" for part in (tree.params, tree.state) for m, values in part.items()
              for n in values if m.startswith("shared_project_1/")}
    assert {k for k in dropped if k not in counters} == copies - set(counters)


def _batch_norm(x, tree, module):
    """Haiku's BatchNorm at inference (dm-haiku batch_norm.py; eps 1e-5)."""
    mean = tree.state[f"{module}/~/mean_ema"]["average"]
    var = tree.state[f"{module}/~/var_ema"]["average"]
    p = tree.params[module]
    return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["offset"]


def test_run_is_brave_recipe_with_the_source_input_and_heads(imported):
    tree, _, out = imported
    record = json.load(open(os.path.join(out, "import.json")))
    assert record["recipe"] == ["brave_v_fa.gin"] and record["method"] == "BraVe"
    assert record["encoders"] == ["broad_audio", "broad_flow", "narrow"]
    assert len(record["heads"]) == 8
    assert "train_input.normalize = False" in record["bindings"]
    narrow = pretrained.load_encoder(out)
    assert (narrow.encoder, narrow.modality) == ("narrow", "rgb")
    # brave/evaluate_video_embeddings.py: frames in [0, 1]; config: 16 at 25/2 fps, 224².
    assert narrow.normalization == {"mean": 0.0, "std": 1.0}
    assert narrow.clip == {"num_frames": 16, "frame_stride": 1, "crop_size": 224,
                           "target_fps": 12.5}
    for variable in narrow.backbone.weights:
        np.testing.assert_array_equal(variable.numpy(), tree.expected[("narrow", variable.path)])
    shifts = [layer for layer in narrow.backbone.layers if isinstance(layer, TemporalShift)]
    assert len(shifts) == 16 and {s.layout for s in shifts} == {"brave"}

    method = restored_method(out)
    assert method.broad == ("flow", "audio")
    assert {s.layout for s in method.broad_flow_backbone.layers
            if isinstance(s, TemporalShift)} == {"brave"}
    audio = read_input_spec(out)["views"]["broad_audio"]["audio"]
    assert (audio["sample_rate"], audio["frame_step"], audio["duration"]) == (48000.0, 160, 10.24)
    # The heads compute the official projector/predictor (modules.py:87-118), biases
    # before a BN folded into its mean.
    features = np.random.default_rng(1).normal(size=(3, int(2048 * WIDTH))).astype(np.float32)
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    p = {k: v for k, v in tree.params.items() if k.startswith("shared_project/")}
    projector = "shared_project/projector"
    z = relu(_batch_norm(features @ p[f"{projector}/linear"]["w"] + p[f"{projector}/linear"]["b"],
                         tree, f"{projector}/batch_norm"))
    z = _batch_norm(z @ p[f"{projector}/linear_1"]["w"] + p[f"{projector}/linear_1"]["b"],
                    tree, f"{projector}/batch_norm_1")
    predictor = "shared_project/predictor"
    h = relu(_batch_norm(z @ p[f"{predictor}/linear"]["w"] + p[f"{predictor}/linear"]["b"],
                         tree, f"{predictor}/batch_norm"))
    h = h @ p[f"{predictor}/linear_1"]["w"] + p[f"{predictor}/linear_1"]["b"]
    for side in ("narrow_flow", "broad_audio"):
        ours_z = getattr(method, f"{side}_projector")(features, training=False).numpy()
        ours_h = getattr(method, f"{side}_predictor")(ours_z, training=False).numpy()
        np.testing.assert_allclose(ours_z, z, rtol=1e-4, atol=1e-4 * np.abs(z).max())
        np.testing.assert_allclose(ours_h, h, rtol=1e-4, atol=1e-4 * np.abs(h).max())


def _brave_shift(x, fraction=0.125):
    """NumPy transcription of BraVe's temporal_shift_gpu (tsm_resnet.py:467-497) on
    (B, T, H, W, C): slots [0, n) <- channels [C-n, C) of t+1, [C-n, C) <- [0, n) of t-1."""
    n = int(x.shape[-1] * fraction)
    from_next = np.zeros_like(x[..., -n:])
    from_next[:, :-1] = x[:, 1:, ..., -n:]
    from_previous = np.zeros_like(x[..., :n])
    from_previous[:, 1:] = x[:, :-1, ..., :n]
    return np.concatenate([from_next, x[..., n:-n], from_previous], axis=-1)


def _paper_shift(x, fraction=0.125):
    """The TSM paper's layout: [0, n) <- t+1, [n, 2n) <- t-1, the rest stays."""
    n = int(x.shape[-1] * fraction)
    out = x.copy()
    out[..., :2 * n] = 0
    out[:, :-1, ..., :n] = x[:, 1:, ..., :n]
    out[:, 1:, ..., n:2 * n] = x[:, :-1, ..., n:2 * n]
    return out


@pytest.mark.parametrize("layout, reference", [("brave", _brave_shift), ("tsm", _paper_shift)])
def test_shift_layouts_match_numpy(layout, reference):
    clip = np.random.default_rng(0).normal(size=(2, 5, 3, 3, 16)).astype(np.float32)
    folded = clip.reshape(-1, *clip.shape[2:])
    shifted = TemporalShift(0.125, layout)([folded, clip]).numpy().reshape(clip.shape)
    np.testing.assert_array_equal(shifted, reference(clip))
    assert TemporalShift.from_config(TemporalShift(0.125, layout).get_config()).layout == layout
    with pytest.raises(ValueError, match="layout 'other'"):
        TemporalShift(0.125, "other")


def test_shift_layout_changes_the_features():
    """Same weights, the two layouts: different features (why the importer picks)."""
    model = tsm_resnet50(width_multiplier=WIDTH, shift_layout="brave")
    other = tsm_resnet50(width_multiplier=WIDTH)
    other.set_weights(model.get_weights())
    clip = np.random.default_rng(0).uniform(size=(1, 4, 32, 32, 3)).astype(np.float32)
    assert not np.allclose(model(clip).numpy(), other(clip).numpy(), rtol=1e-3)


def test_recipes_follow_the_broad_networks(tmp_path):
    vvv = _Tree()
    vvv.tsm("narrow", "narrow_video_embedding")
    vvv.tsm("broad_rgb", "broad_video_embedding")
    converted = brave.convert(vvv.save(tmp_path / "vvv.npy"))
    assert converted.gin_files == ["brave_v_vrc_x3.gin"] and not converted.heads
    assert "BROAD_BACKBONE = 'tsm_r50'" in converted.bindings
    va = _Tree()
    va.tsm("narrow", "narrow_video_embedding")
    va.audio()
    converted = brave.convert(va.save(tmp_path / "va.npy", config=None))
    assert converted.gin_files == ["brave_v_a.gin"] and sorted(converted.encoders) == [
        "broad_audio", "narrow"]
    assert not any("train_input.num_frames" in b for b in converted.bindings)


def test_haiku_containers_read_without_haiku(tmp_path):
    """dm-haiku 0.0.4 (the official pin) pickles its FlatMapping; JAX arrays pickle
    as JAX's: both read back as dicts and NumPy arrays without importing them."""
    hk = pytest.importorskip("haiku")
    jnp = pytest.importorskip("jax.numpy")
    tree = {"a/b": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    path = str(tmp_path / "flat.npy")
    np.save(path, {"params": hk.data_structures.to_immutable_dict(tree),
                   "state": {"c": {"average": jnp.ones(2)}}})
    raw = open(path, "rb").read()
    assert b"FlatMapping" in raw and b"jax" in raw
    loaded = npy_file.load(path)
    assert type(loaded["params"]) is dict and type(loaded["params"]["a/b"]) is dict
    np.testing.assert_array_equal(loaded["params"]["a/b"]["w"], tree["a/b"]["w"])
    assert type(loaded["state"]["c"]["average"]) is np.ndarray


def _fails(path, out, match, encoder=None):
    with pytest.raises(ValueError, match=match) as error:
        import_checkpoint("brave", str(path), out, encoder=encoder)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp")


def test_errors_name_the_file_and_write_nothing(tmp_path):
    out = str(tmp_path / "run")
    text = tmp_path / "text.npy"
    text.write_text("not a checkpoint\n")
    _fails(text, out, "not a .npy file")
    array = tmp_path / "array.npy"
    np.save(array, np.ones(3))
    _fails(array, out, r"holds ndarray; expected deepmind/brave's checkpoint")
    no_state = tmp_path / "no_state.npy"
    np.save(no_state, {"params": {}})
    _fails(no_state, out, r"no 'state' tree")
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(open(_v_fa_tree().save(tmp_path / "whole.npy"), "rb").read()[:5000])
    _fails(truncated, out, "corrupt or truncated")

    def variant(name, change):
        tree = _v_fa_tree()
        change(tree)
        return tree.save(tmp_path / f"{name}.npy")

    conv = "narrow_video_embedding/TSMResNetV2/tsm_resnet_unit_1/block_2/conv_1"
    _fails(variant("missing", lambda t: t.params.pop(conv)), out,
           rf"no tensor '{conv}/w'")
    bn = "broad_audio_embedding/res_net_v2/~/block_group_2/block_0/batch_norm_1"
    _fails(variant("shape", lambda t: t.params[bn].update(scale=np.ones((1, 1, 1, 3)))),
           out, rf"'{bn}/scale' has shape \(1, 1, 1, 3\), expected \(1, 1, 1, 32\)")
    _fails(variant("extra", lambda t: t.params.update({"shared_project/extra": {
        "w": np.ones(2)}})), out, r"tensor 'shared_project/extra/w' of shape \(2,\) has no place")

    def deeper(tree):  # a TSM-ResNet-101 narrow network
        block = "narrow_video_embedding/TSMResNetV2/tsm_resnet_unit_2/block_{}"
        for b in range(6, 23):
            tree.params[f"{block.format(b)}/conv_0"] = tree.params[f"{block.format(5)}/conv_0"]
    _fails(variant("r101", deeper), out, r"\(3, 4, 23, 3\) blocks per stage; only "
           r"ResNet-50's \(3, 4, 6, 3\)")
    four = "broad_video_embedding/TSMResNetV2/tsm_resnet_stem"
    _fails(variant("rgbd", lambda t: t.params[four].update(w=np.ones((7, 7, 4, 8)))), out,
           "takes 4 input channels; expected 3 \\(RGB\\) or 2 \\(flow\\)")
    other = variant("other", lambda t: t.params.update({"broad_flow_embedding/x": {
        "w": np.ones(2)}}))
    _fails(other, out, r"module 'broad_flow_embedding' is not part of deepmind/brave's model "
           r"\(brave/models/brave/brave.py\); --encoder=narrow")
    _fails(other, out, r"--encoder=broad: expected 'narrow'", encoder="broad")
    converted = brave.convert(other, encoder="narrow")
    assert sorted(converted.encoders) == ["narrow"] and not converted.heads
    assert converted.gin_files == ["brave_v_fa.gin"]
    converted.source.check_consumed()
