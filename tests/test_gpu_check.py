"""benchmarks/gpu_check.py (the accelerator check) in its --tiny mode on the CPU: every
section runs and lands in the results file with the device's name."""
import json
import os
import subprocess
import sys

import gin
import pytest

from helpers import CONFIGS, REPO
import video_ssl.train  # noqa: F401  (registers train and train_input)
from video_ssl import config as config_lib
from gin_query import bound

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import gpu_check  # noqa: E402


@pytest.mark.slow
def test_tiny_run_measures_every_section(tmp_path):
    output = tmp_path / "check.json"
    # The recipes section is a training run per recipe (a minute each here): its
    # bindings are checked below, its command by the shell script's run.
    assert gpu_check.main(["--tiny", "--sections", "step,augment,input,caching",
                           "--steps", "1", "--warmup", "1", "--output", str(output),
                           "--workdir", str(tmp_path / "work")]) == 0
    results = json.loads(output.read_text())
    assert results["tiny"] is True and results["device"].startswith("CPU")
    sections = results["sections"]
    assert [(r["precision"], r["xla"]) for r in sections["step"]] == [
        ("float32", False), ("mixed_bfloat16", False), ("mixed_bfloat16", True)]
    assert all(r["step_s"] > 0 for r in sections["step"])
    plain, cached = sections["caching"]
    assert (plain["gradient_caching"], cached["gradient_caching"]) == (False, True)
    assert cached["x_plain"] == pytest.approx(cached["step_s"] / plain["step_s"])
    assert sections["augment"]["ms_per_batch"] > 0
    assert sections["input"]["clips_per_s"] > 0


@pytest.mark.parametrize("recipe", gpu_check.RECIPES)
def test_tiny_recipe_bindings_parse_after_the_demo_overlay(recipe):
    params = gpu_check.recipe_params(True, "/x/shards-*.tfrecord")
    config_lib.parse_gin([os.path.join(CONFIGS, recipe), os.path.join(CONFIGS, "demo.gin")],
                         params)
    try:
        assert bound("train.train_files") == "/x/shards-*.tfrecord"
        assert bound("train.steps_per_epoch") == 1 and bound("train.epochs") == 1
    finally:
        gin.clear_config()


def test_unknown_section_or_recipe_is_one_line(capsys):
    for flags, message in ((["--sections", "step,warp"], "--sections: unknown ['warp']"),
                           (["--recipes", "nope.gin"], "--recipes: ['nope.gin'] not in")):
        with pytest.raises(SystemExit) as exit_info:
            gpu_check.main(["--tiny", *flags])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_shell_script_is_valid_bash():
    script = os.path.join(REPO, "benchmarks", "gpu_check.sh")
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", script]).returncode == 0
