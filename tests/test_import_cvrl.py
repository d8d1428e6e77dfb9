"""The `cvrl` importer: TF Model Garden's CVRL checkpoints as SimCLR runs of `r3d_50`.

The checkpoints are built here as TF2 object-based checkpoints in the object layout
Model Garden's trainer writes (official/core/base_trainer.py:200-208: global_step,
model, optimizer and the model's checkpoint_items, i.e. its backbone; layer objects
`layer_with_weights-<n>`, BottleneckBlock3D's `_temporal_conv`, `_norm1`, ...; read from
tf-models-official 2.20), with tf.Variables under nested tf.Modules at 1/8 width. A TF1
Adam stands in for Model Garden's Keras SGD: both save slots as `.OPTIMIZER_SLOT` and
their own state under `optimizer/`. Model Garden itself needs tf_keras and is not a
dependency here; its ResNet3D is transcribed below in tf.nn ops (TF 'SAME' padding,
BN epsilon 1e-3, the stem's temporal stride 2) as the numerical reference. Outside this
repository, with the real tf-models-official 2.20 model: `_Layout` at full width holds
its trainer checkpoint's model variables key for key and shape for shape, and the
imported features equal its own to the last bit (16x224x224 and 16x161x161 clips).
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import restored_method, run_main
from video_ssl import import_checkpoint as cli, pretrained
from video_ssl.import_checkpoint import import_checkpoint
from video_ssl.importing import cvrl
from video_ssl.importing.weights import ImportFailure
from video_ssl.models import build_backbone

WIDTH = 8  # the stem's channels: 1/8 of R3D-50
HIDDEN, EMBEDDING = 16, 8
CLIPS = (2, 6, 40, 40, 3)  # odd sizes along the way: 'same' padding pads after
# CVRL's R3D-50 (configs/experiments/cvrl_pretrain_k600_200ep.yaml; resnet_3d.py
# RESNET_SPECS[50]): (our stage, blocks, bottleneck width, spatial stride, temporal kernel).
R3D_50 = (("res2", 3, WIDTH, 1, 1), ("res3", 4, 2 * WIDTH, 2, 1),
          ("res4", 6, 4 * WIDTH, 2, 3), ("res5", 3, 8 * WIDTH, 2, 3))
BN = ("gamma", "beta", "moving_mean", "moving_variance")


class _Layout:
    """CVRL's model as named arrays, keyed by object path (without the
    `/.ATTRIBUTES/VARIABLE_VALUE` suffix), and where each must land:
    `target[key] = (encoder or head, Keras variable path)`; `folded[bias key] = the BN
    whose moving mean takes it`."""

    def __init__(self, seed=0, stages=R3D_50, stem=(5, 7, 7, 3, WIDTH)):
        self.rng = np.random.default_rng(seed)
        self.arrays, self.target, self.folded = {}, {}, {}
        self.stages = stages
        self.conv("backbone/layer_with_weights-0", stem, "conv1")
        self.batch_norm("backbone/layer_with_weights-1", stem[-1], "conv1_bn")
        channels, number = stem[-1], 2
        for stage, blocks, inner, _, temporal in stages:
            for index in range(blocks):
                block, name = f"backbone/layer_with_weights-{number}", f"{stage}_{index}"
                convs = [("_temporal_conv", "_norm1", (temporal, 1, 1, channels, inner), "a"),
                         ("_spatial_conv", "_norm2", (1, 3, 3, inner, inner), "b"),
                         ("_expand_conv", "_norm3", (1, 1, 1, inner, 4 * inner), "c")]
                if index == 0:
                    convs.insert(0, ("_shortcut_conv", "_norm0",
                                     (1, 1, 1, channels, 4 * inner), "proj"))
                for conv, norm, shape, ours in convs:
                    self.conv(f"{block}/{conv}", shape, f"{name}_{ours}")
                    self.batch_norm(f"{block}/{norm}", shape[-1], f"{name}_{ours}_bn")
                channels, number = 4 * inner, number + 1
        self.features = channels

    def conv(self, module, shape, layer):
        fan_in = np.prod(shape[:-1])
        self.arrays[f"{module}/kernel"] = self.rng.normal(0, np.sqrt(2 / fan_in), shape)
        self.target[f"{module}/kernel"] = ("rgb", f"{layer}/kernel")

    def batch_norm(self, module, channels, layer, model="rgb"):
        """Random parameters and statistics (`calibrated` measures the statistics)."""
        for name, low in (("gamma", 0.5), ("beta", None), ("moving_mean", None),
                          ("moving_variance", 0.5)):
            self.arrays[f"{module}/{name}"] = (self.rng.uniform(low, low + 1, channels)
                                               if low else self.rng.normal(0, 0.1, channels))
        for name in BN:
            self.target[f"{module}/{name}"] = (model, f"{layer}/{name}")

    def head(self):
        """video_ssl_model.py:112-126: (Dense, BN, ReLU) x 3, then Dense."""
        fan_in = self.features
        for index in range(4):
            dense = f"model/layer_with_weights-{2 * index + 1}"
            units = EMBEDDING if index == 3 else HIDDEN
            self.arrays[f"{dense}/kernel"] = self.rng.normal(0, np.sqrt(2 / fan_in),
                                                             (fan_in, units))
            self.arrays[f"{dense}/bias"] = self.rng.normal(0, 0.1, units)
            layer = f"projector/projector_linear{index}"
            self.target[f"{dense}/kernel"] = ("projector", f"{layer}/kernel")
            if index == 3:
                self.target[f"{dense}/bias"] = ("projector", f"{layer}/bias")
            else:
                norm = f"model/layer_with_weights-{2 * index + 2}"
                self.batch_norm(norm, units, f"projector/projector_bn{index}", "projector")
                self.folded[f"{dense}/bias"] = norm
            fan_in = units
        return self

    def expected(self):
        """{(model, Keras path): value} the importer must produce."""
        values = {self.target[k]: v for k, v in self.arrays.items() if k in self.target}
        for bias, norm in self.folded.items():
            path = self.target[f"{norm}/moving_mean"]
            values[path] = self.arrays[f"{norm}/moving_mean"] - self.arrays[bias]
        return values

    def save(self, directory, *, trainer=True, head=True, step=71488):
        """As Model Garden's trainer writes it (`trainer`), else the backbone alone."""
        variables = {k: tf.Variable(v.astype(np.float32)) for k, v in self.arrays.items()
                     if head or not k.startswith("model/")}
        root = tf.Module()
        for key, variable in variables.items():
            node = root
            for part in key.split("/")[:-1]:
                if not hasattr(node, part):
                    setattr(node, part, tf.Module())
                node = getattr(node, part)
            setattr(node, key.rsplit("/", 1)[1], variable)
        if not trainer:
            return tf.train.Checkpoint(backbone=root.backbone).write(
                os.path.join(directory, "ckpt"))
        model = getattr(root, "model", tf.Module())
        setattr(model, "layer_with_weights-0", root.backbone)  # the functional model's
        optimizer = tf.compat.v1.train.AdamOptimizer(0.0)
        optimizer.apply_gradients([(tf.zeros_like(v), v) for k, v in variables.items()
                                   if "moving_" not in k])
        checkpoint = tf.train.Checkpoint(global_step=tf.Variable(step, dtype=tf.int64),
                                         model=model, optimizer=optimizer,
                                         backbone=root.backbone)
        return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=5).save(
            checkpoint_number=step)


def _batch_norm(x, arrays, module, epsilon, rng=None):
    """Keras BatchNormalization at inference; with `rng`, its moving statistics are
    first set to x's, perturbed (so that features depend on the input)."""
    if rng is not None:
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axes), x.var(axes)
        arrays[f"{module}/moving_mean"] = mean + 0.1 * np.sqrt(var) * rng.normal(size=mean.shape)
        arrays[f"{module}/moving_variance"] = var * rng.uniform(0.8, 1.25, var.shape)
    a = {name: arrays[f"{module}/{name}"] for name in BN}
    return ((x - a["moving_mean"]) / np.sqrt(a["moving_variance"] + epsilon) * a["gamma"]
            + a["beta"]).astype(np.float32)


def model_garden_features(layout, clip, rng=None):
    """Model Garden's ResNet3D forward (resnet_3d.py:163-231, nn_blocks_3d.py:254-283)
    in tf.nn ops: 'SAME' convs and pool, BN epsilon 1e-3, stem stride (2, 2, 2), pool
    stride (1, 2, 2), no temporal stride in the blocks; pooled res5."""
    a = layout.arrays
    relu = lambda x: np.maximum(x, 0)  # noqa: E731

    def conv_bn(x, module, norm, strides, padding="SAME"):
        y = tf.nn.conv3d(x, a[f"{module}/kernel"].astype(np.float32), (1, *strides, 1),
                         padding).numpy()
        return _batch_norm(y, a, norm, 1e-3, rng)

    x = relu(conv_bn(clip, "backbone/layer_with_weights-0", "backbone/layer_with_weights-1",
                     (2, 2, 2)))
    x = tf.nn.max_pool3d(x, (1, 1, 3, 3, 1), (1, 1, 2, 2, 1), "SAME").numpy()
    number = 2
    for _, blocks, _, stride, _ in layout.stages:
        for index in range(blocks):
            block = f"backbone/layer_with_weights-{number}"
            s = stride if index == 0 else 1
            shortcut = x if index else conv_bn(x, f"{block}/_shortcut_conv",
                                               f"{block}/_norm0", (1, s, s), "VALID")
            y = relu(conv_bn(x, f"{block}/_temporal_conv", f"{block}/_norm1", (1, 1, 1)))
            y = relu(conv_bn(y, f"{block}/_spatial_conv", f"{block}/_norm2", (1, s, s)))
            y = conv_bn(y, f"{block}/_expand_conv", f"{block}/_norm3", (1, 1, 1))
            x, number = relu(y + shortcut), number + 1
    return x.mean(axis=(1, 2, 3))


def model_garden_head(layout, features, rng=None):
    """video_ssl_model.py:112-126: Dense (bias) -> BN (epsilon 1e-5) -> ReLU, x3, Dense."""
    a, x = layout.arrays, features
    for index in range(4):
        dense = f"model/layer_with_weights-{2 * index + 1}"
        x = (x @ a[f"{dense}/kernel"] + a[f"{dense}/bias"]).astype(np.float32)
        if index < 3:
            x = np.maximum(_batch_norm(x, a, f"model/layer_with_weights-{2 * index + 2}",
                                       1e-5, rng), 0)
    return x


def calibrated(layout, seed=1):
    """`layout` with BN statistics measured on random clips and perturbed."""
    rng = np.random.default_rng(seed)
    clips = rng.uniform(0, 1, (4, *CLIPS[1:])).astype(np.float32)
    if any(k.startswith("model/") for k in layout.arrays):
        model_garden_head(layout, model_garden_features(layout, clips, rng), rng)
    else:
        model_garden_features(layout, clips, rng)
    return layout


@pytest.fixture(scope="module")
def trainer_checkpoint(tmp_path_factory):
    layout = calibrated(_Layout().head())
    prefix = layout.save(str(tmp_path_factory.mktemp("cvrl") / "model_dir"))
    return layout, prefix


@pytest.fixture(scope="module")
def imported(trainer_checkpoint, tmp_path_factory):
    layout, prefix = trainer_checkpoint
    out = str(tmp_path_factory.mktemp("imported") / "run")
    import_checkpoint("cvrl", prefix, out)
    return layout, prefix, out


def test_every_variable_lands_in_its_keras_weight(trainer_checkpoint):
    layout, prefix = trainer_checkpoint
    converted = cvrl.convert(prefix)
    got = {(model, key): value for part in (converted.encoders, converted.heads)
           for model, weights in part.items() for key, value in weights.items()}
    expected = layout.expected()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-6, err_msg=str(key))
    # Everything else is training state: slots, the optimizer's own, the counters.
    state = {k for k, _ in tf.train.list_variables(prefix)} - {
        "_CHECKPOINTABLE_OBJECT_GRAPH"} - {k + cvrl.VALUE for k in layout.arrays}
    assert set(converted.source.dropped) == state
    assert {k.split("/")[0] for k in state if ".OPTIMIZER_SLOT" not in k} == {
        "optimizer", "global_step", "save_counter"}
    assert "BACKBONE_KWARGS = {'width_multiplier': 0.125}" in converted.bindings


def _relative(ours, reference):
    return np.abs(ours - reference).max() / np.abs(reference).max()


def test_features_and_projections_match_model_gardens_forward(imported):
    layout, _, out = imported
    record = json.load(open(os.path.join(out, "import.json")))
    assert (record["method"], record["recipe"], record["heads"]) == (
        "SimCLR", ["simclr_rho2.gin"], ["projector"])
    encoder = pretrained.load_encoder(out)
    assert encoder.modality == "rgb" and encoder.backbone.name == "r3d_50"
    # video_ssl.py:95-96: 16 frames 2 apart at 224^2; [0, 1] values, no mean/std.
    assert encoder.clip == {"num_frames": 16, "frame_stride": 2, "crop_size": 224,
                            "target_fps": None}
    assert encoder.normalization == {"mean": 0.0, "std": 1.0}

    clips = np.random.default_rng(5).uniform(0, 1, CLIPS).astype(np.float32)
    reference = model_garden_features(layout, clips)
    assert _relative(reference[1], reference[0]) > 0.1  # the features see the clip
    ours = encoder.backbone(clips, training=False).numpy()
    assert _relative(ours, reference) < 1e-3

    # The head: Model Garden's biases before a BN folded into its moving mean.
    projector = restored_method(out).projector
    z = projector(reference, training=False).numpy()
    assert _relative(z, model_garden_head(layout, reference)) < 1e-4
    # PyTorch-style padding or BN epsilon, same weights: other features (why r3d_50).
    for option in ({"padding": "symmetric"}, {"bn_epsilon": 1e-5}):
        other = build_backbone("r3d_50", width_multiplier=0.125, **option)
        other.set_weights(encoder.backbone.get_weights())
        assert _relative(other(clips, training=False).numpy(), reference) > 1e-2, option


def test_a_folder_gives_its_newest_checkpoint_and_a_backbone_alone_imports(tmp_path):
    layout = calibrated(_Layout(seed=3))
    older = calibrated(_Layout(seed=4))
    folder = str(tmp_path / "model_dir")
    older.save(folder, step=100, head=False)
    newest = layout.save(folder, step=200, head=False)
    converted = cvrl.convert(folder)
    assert converted.source.path == newest and not converted.heads
    os.remove(os.path.join(folder, "checkpoint"))  # no state file: the highest step
    assert cvrl.convert(folder).source.path == newest
    assert cvrl.convert(newest + ".index").source.path == newest
    np.testing.assert_allclose(converted.encoders["rgb"]["conv1/kernel"],
                               layout.arrays["backbone/layer_with_weights-0/kernel"], rtol=1e-6)
    assert not any(b.startswith("SimCLR.") for b in converted.bindings)
    # Linear evaluation's checkpoint: backbone + a 600-way classifier, which is left out.
    alone = cvrl.convert(layout.save(str(tmp_path / "backbone"), trainer=False))
    assert not alone.source.dropped and not alone.heads
    layout.arrays["model/layer_with_weights-1/kernel"] = np.zeros((layout.features, 600))
    layout.arrays["model/layer_with_weights-1/bias"] = np.zeros(600)
    classifier = cvrl.convert(layout.save(str(tmp_path / "linear_eval")))
    assert not classifier.heads
    assert "linear classifier" in classifier.source.dropped[
        "model/layer_with_weights-1/kernel" + cvrl.VALUE]


def _fails(tmp_path, path, pattern):
    """Importing `path` fails with one line naming it, matching `pattern`; nothing written."""
    with pytest.raises(ImportFailure, match=pattern) as error:
        import_checkpoint("cvrl", str(path), str(tmp_path / "out"))
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_what_is_not_a_cvrl_checkpoint_fails_in_one_line(tmp_path):
    (tmp_path / "garbage.index").write_bytes(b"not a checkpoint\n" * 8)
    _fails(tmp_path, tmp_path / "garbage", "not a readable TensorFlow checkpoint")
    (tmp_path / "empty").mkdir()
    _fails(tmp_path, tmp_path / "empty", "no checkpoint in this folder")
    # A name-based (TF1) checkpoint: no object graph.
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "tf1"), tensor_names=["conv1/weights"],
                      shape_and_slices=[""], tensors=[tf.zeros((2, 2))])
    _fails(tmp_path, tmp_path / "tf1", "name-based")
    # A truncated data file.
    prefix = _Layout().save(str(tmp_path / "truncated"), trainer=False)
    data = f"{prefix}.data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    _fails(tmp_path, prefix, "not a readable TensorFlow checkpoint")
    # One of this project's own runs: not Model Garden's layout.
    tf.train.Checkpoint(model=tf.Module()).write(str(tmp_path / "ours" / "ckpt"))
    _fails(tmp_path, tmp_path / "ours" / "ckpt", "no tensor 'backbone/layer_with_weights-0/")
    with pytest.raises(FileNotFoundError):
        import_checkpoint("cvrl", str(tmp_path / "nothing"), str(tmp_path / "out"))
    code, _, err = run_main(cli, ["--format=cvrl", f"--input={tmp_path / 'garbage'}",
                                  f"--output={tmp_path / 'out'}"])
    assert code == 1 and len(err.strip().splitlines()) == 1 and "garbage" in err


def test_missing_or_misshapen_variables_fail_in_one_line(tmp_path):
    layout = _Layout()
    del layout.arrays["backbone/layer_with_weights-9/_norm2/moving_variance"]
    _fails(tmp_path, layout.save(str(tmp_path / "missing"), trainer=False),
           r"no tensor 'backbone/layer_with_weights-9/_norm2/moving_variance/")
    layout = _Layout()
    layout.arrays["backbone/layer_with_weights-3/_spatial_conv/kernel"] = np.zeros(
        (1, 3, 3, WIDTH, 2 * WIDTH))
    _fails(tmp_path, layout.save(str(tmp_path / "shape"), trainer=False),
           r"_spatial_conv/kernel/.* has shape \(1, 3, 3, 8, 16\), expected \(1, 3, 3, 8, 8\)")
    layout = _Layout()
    layout.arrays["backbone/layer_with_weights-2/_self_gating/kernel"] = np.zeros((1, 1))
    _fails(tmp_path, layout.save(str(tmp_path / "extra"), trainer=False),
           r"'backbone/layer_with_weights-2/_self_gating/kernel/.*' .* has no place")


def test_other_architectures_fail_in_one_line(tmp_path):
    # R3D-101: 23 blocks in res4.
    r101 = _Layout(stages=(R3D_50[0], R3D_50[1], ("res4", 23, 4 * WIDTH, 2, 3), R3D_50[3]))
    _fails(tmp_path, r101.save(str(tmp_path / "r101"), trainer=False),
           "33 bottleneck blocks under 'backbone/'; expected 16")
    # Model Garden's video classification default ResNet3D50 (configs/backbones_3d.py):
    # temporal kernels 3 in res2.
    i3d = _Layout(stages=(("res2", 3, WIDTH, 1, 3),) + R3D_50[1:])
    _fails(tmp_path, i3d.save(str(tmp_path / "i3d"), trainer=False),
           r"layer_with_weights-2/_temporal_conv/kernel/.* has shape \(3, 1, 1, 8, 8\), "
           r"expected \(1, 1, 1, 8, 8\)")
    # A 2-D ResNet (Model Garden's resnet.py): a 4-D stem kernel.
    flat = _Layout()
    flat.arrays["backbone/layer_with_weights-0/kernel"] = np.zeros((7, 7, 3, WIDTH))
    _fails(tmp_path, flat.save(str(tmp_path / "resnet2d"), trainer=False),
           r"has shape \(7, 7, 3, 8\); expected \(5, 7, 7, 3, 64\)")
    with pytest.raises(ImportFailure, match="--encoder=narrow"):
        cvrl.convert(str(tmp_path / "r101"), encoder="narrow")
