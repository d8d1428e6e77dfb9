"""The multi-stage schedule (video_ssl/training/stages.py): order, gin scopes, initialization
from earlier stages, resuming after an interrupted stage, one stage alone."""
import json
import os

import gin
import pytest

import video_ssl.train  # noqa: F401  (registers train)
from video_ssl import config as config_lib, console
from video_ssl.training import stages

config_lib.register_configurables()  # the methods by name: InfoNCE, CoCLR

CONFIG = """
run_schedule.stages = [('a', {}), ('b', {}), ('c', {'rgb': 'a', 'flow': 'b'})]
train.epochs = 7
a/train.method = @InfoNCE
b/train.method = @InfoNCE
c/train.method = @CoCLR
b/train.epochs = 3
"""


@gin.configurable
def probe(epochs=None):
    return epochs


@pytest.fixture
def config():
    gin.clear_config()
    gin.parse_config(CONFIG.replace("train.epochs", "probe.epochs"))
    yield
    gin.clear_config()


class FakeTrain:
    """Records each call: stage folder, the values gin gives the stage; can fail once."""

    def __init__(self, fail_in=None):
        self.calls, self.fail_in = [], fail_in

    def __call__(self, model_dir):
        stage = os.path.basename(model_dir)
        init = gin.query_parameter("CoCLR.init_checkpoints") if stage == "c" else None
        method = gin.query_parameter("train.method").configurable.name
        self.calls.append((stage, method, probe(), init))
        with open(os.path.join(model_dir, stages.OPERATIVE_CONFIG), "w") as f:
            f.write(gin.operative_config_str())  # as the trainer does
        if stage == self.fail_in:
            self.fail_in = None
            raise RuntimeError("interrupted")
        return {"step": len(self.calls)}


def test_runs_every_stage_under_its_own_config(tmp_path, config):
    assert stages.scheduled()
    before = gin.config_str()
    fake = FakeTrain()
    summary = stages.run_schedule(str(tmp_path), fake)
    init = {"rgb": str(tmp_path / "a"), "flow": str(tmp_path / "b")}
    assert fake.calls == [("a", "InfoNCE", 7, None), ("b", "InfoNCE", 3, None),
                          ("c", "CoCLR", 7, init)]
    assert gin.config_str() == before  # the caller's config is back
    assert summary == {"a": {"step": 1}, "b": {"step": 2}, "c": {"step": 3}}
    assert json.loads((tmp_path / "schedule.json").read_text()) == summary
    assert all((tmp_path / n / stages.COMPLETE_FILE).exists() for n in "abc")
    assert stages.run_schedule(str(tmp_path), fake) == summary  # all done: nothing runs
    assert len(fake.calls) == 3


def test_stage_config_reads_like_a_single_run():
    config = (
        "a/train.epochs = 3\nb/train.epochs = 4\ntrain.epochs = 7\n"
        "x/probe.epochs = 1\nrun_schedule.stages = \\\n    [('a', {}),\n     ('b', {})]\n")
    text = stages.stage_config(config, "a", ["a", "b"])
    assert text == ("train.epochs = 7\nx/probe.epochs = 1\nrun_schedule.stages = \\\n"
                    "    [('a', {}),\n     ('b', {})]\ntrain.epochs = 3\n")


def test_rerun_resumes_the_interrupted_stage(tmp_path, config):
    fake = FakeTrain(fail_in="b")
    with pytest.raises(RuntimeError):
        stages.run_schedule(str(tmp_path), fake)
    assert not (tmp_path / "b" / stages.COMPLETE_FILE).exists()
    # schedule.json is written after every stage, not only at the end.
    assert json.loads((tmp_path / "schedule.json").read_text()) == {"a": {"step": 1}}
    stages.run_schedule(str(tmp_path), fake)
    # Stage a is not re-run; b runs again in the same folder (the trainer resumes there).
    assert [c[0] for c in fake.calls] == ["a", "b", "b", "c"]


def test_one_stage_alone(tmp_path, config):
    fake = FakeTrain()
    with pytest.raises(ValueError, match=r"stage 'c' needs finished stages \['a', 'b'\]"):
        stages.run_schedule(str(tmp_path), fake, only="c")
    stages.run_schedule(str(tmp_path), fake)
    stages.run_schedule(str(tmp_path), fake, only="b")  # re-runs a finished stage
    assert [c[0] for c in fake.calls] == ["a", "b", "c", "b"]
    with pytest.raises(ValueError, match="run_schedule.only='d'"):
        stages.run_schedule(str(tmp_path), fake, only="d")


@gin.configurable
def unused_probe(value=None):
    return value


def parse(config):
    gin.clear_config()
    gin.parse_config(config.replace("train.epochs", "probe.epochs"))


MACRO_CONFIG = CONFIG.replace("b/train.epochs = 3", "EPOCHS_B = 3\nb/train.epochs = %EPOCHS_B")


def test_finished_stage_with_other_settings_is_refused_or_trained_on(tmp_path, config,
                                                                     capsys):
    """Today's bug: more epochs for a finished stage trained nothing, silently."""
    parse(MACRO_CONFIG)
    fake = FakeTrain()
    stages.run_schedule(str(tmp_path), fake)
    parse(MACRO_CONFIG.replace("EPOCHS_B = 3", "EPOCHS_B = 5"))
    with pytest.raises(ValueError) as error:
        stages.run_schedule(str(tmp_path), fake)
    assert console.error_line(error.value) == (  # the trainer's error line
        "run_schedule: stage 'b' finished with other settings (probe.epochs: 3 then, 5 now); "
        "pass --extend_finished_stages to train it on under these (from its newest "
        "checkpoint, e.g. to more epochs), or use another model_dir")
    assert len(fake.calls) == 3  # refused before anything ran
    summary = stages.run_schedule(str(tmp_path), fake, extend_finished=True)
    assert "stage 'b' finished with other settings" in capsys.readouterr().out
    assert fake.calls[3:] == [("b", "InfoNCE", 5, None)]  # b alone, to its new length
    assert summary["b"] == {"step": 4}
    assert json.loads((tmp_path / "schedule.json").read_text()) == summary
    stages.run_schedule(str(tmp_path), fake)  # b finished with these settings now
    assert len(fake.calls) == 4


def test_settings_that_do_not_change_what_a_stage_trains_are_not_differences(tmp_path,
                                                                            config):
    fake = FakeTrain()
    stages.run_schedule(str(tmp_path), fake)
    # How it runs (verbosity, strategy, run_schedule.only), and a configurable no stage calls.
    parse(CONFIG + "train.verbose = 2\ntrain.strategy = 'mirrored'\n"
                   "unused_probe.value = 3\n")
    stages.run_schedule(str(tmp_path), fake)
    assert len(fake.calls) == 3
    # A method switched is a difference (the fake's operative config does not list
    # `train`: without one, every binding counts).
    parse(CONFIG.replace("c/train.method = @CoCLR", "c/train.method = @InfoNCE"))
    os.remove(tmp_path / "c" / stages.OPERATIVE_CONFIG)
    with pytest.raises(ValueError, match=r"stage 'c' finished with other settings "
                                         r"\(train.method: @CoCLR then, @InfoNCE now\)"):
        stages.run_schedule(str(tmp_path), fake)


def test_settings_differences_resolve_macros_and_name_every_binding():
    finished = ("E = 1\nx/f.a = %E\nf.b = 2\nrun_schedule.only = 'x'\ntrain.verbose = 1\n"
                "import os\n")
    how_it_runs = finished.replace("'x'", "'y'").replace("verbose = 1", "verbose = 2")
    assert stages.settings_differences(finished, how_it_runs) == []
    assert stages.settings_differences(
        finished, "E = 4\nx/f.a = %E\nf.c = 'c'\n") == [
        "f.b: 2 then, unbound now", "f.c: unbound then, 'c' now", "x/f.a: 1 then, 4 now"]
    # Only the bindings that reach a configurable the stage called, in its scope.
    assert stages.settings_differences(finished, "E = 4\nx/f.a = %E\n", used={"g"}) == []
    assert stages.settings_differences(finished, "E = 4\nx/f.a = %E\n", used={"y/f"}) == [
        "f.b: 2 then, unbound now"]


def test_extend_flag_without_a_schedule_is_refused(tmp_path, capsys):
    from video_ssl import train as train_lib
    gin_file = tmp_path / "one.gin"
    gin_file.write_text("train.epochs = 1\n")
    code = train_lib.main([f"--gin_file={gin_file}", f"--model_dir={tmp_path / 'run'}",
                           "--extend_finished_stages"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "video_ssl.train: error: --extend_finished_stages: applies to schedules, and this "
        "config binds no run_schedule.stages")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad,message", [
    ([("a", {}), ("a", {})], "unique identifier"),
    ([("a", {"rgb": "b"}), ("b", {})], r"initializes from \['b'\]"),
    ([("a",)], "pairs"),
    ([], "at least one stage"),
])
def test_bad_stages_are_one_line_errors(tmp_path, config, bad, message):
    with pytest.raises(ValueError, match=message):
        stages.run_schedule(str(tmp_path), FakeTrain(), stages=bad)


def test_not_scheduled_without_stages():
    gin.clear_config()
    assert not stages.scheduled()


# ------------------------------------------------- through the trainer, interrupted

class Interrupted(RuntimeError):
    pass


class StopAfterOneStep(__import__("keras").callbacks.Callback):
    """Interrupts a stage after its first step (its checkpoint is written by then)."""

    def on_train_batch_end(self, batch, logs=None):
        raise Interrupted("stopped")


gin.external_configurable(StopAfterOneStep, module="test_schedule")


@pytest.fixture(scope="module")
def flow_shards(make_shards):
    """8 labeled videos of 16 frames 32x32 with flow."""
    from helpers import shard_pattern
    return shard_pattern(make_shards("train", [0, 1] * 4, modalities=("rgb", "flow"),
                                     noise=True))


@pytest.mark.slow
def test_coclr_schedule_resumes_mid_stage_through_the_trainer(tmp_path, flow_shards, capsys):
    from video_ssl import config as config_lib, console
    from video_ssl.train import train
    tiny = {
        "train.train_files": repr(flow_shards), "train.global_batch_size": 4,
        "train.steps_per_epoch": 2, "train.checkpoint_every_steps": 1, "train.verbose": 0,
        "BACKBONE": "'slow_r18'", "BACKBONE_KWARGS": "{'width_multiplier': 0.125}",
        "HEAD_HIDDEN_DIM": 16, "EMBEDDING_DIM": 8, "QUEUE_SIZE": 8, "BN_GROUP_SIZE": None,
        "train_input.num_frames": 4, "train_input.frame_stride": 2,
        "train_input.crop_size": 32, "INFONCE_EPOCHS": 1, "CYCLE_EPOCHS": 1,
        # The flow sampler starts from random weights here: one stage fewer to train.
        "run_schedule.stages": "[('infonce_rgb', {}), ('cycle1_rgb', {'rgb': 'infonce_rgb'})]"}
    stop = ["cycle1_rgb/train.extra_callbacks = [@StopAfterOneStep()]"]
    configs = [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "gin_configs", "coclr_ucf101.gin")]
    params = [f"{k} = {v}" for k, v in tiny.items()]
    gin.clear_config()
    config_lib.parse_gin(configs, params + stop)
    with pytest.raises(Interrupted):
        stages.run_schedule(str(tmp_path), train)
    assert stages.is_complete(str(tmp_path / "infonce_rgb"))
    assert not stages.is_complete(str(tmp_path / "cycle1_rgb"))
    capsys.readouterr()
    gin.clear_config()
    config_lib.parse_gin(configs, params)
    summary = stages.run_schedule(str(tmp_path), train)
    out = capsys.readouterr().out
    gin.clear_config()
    assert "stage 'infonce_rgb'" not in out and "stage 'cycle1_rgb'" in out
    assert "at step 1 of 2" in out  # the interrupted stage resumed from its checkpoint
    assert list(summary) == ["infonce_rgb", "cycle1_rgb"]
    assert summary["cycle1_rgb"]["step"] == 2
    spec = json.loads((tmp_path / "cycle1_rgb" / "input_spec.json").read_text())
    assert spec["primary_encoder"] == "rgb" and set(spec["encoders"]) == {"rgb", "flow"}
    # A stage reads like a single run: evaluation loads its encoders from its own files.
    assert "cycle1_rgb/" not in (tmp_path / "cycle1_rgb" / "operative_config.gin").read_text()
    from video_ssl import pretrained
    for encoder, channels in (("rgb", 3), ("flow", 2)):
        loaded = pretrained.load_encoder(str(tmp_path / "cycle1_rgb"), encoder=encoder)
        assert loaded.step == 2 and loaded.backbone.input_shape[-1] == channels

    # More CYCLE_EPOCHS for the finished schedule: refused, naming the cycle stage alone
    # (the InfoNCE stage never used the macro). With the flag the stage trains on as a
    # re-run single run does (the fake trainer's test above).
    gin.clear_config()
    config_lib.parse_gin(configs, params + ["CYCLE_EPOCHS = 2"])
    with pytest.raises(ValueError) as error:
        stages.run_schedule(str(tmp_path), train)
    gin.clear_config()
    assert console.error_line(error.value).startswith(
        "run_schedule: stage 'cycle1_rgb' finished with other settings (train.epochs: 1 "
        "then, 2 now); pass --extend_finished_stages")
