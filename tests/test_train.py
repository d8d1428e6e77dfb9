"""The training entry point: outputs, resuming, NaN guard, data-path errors, gin."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import CONFIGS, REPO, checkpoint_steps, cli, train_overlay
from video_ssl import config as config_lib, train as train_lib
from video_ssl.data import reader
from video_ssl.data.views import AugmentSpec
from video_ssl.methods.rho import rho_views
from video_ssl.training import runner

NUM_VIDEOS = 8  # in the shards fixture (conftest.py)
HEALTH = ("embedding_std", "effective_rank", "alignment", "uniformity")  # kNN monitor


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shards):
    """One CLI run (2 epochs x 2 steps, kNN on the shards) and its stdout."""
    import contextlib
    import io
    tmp_path = tmp_path_factory.mktemp("trained")
    model_dir = tmp_path / "run"
    argv = cli(tmp_path, shards, model_dir,
               f"train.knn_bank_files={shards!r}", f"train.knn_query_files={shards!r}")
    gin.clear_config()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert train_lib.main(argv) == 0
    gin.clear_config()
    return model_dir, stdout.getvalue()


@pytest.mark.slow
def test_cli_trains_and_writes_all_outputs(trained_run):
    model_dir, stdout = trained_run
    assert "Epoch 2/2" in stdout  # Keras progress output
    # stdout is not a terminal: train.verbose='auto' prints one line per epoch, no bars.
    assert "\r" not in stdout and "\x08" not in stdout
    assert sum(line.startswith("2/2 - ") for line in stdout.splitlines()) == 2
    assert "kNN monitor: scoring the encoders at random initialization ..." in stdout
    assert "has collapsed" not in stdout  # no false alarm on a healthy run
    assert "Training steps 1-4 (2 epochs of 2 steps); tracing the training step first" in stdout
    assert f"Exporting rgb to {model_dir / 'export'}" in stdout
    # 8 videos / batch 4 = 2 steps per epoch, counted from the shards.
    assert max(checkpoint_steps(model_dir)) == 4
    config = (model_dir / "operative_config.gin").read_text()
    assert "train.global_batch_size = 4" in config and "RHO = 2" in config
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert [e["step"] for e in metrics["epochs"]] == [0, 2, 4]
    for entry in metrics["epochs"]:
        assert 0.0 <= entry["knn_top1"] <= 1.0
        assert set(HEALTH) <= set(entry)
    final = metrics["final"]
    assert final["step"] == 4 and np.isfinite(final["loss"]) and final["wall_time_s"] > 0
    assert final["knn_top1_random_init"] == metrics["epochs"][0]["knn_top1"]
    assert 0.994 < final["momentum"] < 1.0
    scalars = {}
    for path in glob.glob(str(model_dir / "tensorboard" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert {("batch/loss", s) for s in (1, 2, 3, 4)} <= set(scalars)
    assert scalars[("epoch/knn_top1", 0)] == final["knn_top1_random_init"]
    assert scalars[("epoch/knn_top1", 4)] == final["knn_top1"]
    for name in HEALTH:
        assert scalars[(f"epoch/{name}", 4)] == pytest.approx(final[name])
        assert (f"epoch/{name}", 0) in scalars
    assert ("epoch/learning_rate", 2) in scalars and ("epoch/momentum", 4) in scalars

    # The primary encoder (here the only one, "rgb") at export/, and only there.
    clips = tf.random.uniform([2, 4, 32, 32, 3])
    loaded = tf.saved_model.load(str(model_dir / "export"))  # held while it serves
    primary = loaded.serve(clips)["features"]
    assert primary.shape == (2, 64) and np.isfinite(primary.numpy()).all()
    assert not os.path.exists(str(model_dir / "export" / "rgb"))
    assert not os.path.exists(str(model_dir / "export.tmp"))
    spec = json.loads((model_dir / "input_spec.json").read_text())
    assert spec["primary_encoder"] == "rgb" and spec["method"] == "MoCo"
    assert spec["encoders"]["rgb"] == {"attribute": "backbone", "view": "clips",
                                       "modality": "rgb"}
    view = spec["views"]["clips"]
    assert (view["num_clips"], view["num_frames"], view["crop_size"]) == (2, 4, 32)


@pytest.mark.slow
def test_restart_after_kill_continues_from_last_checkpoint(tmp_path, shards):
    """kill -9 a running CLI once it has checkpointed, re-run the same command."""
    model_dir = tmp_path / "run"
    # Slow each step down so the kill lands mid-run whatever the machine's speed.
    (tmp_path / "throttle.py").write_text(textwrap.dedent("""
        import time, gin, keras
        @gin.configurable
        class Throttle(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                time.sleep(0.5)
    """))
    overlay = train_overlay(tmp_path, shards, **{"train.epochs": 4})
    with open(overlay, "a") as f:
        f.write("import throttle\ntrain.extra_callbacks = [@Throttle()]\n")
    argv = [sys.executable, "-m", "video_ssl.train", "--gin_file",
            os.path.join(CONFIGS, "moco_rho2.gin"), "--gin_file", overlay,
            "--model_dir", str(model_dir)]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}

    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not [s for s in checkpoint_steps(model_dir) if s >= 3]:
        assert process.poll() is None, process.stdout.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(checkpoint_steps(model_dir))
    assert 3 <= killed_at < 8

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"at step {killed_at} of 8" in rerun.stdout
    assert max(checkpoint_steps(model_dir)) == 8
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["final"]["step"] == 8
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert [e["step"] for e in metrics["epochs"]] == [2, 4, 6, 8]


# Imported by a gin file: SIGKILLs the trainer as it saves checkpoint $KILL_AT_SAVE.
KILL_AT_SAVE = """
import os, signal
import tensorflow as tf
_save = tf.train.CheckpointManager.save
def save(self, checkpoint_number=None, **kwargs):
    if checkpoint_number == int(os.environ["KILL_AT_SAVE"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(self, checkpoint_number=checkpoint_number, **kwargs)
tf.train.CheckpointManager.save = save
"""


@pytest.mark.slow
def test_kill_at_an_epoch_boundary_keeps_the_epochs_metrics(tmp_path, shards):
    """kill -9 as the epoch's last checkpoint is saved: metrics.json already holds the
    epoch (it is written first); the re-run redoes the step and loses no entry. The
    dead trainer's lock does not stop the re-run."""
    model_dir = tmp_path / "run"
    (tmp_path / "kill_at_save.py").write_text(KILL_AT_SAVE)
    overlay = train_overlay(tmp_path, shards)
    with open(overlay, "a") as f:
        f.write("import kill_at_save\n")
    argv = [sys.executable, "-m", "video_ssl.train", "--gin_file",
            os.path.join(CONFIGS, "moco_rho2.gin"), "--gin_file", overlay,
            "--model_dir", str(model_dir)]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}

    killed = subprocess.run(argv, env={**env, "KILL_AT_SAVE": "2"}, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert checkpoint_steps(model_dir) == [1]  # step 2, the end of epoch 1, never saved
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [(e["epoch"], e["step"]) for e in metrics["epochs"]] == [(1, 2)]
    assert (model_dir / "train.lock").exists()

    rerun = subprocess.run(argv, env={**env, "KILL_AT_SAVE": "-1"}, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "at step 1 of 4" in rerun.stdout
    assert max(checkpoint_steps(model_dir)) == 4
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [(e["epoch"], e["step"]) for e in metrics["epochs"]] == [(1, 2), (2, 4)]
    assert metrics["final"]["step"] == 4


class SimulatedCrash(Exception):
    pass


class CrashAt(keras.callbacks.Callback):
    """Raises at a given optimizer step, as a crash would."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise SimulatedCrash(f"crash at step {self.step}")


@pytest.mark.slow
def test_crash_mid_epoch_then_resume_keeps_epoch_boundaries(tmp_path, shards, mirrored):
    """Under MirroredStrategy over the two logical CPUs (2 videos per replica); the
    session's strategy, since a second one in the process breaks collectives. The
    augmentation is deferred to the step, as on GPUs."""
    model_dir = str(tmp_path / "run")
    argv = cli(tmp_path, shards, model_dir, "train.epochs=3", "train.steps_per_epoch=3",
               "train_input.defer_augmentation=True")
    config_lib.parse_gin(*_gin_args(argv))
    with pytest.raises(SimulatedCrash):
        train_lib.train(model_dir, strategy=mirrored, extra_callbacks=[CrashAt(4)])
    assert max(checkpoint_steps(model_dir)) == 4  # saved before the crash callback ran

    gin.clear_config()
    config_lib.parse_gin(*_gin_args(argv))
    final = train_lib.train(model_dir, strategy=mirrored)
    assert final["step"] == 9
    metrics = json.loads(open(os.path.join(model_dir, "metrics.json")).read())
    assert [(e["epoch"], e["step"]) for e in metrics["epochs"]] == [(1, 3), (2, 6), (3, 9)]


def _gin_args(argv):
    args = train_lib.parse_flags(argv)
    return args.gin_file, args.gin_param


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, shards, trained_run,
                                                               capsys):
    model_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], model_dir)
    good = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    assert max(checkpoint_steps(model_dir)) == 4

    # Continue for another epoch with an infinite learning rate: step 5 diverges.
    code = train_lib.main(cli(tmp_path, shards, model_dir, "train.epochs=3",
                              "build_optimizer.base_learning_rate=1e999"))
    error = capsys.readouterr().err
    assert code == 1
    assert "at step 5" in error and ("NaN" in error or "nan" in error or "inf" in error)
    assert max(checkpoint_steps(model_dir)) == 4
    latest = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    for name in latest.get_variable_to_shape_map():
        value = latest.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.isfinite(value).all(), name
            np.testing.assert_array_equal(value, good.get_tensor(name))


def test_loss_guard_names_step_and_value():
    from video_ssl.training.callbacks import NonFiniteLossError, TerminateOnNonFiniteLoss
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.iterations.assign(7)
    guard = TerminateOnNonFiniteLoss()
    guard.set_model(model)
    guard.on_train_batch_end(0, {"loss": 1.5})
    with pytest.raises(NonFiniteLossError, match=r"loss is inf at step 7"):
        guard.on_train_batch_end(0, {"loss": float("inf")})


@pytest.mark.parametrize("bindings, message", [
    ({}, "train.train_files is not set"),
    ({"train.train_files": "'/nonexistent/train-*.tfrecord'"},
     "train.train_files='/nonexistent/train-*.tfrecord' matches no files"),
])
def test_missing_data_path_names_the_binding(tmp_path, capsys, bindings, message):
    overlay = tmp_path / "data.gin"
    overlay.write_text("".join(f"{k} = {v}\n" for k, v in bindings.items()))
    code = train_lib.main(["--gin_file", os.path.join(CONFIGS, "moco_rho3.gin"),
                           "--gin_file", str(overlay), "--model_dir", str(tmp_path / "run")])
    assert code == 1
    assert message in capsys.readouterr().err


def test_knn_split_pattern_is_checked(tmp_path, shards, capsys):
    code = train_lib.main(cli(tmp_path, shards, tmp_path / "run",
                              "train.knn_bank_files='/nonexistent/*.tfrecord'"))
    assert code == 1
    assert "train.knn_bank_files=" in capsys.readouterr().err


def test_gin_files_compose_and_params_override(tmp_path):
    first, second = tmp_path / "a.gin", tmp_path / "b.gin"
    first.write_text("include 'moco_rho3.gin'\ntrain.epochs = 5\ntrain.seed = 1\n")
    second.write_text("train.epochs = 7\n")
    gin.add_config_file_search_path(CONFIGS)
    config_lib.parse_gin([str(first), str(second)], [])
    assert gin.query_parameter("train.epochs") == 7
    assert gin.query_parameter("train.seed") == 1
    assert gin.query_parameter("%RHO") == 3
    gin.clear_config()
    config_lib.parse_gin([str(first), str(second)], ["train.epochs = 9", "RHO = 4"])
    assert gin.query_parameter("train.epochs") == 9
    assert gin.query_parameter("%RHO") == 4


def test_count_records_reads_headers(tmp_path, shards):
    assert reader.count_records(sorted(glob.glob(shards))) == NUM_VIDEOS
    broken = tmp_path / "broken.tfrecord"
    data = open(sorted(glob.glob(shards))[0], "rb").read()
    broken.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="broken.tfrecord: truncated"):
        reader.count_records([str(broken)])


def _tiny(method_class, **kwargs):
    return method_class(rho_views(2), "slow_r18", backbone_kwargs={"width_multiplier": 0.125},
                        hidden_dim=8, embedding_dim=4, **kwargs)


def test_deferred_augmentation_runs_in_the_step(shards):
    """train_input.defer_augmentation: the pipeline emits uint8 clips and seeds, the
    method augments them in its step with its own view's settings, and gets what the
    in-pipeline path gives."""
    from video_ssl.methods.moco import MoCo
    for key, value in {"num_frames": 4, "frame_stride": 2, "crop_size": 32,
                       "color_strength": 0.25, "blur_prob": 1.0}.items():
        gin.bind_parameter(f"train_input.{key}", value)
    batches, models = {}, {}
    for defer in (True, False):
        gin.bind_parameter("train_input.defer_augmentation", defer)
        models[defer] = _tiny(MoCo, queue_size=16)
        view = models[defer].views["clips"]
        assert view.defer_augmentation is defer
        assert view.augmentation == AugmentSpec(color_strength=0.25, blur_prob=1.0)
        batches[defer] = next(iter(runner.view_dataset(
            [shards], models[defer].views, global_batch_size=4, seed=3)))
    assert batches[True]["views"]["clips"]["rgb"].dtype == tf.uint8
    for got, want in zip(models[True].split_clips(batches[True]),
                         models[False].split_clips(batches[False])):
        np.testing.assert_allclose(got, want, atol=0.05)  # uint8 rounding of the resize


def test_augmentation_moves_to_the_accelerator_unless_bound(monkeypatch):
    """Unbound, defer_augmentation follows the hardware; a binding wins either way."""
    from video_ssl.methods import base
    from video_ssl.methods.simclr import SimCLR
    gin.bind_parameter("train_input.grayscale_prob", 0.3)
    assert not _tiny(SimCLR).views["clips"].defer_augmentation
    monkeypatch.setattr(base, "has_accelerator", lambda: True)
    assert _tiny(SimCLR).views["clips"].defer_augmentation
    gin.bind_parameter("train_input.defer_augmentation", False)
    assert not _tiny(SimCLR).views["clips"].defer_augmentation


@pytest.mark.parametrize("binding", ["train_input.colour_strength = 0.5",
                                     "eval_input.num_frame = 8"])
def test_unknown_input_key_fails_when_parsed(binding):
    configurable, key = binding.split(" ")[0].split(".")
    with pytest.raises(ValueError, match=f"'{configurable}' doesn't have a parameter named "
                                         f"'{key}'"):
        config_lib.parse_gin([], [binding])


def test_too_few_records_names_the_binding_and_the_count(tmp_path, shards, capsys):
    empty = tmp_path / "empty-00000-of-00001.tfrecord"
    empty.write_bytes(b"")
    for pattern, count in ((str(empty), 0), (shards, NUM_VIDEOS)):
        code = train_lib.main(cli(tmp_path, shards, tmp_path / "run",
                                  f"train.train_files={pattern!r}",
                                  "train.global_batch_size=16"))
        assert code == 1
        err = capsys.readouterr().err
        assert f"train.train_files: {count} records" in err and "global_batch_size=16" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
