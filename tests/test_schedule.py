"""The multi-stage schedule (video_ssl/schedule.py): order, gin scopes, initialization
from earlier stages, resuming after an interrupted stage, one stage alone."""
import json
import os

import gin
import pytest

import video_ssl.methods.coclr  # noqa: F401  (registers InfoNCE, CoCLR)
import video_ssl.train  # noqa: F401  (registers train)
from video_ssl import schedule

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
    """Records each call: folder, active scope, scoped values; can fail once."""

    def __init__(self, fail_in=None):
        self.calls, self.fail_in = [], fail_in

    def __call__(self, model_dir):
        scope = gin.current_scope_str()
        init = None
        if scope == "c":
            init = gin.query_parameter("c/CoCLR.init_checkpoints")
        self.calls.append((os.path.basename(model_dir), scope, probe(), init))
        if scope == self.fail_in:
            self.fail_in = None
            raise RuntimeError("interrupted")
        return {"step": len(self.calls)}


def test_runs_every_stage_in_its_scope_and_folder(tmp_path, config):
    assert schedule.scheduled()
    fake = FakeTrain()
    summary = schedule.run_schedule(str(tmp_path), fake)
    init = {"rgb": str(tmp_path / "a"), "flow": str(tmp_path / "b")}
    assert fake.calls == [("a", "a", 7, None), ("b", "b", 3, None), ("c", "c", 7, init)]
    assert summary == {"a": {"step": 1}, "b": {"step": 2}, "c": {"step": 3}}
    assert json.loads((tmp_path / "schedule.json").read_text()) == summary
    assert all((tmp_path / n / schedule.COMPLETE_FILE).exists() for n in "abc")
    assert schedule.run_schedule(str(tmp_path), fake) == summary  # all done: nothing runs
    assert len(fake.calls) == 3


def test_rerun_resumes_the_interrupted_stage(tmp_path, config):
    fake = FakeTrain(fail_in="b")
    with pytest.raises(RuntimeError):
        schedule.run_schedule(str(tmp_path), fake)
    assert not (tmp_path / "b" / schedule.COMPLETE_FILE).exists()
    schedule.run_schedule(str(tmp_path), fake)
    # Stage a is not re-run; b runs again in the same folder (the trainer resumes there).
    assert [c[0] for c in fake.calls] == ["a", "b", "b", "c"]


def test_one_stage_alone(tmp_path, config):
    fake = FakeTrain()
    with pytest.raises(ValueError, match=r"stage 'c' needs finished stages \['a', 'b'\]"):
        schedule.run_schedule(str(tmp_path), fake, only="c")
    schedule.run_schedule(str(tmp_path), fake)
    schedule.run_schedule(str(tmp_path), fake, only="b")  # re-runs a finished stage
    assert [c[0] for c in fake.calls] == ["a", "b", "c", "b"]
    with pytest.raises(ValueError, match="run_schedule.only='d'"):
        schedule.run_schedule(str(tmp_path), fake, only="d")


@pytest.mark.parametrize("stages,message", [
    ([("a", {}), ("a", {})], "unique identifier"),
    ([("a", {"rgb": "b"}), ("b", {})], r"initializes from \['b'\]"),
    ([("a",)], "pairs"),
    ([], "at least one stage"),
])
def test_bad_stages_are_one_line_errors(tmp_path, config, stages, message):
    with pytest.raises(ValueError, match=message):
        schedule.run_schedule(str(tmp_path), FakeTrain(), stages=stages)


def test_not_scheduled_without_stages():
    gin.clear_config()
    assert not schedule.scheduled()
