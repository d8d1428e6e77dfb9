"""BraVe (Recasens et al. 2021): the loss of eqs. 2-5 against NumPy, stop-gradient on the
targets, the predictors' learning rate, the recipes' views and a training run whose
narrow and broad encoders export, reload and are monitored."""
import glob
import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from video_ssl import config as config_lib, optim, pretrained, train as train_lib
from video_ssl.methods.brave import BraVe, brave_views
from video_ssl.training import runner
from gin_query import bound
from helpers import assert_monitors_logged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "gin_configs")
TINY = dict(narrow_backbone="slow_r18", broad_backbones={"rgb": "slow_r18", "flow": "slow_r18"},
            backbone_kwargs={"width_multiplier": 0.125}, hidden_dim=16, embedding_dim=8,
            synchronized_bn=False)
B, K = 4, 3


@pytest.fixture(scope="module")
def method():
    """Broad RGB with K = 3 clips and broad flow with K = 1; the default loss scale."""
    return BraVe(brave_views(("rgb", "flow"), {"rgb": K}), **TINY)


@pytest.fixture(scope="module")
def summed(method):
    """`method` (its weights) with loss_scale 'sum'."""
    model = BraVe(brave_views(("rgb", "flow"), {"rgb": K}), loss_scale="sum", **TINY)
    model.set_weights(method.get_weights())
    return model


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"views": {
        "narrow": {"rgb": rng.uniform(0, 1, (B, 1, 4, 32, 32, 3)).astype(np.float32)},
        "broad_rgb": {"rgb": rng.uniform(0, 1, (B, K, 4, 16, 16, 3)).astype(np.float32)},
        "broad_flow": {"flow": rng.normal(0, 1, (B, 1, 4, 16, 16, 2)).astype(np.float32)}},
        "label": np.zeros(B, np.int64)}


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _r(h, z):
    return np.mean(np.sum((_unit(h) - _unit(z)) ** 2, axis=-1))


def test_loss_matches_numpy_for_k_views_and_two_modalities(method, summed):
    """'sum': eqs. 2-5 as printed; 'mean' (default): the official code's mean over the
    regression terms of ½ r (deepmind/brave brave/models/brave/brave.py:291, :307)."""
    data = batch()

    def run(attr, x):
        return getattr(method, attr)(x, training=False).numpy()
    narrow = run("narrow_backbone", data["views"]["narrow"]["rgb"][:, 0])
    eqs, official_terms = {}, []
    for modality, k in (("rgb", K), ("flow", 1)):
        clips = data["views"][f"broad_{modality}"][modality]
        z_b = np.stack([run(f"broad_{modality}_projector",
                            run(f"broad_{modality}_backbone", clips[:, i])) for i in range(k)], 1)
        h_b = np.stack([run(f"broad_{modality}_predictor", z_b[:, i]) for i in range(k)], 1)
        z_n = run(f"narrow_{modality}_projector", narrow)
        h_n = run(f"narrow_{modality}_predictor", z_n)
        n_to_b, b_to_n = _r(h_n, z_b.mean(axis=1)), np.mean([_r(h_b[:, i], z_n)
                                                              for i in range(k)])
        eqs[modality] = n_to_b + b_to_n
        official_terms += [0.5 * n_to_b, 0.5 * b_to_n]
    for model, total, part in ((summed, sum(eqs.values()), lambda m: eqs[m]),
                               (method, np.mean(official_terms), lambda m: eqs[m] / 4)):
        terms = model.losses_per_modality(data, training=False)
        for modality in eqs:
            np.testing.assert_allclose(float(terms[modality]), part(modality), rtol=1e-4,
                                       atol=1e-5)
        np.testing.assert_allclose(float(model.total_loss(terms)), total, rtol=1e-4, atol=1e-5)
    assert method.loss_scale == "mean"
    with pytest.raises(ValueError, match="BraVe.loss_scale: expected one of"):
        BraVe(brave_views(), loss_scale="half", **TINY)


def test_targets_are_stop_gradient(summed):
    """The broad side learns from L_b->n alone and the narrow side from L_n->b alone."""
    method = summed
    data = batch(1)
    narrow_vars = method.narrow_backbone.trainable_variables
    broad_vars = method.broad_rgb_backbone.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        total = tf.add_n(list(method.losses_per_modality(data, training=False).values()))
        narrow = method.narrow_backbone(data["views"]["narrow"]["rgb"][:, 0], training=False)
        only_n_to_b, only_b_to_n = [], []
        for modality, k in (("rgb", K), ("flow", 1)):
            clips = data["views"][f"broad_{modality}"][modality]
            z_b = [getattr(method, f"broad_{modality}_projector")(getattr(
                method, f"broad_{modality}_backbone")(clips[:, i], training=False),
                training=False) for i in range(k)]
            z_n = getattr(method, f"narrow_{modality}_projector")(narrow, training=False)
            h_n = getattr(method, f"narrow_{modality}_predictor")(z_n, training=False)
            only_n_to_b.append(_tf_r(h_n, tf.stop_gradient(tf.add_n(z_b) / k)))
            only_b_to_n.append(tf.add_n([_tf_r(getattr(method, f"broad_{modality}_predictor")(
                z, training=False), tf.stop_gradient(z_n)) for z in z_b]) / k)
        only_n_to_b, only_b_to_n = tf.add_n(only_n_to_b), tf.add_n(only_b_to_n)
    for variables, alone in ((narrow_vars, only_n_to_b), (broad_vars, only_b_to_n)):
        for got, want in zip(tape.gradient(total, variables), tape.gradient(alone, variables)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-3, atol=1e-6)
    assert any(np.abs(g.numpy()).max() > 0 for g in tape.gradient(total, broad_vars))


def _tf_r(h, z):
    h, z = tf.math.l2_normalize(h, axis=-1), tf.math.l2_normalize(z, axis=-1)
    return tf.reduce_mean(tf.reduce_sum((h - z) ** 2, axis=-1))


def test_predictors_learning_rate_x10_reaches_exactly_their_variables(method):
    opt = optim.build_optimizer("lars", base_learning_rate=4.8, global_batch_size=512,
                                total_steps=10, lr_multipliers={"predictor": 10.0})
    predictors = {id(v) for attr in ("broad_rgb_predictor", "broad_flow_predictor",
                                     "narrow_rgb_predictor", "narrow_flow_predictor")
                  for v in getattr(method, attr).trainable_variables}
    assert predictors
    for variable in method.trainable_variables:
        assert opt.lr_multiplier(variable) == (10.0 if id(variable) in predictors else 1.0), \
            variable.path


@pytest.mark.parametrize("scale", ["mean", "sum"])
def test_train_step_learns_and_reports_each_term(method, summed, scale):
    method = {"mean": method, "sum": summed}[scale]
    method.compile(optimizer=optim.build_optimizer(
        "lars", base_learning_rate=1.0, global_batch_size=B, total_steps=10,
        lr_multipliers={"predictor": 10.0}))
    data = batch(2)
    before = [v.numpy() for v in method.broad_flow_backbone.trainable_variables]
    logs = method.train_step(data)
    assert set(logs) == {"loss", "loss_broad_rgb", "loss_broad_flow"}
    parts = float(logs["loss_broad_rgb"]) + float(logs["loss_broad_flow"])
    np.testing.assert_allclose(float(logs["loss"]), parts / 2 if scale == "mean" else parts,
                               rtol=1e-5)
    assert any(not np.array_equal(a, v.numpy()) for a, v in
               zip(before, method.broad_flow_backbone.trainable_variables))


@pytest.mark.slow
def test_train_step_compiles_with_xla():
    """The step compiles with `jit_compile=True` and gives the uncompiled step's loss."""
    losses, weights = [], None
    for jit in (False, True):
        model = BraVe(brave_views(("flow",), 2), **TINY)
        weights = weights or model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=optim.build_optimizer(
            "lars", base_learning_rate=1.0, global_batch_size=B, total_steps=10,
            lr_multipliers={"predictor": 10.0}), jit_compile=jit)
        model.optimizer.build(model.trainable_variables)
        data = batch(3)
        data["views"] = {name: data["views"][name] for name in ("narrow", "broad_flow")}
        data["views"]["broad_flow"]["flow"] = np.repeat(data["views"]["broad_flow"]["flow"], 2, 1)
        history = model.fit(tf.data.Dataset.from_tensors(data).repeat(), epochs=1,
                            steps_per_epoch=1, verbose=0, shuffle=False)
        losses.append(history.history["loss"][0])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


def test_mixed_bfloat16_step_keeps_the_loss_float32():
    with runner.dtype_policy("mixed_bfloat16"):
        model = BraVe(brave_views(("flow",)), **TINY)
    model.compile(optimizer=optim.build_optimizer(
        "lars", base_learning_rate=1.0, global_batch_size=B, total_steps=10))
    data = batch(5)
    data["views"] = {name: data["views"][name] for name in ("narrow", "broad_flow")}
    terms = model.losses_per_modality(data)
    assert terms["flow"].dtype == tf.float32 and np.isfinite(terms["flow"].numpy())
    assert model.narrow_backbone(data["views"]["narrow"]["rgb"][:, 0]).dtype == tf.bfloat16
    assert np.isfinite(float(model.train_step(data)["loss"]))


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="brave_views.broad: expected distinct modalities"):
        brave_views(("rgb", "depth"))
    with pytest.raises(ValueError, match=r"brave_views.num_broad_views: expected K >= 1 for"):
        brave_views(("rgb",), {"audio": 2})
    with pytest.raises(ValueError, match="BraVe.views: expected {'narrow'"):
        BraVe({"narrow": brave_views()["broad_rgb"]}, **TINY)


# ------------------------------------------------------------------------- recipes


def views_of(*files, params=()):
    """The views BraVe builds under the recipe's bindings, without its backbones."""
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, f) for f in files], list(params))
    try:
        return brave_views(), bound("build_optimizer.base_learning_rate")
    finally:
        gin.clear_config()


def test_recipes_build_the_papers_views():
    views, _ = views_of("brave_v_vrc_x3.gin")
    narrow, broad = views["narrow"], views["broad_rgb"]
    assert (narrow.num_frames, narrow.target_fps, narrow.crop_size, narrow.start) == \
        (16, 12.5, 224, "within")
    assert (broad.num_clips, broad.num_frames, broad.target_fps, broad.crop_size) == \
        (3, 64, 6.25, 112)
    assert broad.start == "anywhere_looped" and broad.sync is None
    assert broad.augmentation.random_conv and not narrow.augmentation.random_conv
    assert narrow.augmentation.blur_prob == 1.0 and narrow.area_range == (0.3, 1.0)

    views, lr = views_of("brave_v_fa.gin")
    assert list(views) == ["narrow", "broad_flow", "broad_audio"]
    assert views["narrow"].num_frames == 32 and lr == 1.0
    audio = views["broad_audio"]
    assert audio.modalities == ("audio",) and audio.sync == "start"
    assert (audio.audio.duration, audio.audio.sample_rate, audio.audio.num_mel_bins,
            audio.audio.frame_step, audio.audio.log_scale) == (5.0, 48000.0, 80, 160, 10000.0)
    assert views["broad_flow"].modalities == ("flow",)
    assert not views["broad_flow"].augmentation.random_conv
    # The official code's colour jitter and blur (brave_common.gin); flow takes no colour.
    for view in (views["narrow"], views["broad_flow"]):
        spec = view.augmentation
        assert (spec.color_jitter_style, spec.blur_kernel_size, spec.blur_padding,
                spec.blur_before_color) == ("brave", "tenth", "SAME", True)
    assert not views["broad_flow"].augmentation.flow_photometric
    assert views["broad_flow"].augmentation.flow_flip_negates_dx

    # Table 1's extents and Table 4's sync are bindings.
    views, _ = views_of("brave_v_vrc.gin", params=[
        "BROAD_FRAMES = 32", "broad_rgb/train_input.sync = 'start'",
        "broad_rgb/train_input.start = 'within'"])
    assert views["broad_rgb"].num_frames == 32 and views["broad_rgb"].sync == "start"


@pytest.mark.parametrize("recipe", sorted(os.path.basename(p) for p in glob.glob(
    os.path.join(CONFIGS, "brave_v_*.gin"))))
def test_recipes_run_under_the_demo_overlay(recipe):
    views, learning_rate = views_of(recipe, "demo.gin")
    assert learning_rate == 4.8  # with audio too: 1.0 barely moves the demo's V<->A
    assert (views["narrow"].num_frames, views["narrow"].crop_size) == (4, 64)
    for name, view in views.items():
        if name == "broad_audio":
            assert (view.audio.sample_rate, view.audio.duration) == (8000.0, 5.0)
        elif name != "narrow":
            assert (view.num_frames, view.target_fps, view.crop_size) == (8, 1.0, 32)


@pytest.mark.parametrize("recipe,broad,k,backbone,lr,steps", [
    ("brave_v_v.gin", ("rgb",), 1, "tsm_r50", 4.8, 300),
    ("brave_v_f_x3.gin", ("flow",), 3, "tsm_r50", 4.8, 300),
    ("brave_v_a.gin", ("audio",), 1, "tsm_r50", 1.0, 620),
    ("brave_v_fa_tsm50x2.gin", ("flow", "audio"), 1, "tsm_r50x2", 1.0, 620)])
def test_recipes_bind_the_paper_values(recipe, broad, k, backbone, lr, steps):
    config_lib.parse_gin([os.path.join(CONFIGS, recipe)], [])
    try:
        assert bound("brave_views.broad") == broad and bound("brave_views.num_broad_views") == k
        assert bound("BraVe.narrow_backbone") == backbone
        assert bound("build_optimizer.base_learning_rate") == lr
        assert bound("train.epochs") == steps and bound("train.steps_per_epoch") == 1000
        assert bound("train.warmup_epochs") == 5
        assert bound("build_optimizer.lr_multipliers") == {"predictor": 10.0}
        assert bound("build_optimizer.weight_decay") == 0.01
        # The official config's Nesterov LARS and loss scale (config.py:46-52, brave.py:291).
        assert bound("build_optimizer.nesterov") is True
        assert bound("BraVe.loss_scale") == "mean"
        assert bound("train.global_batch_size") == 512
        assert (bound("BraVe.hidden_dim"), bound("BraVe.embedding_dim")) == (4096, 128)
    finally:
        gin.clear_config()


# ------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def shards(make_shards):
    """6 videos of 24 frames 32x32 at 10 fps with flow and 8 kHz audio; one shard."""
    return make_shards("train", [0, 1] * 3, modalities=("rgb", "flow", "audio"),
                       num_frames=24, fps=10.0, noise=True, sample_rate=8000.0)[0]


@pytest.mark.slow
def test_v_fa_trains_exports_and_reloads_every_encoder(shards, tmp_path):
    model_dir = str(tmp_path / "run")
    params = [
        f"train.train_files = {shards!r}", "train.global_batch_size = 2",
        "train.steps_per_epoch = 2", "train.epochs = 1", "train.warmup_epochs = 0",
        "train.checkpoint_every_steps = 2", "BACKBONE = 'slow_r18'",
        "BROAD_BACKBONE = 'slow_r18'", "BACKBONE_KWARGS = {'width_multiplier': 0.125}",
        "HEAD_HIDDEN_DIM = 16", "EMBEDDING_DIM = 8", "SYNCHRONIZED_BN = False",
        "NARROW_FRAMES = 4", "NARROW_FPS = 5.0", "NARROW_CROP = 32", "BROAD_FRAMES = 4",
        "BROAD_FPS = 2.0", "BROAD_CROP = 16", "AUDIO_SECONDS = 1.0",
        "AudioSpec.sample_rate = 8000.0", "AudioSpec.num_mel_bins = 16",
        "AudioSpec.frame_length = 256", "AudioSpec.frame_step = 128",
        "AudioSpec.fft_length = 256", "AudioSpec.upper_edge_hertz = 3800.0",
        f"train.knn_bank_files = {shards!r}", f"train.knn_query_files = {shards!r}",
        "train.knn_k = 3"]
    config_lib.parse_gin([os.path.join(CONFIGS, "brave_v_fa.gin")], params)
    try:
        final = train_lib.train(model_dir)
    finally:
        gin.clear_config()
    assert np.isfinite(final["loss"]) and final["step"] == 2
    with open(os.path.join(model_dir, "input_spec.json")) as f:
        spec = json.load(f)
    assert spec["primary_encoder"] == "narrow"
    assert {n: e["modality"] for n, e in spec["encoders"].items()} == \
        {"narrow": "rgb", "broad_flow": "flow", "broad_audio": "audio"}
    assert {"broad_audio", "broad_flow"} <= set(os.listdir(os.path.join(model_dir, "export")))
    # The audio export records its log-mel settings (video_ssl.extract reads files with them).
    with open(os.path.join(model_dir, "export", "broad_audio", "assets.extra",
                           "video_ssl.json")) as f:
        assert json.load(f)["audio"]["num_mel_bins"] == 16
    # Every encoder's kNN and health monitors, the primary's without a suffix.
    assert_monitors_logged(model_dir, ["narrow", "broad_flow", "broad_audio"], last_step=2)
    inputs = {"narrow": np.random.uniform(0, 1, (2, 4, 32, 32, 3)),
              "broad_flow": np.random.normal(0, 1, (2, 4, 16, 16, 2)),
              "broad_audio": np.random.normal(0, 1, (2, 61, 16, 1))}
    trained = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    for name, x in inputs.items():
        loaded = pretrained.load_encoder(model_dir, trained, encoder=name)
        assert loaded.modality == spec["encoders"][name]["modality"]
        saved = tf.saved_model.load(os.path.join(model_dir, "export") if name == "narrow"
                                    else os.path.join(model_dir, "export", name))
        x = tf.constant(x, tf.float32)
        np.testing.assert_allclose(saved.serve(x)["features"].numpy(),
                                   loaded.backbone(x, training=False).numpy(),
                                   rtol=1e-4, atol=1e-4)
