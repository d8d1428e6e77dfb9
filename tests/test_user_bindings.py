"""A binding the user adds (--gin_param, a gin file outside gin_configs/) that does
nothing is an error naming it and why, before anything is written
(video_ssl/user_bindings.py): shadowed by a scoped binding, for a configurable the run
never calls, a macro nothing refers to, a later project file binding it again; and a
value of the wrong type names its binding and the expected type."""
import glob
import os

import gin
import pytest

from helpers import CONFIGS, EVAL_CONFIGS, cli, train_overlay
from video_ssl import config as config_lib
from video_ssl import train as train_lib
from video_ssl import user_bindings
from video_ssl.training import stages

DEMO = os.path.join(CONFIGS, "demo.gin")


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0].removeprefix("video_ssl.train: error: ")


def fails(argv, capsys, model_dir) -> str:
    assert train_lib.main(argv) == 1
    assert not os.path.exists(model_dir)  # nothing written
    return error_line(capsys)


def demo_argv(tmp_path, shards, model_dir, *params) -> list[str]:
    """MoCo under the demo overlay (its scoped `short_run_lars/build_optimizer`), made
    tiny by a user file that leaves the optimizer alone."""
    tiny = open(train_overlay(tmp_path, shards, **{"train.knn_bank_files": None,
                                                   "train.knn_query_files": None,
                                                   "BN_GROUP_SIZE": None})).read()
    path = tmp_path / "tiny_demo.gin"
    path.write_text("".join(line + "\n" for line in tiny.splitlines()
                            if not line.startswith("build_optimizer.")))
    return ["--gin_file", os.path.join(CONFIGS, "moco_rho2.gin"), "--gin_file", DEMO,
            "--gin_file", str(path), *[f"--gin_param={p}" for p in params],
            "--model_dir", str(model_dir)]


def test_binding_shadowed_by_a_scoped_one_names_the_winner(tmp_path, shards, capsys):
    model_dir = tmp_path / "run"
    line = fails(demo_argv(tmp_path, shards, model_dir,
                           "build_optimizer.base_learning_rate=0.5"), capsys, model_dir)
    assert line == (
        "--gin_param=build_optimizer.base_learning_rate=0.5: does nothing: the run calls "
        "build_optimizer in scope 'short_run_lars', where "
        "short_run_lars/build_optimizer.base_learning_rate wins; set "
        "short_run_lars/build_optimizer.base_learning_rate instead")


def test_binding_of_a_configurable_the_run_never_calls(tmp_path, shards, capsys):
    model_dir = tmp_path / "run"
    line = fails(cli(tmp_path, shards, model_dir, "SwAV.num_prototypes=16"), capsys,
                 model_dir)
    assert line == "--gin_param=SwAV.num_prototypes=16: does nothing: this run never calls SwAV"
    line = fails(cli(tmp_path, shards, model_dir, "elsewhere/MoCo.queue_size=16"), capsys,
                 model_dir)
    assert line == ("--gin_param=elsewhere/MoCo.queue_size=16: does nothing: the run calls "
                    "MoCo only in scope '', never in 'elsewhere'")


def test_macro_nothing_refers_to_suggests_the_closest(tmp_path, shards, capsys):
    model_dir = tmp_path / "run"
    line = fails(cli(tmp_path, shards, model_dir, "BACKBONNE='slow_r18'"), capsys, model_dir)
    assert line == ("--gin_param=BACKBONNE='slow_r18': does nothing, no binding refers to "
                    "macro BACKBONNE (%BACKBONNE); did you mean BACKBONE?")


def test_user_file_binding_that_a_later_project_file_overrides(tmp_path, shards, capsys):
    model_dir = tmp_path / "run"
    mine = tmp_path / "mine.gin"
    mine.write_text("train.seed = 3\ntrain.epochs = 5\n")
    argv = ["--gin_file", os.path.join(CONFIGS, "moco_rho2.gin"), "--gin_file", str(mine),
            "--gin_file", DEMO, "--model_dir", str(model_dir)]
    line = fails(argv, capsys, model_dir)
    number = open(DEMO).read().splitlines().index("train.epochs = 30") + 1
    assert line == (f"{mine}, line 2 (train.epochs): does nothing, {DEMO}, line {number} "
                    f"binds it again later (give your file after the project's)")


@pytest.mark.parametrize("param, expected", [
    ("build_optimizer.weight_decay='hot'",  # behind build_optimizer's **settings
     "build_optimizer.weight_decay: expected a number, got 'hot'"),
    ("MoCo.queue_size='big'", "MoCo.queue_size: expected an int, got 'big'"),
    ("BASE_MOMENTUM='fast'", "BASE_MOMENTUM (for MoCo.base_momentum): expected a number, "
                             "got 'fast'")])
def test_wrong_type_outside_train_names_the_binding(tmp_path, shards, capsys, param,
                                                    expected):
    model_dir = tmp_path / "run"
    assert fails(cli(tmp_path, shards, model_dir, param), capsys, model_dir) == expected


@pytest.fixture(scope="module")
def flow_shards(make_shards):
    from helpers import shard_pattern
    return shard_pattern(make_shards("train", [0, 1] * 2, modalities=("rgb", "flow")))


def schedule_params(flow_shards) -> list[str]:
    """coclr_ucf101.gin's schedule cut to two tiny stages."""
    tiny = {
        "train.train_files": repr(flow_shards), "train.global_batch_size": 4,
        "train.steps_per_epoch": 1, "BACKBONE": "'slow_r18'",
        "BACKBONE_KWARGS": "{'width_multiplier': 0.125}", "HEAD_HIDDEN_DIM": 16,
        "EMBEDDING_DIM": 8, "QUEUE_SIZE": 8, "BN_GROUP_SIZE": None,
        "train_input.num_frames": 4, "train_input.frame_stride": 2,
        "train_input.crop_size": 32, "INFONCE_EPOCHS": 1, "CYCLE_EPOCHS": 1,
        "run_schedule.stages": "[('infonce_rgb', {}), ('cycle1_rgb', {'rgb': 'infonce_rgb'})]"}
    return [f"{k} = {v}" for k, v in tiny.items()]


def test_schedule_binding_no_stage_uses(tmp_path, flow_shards, capsys):
    model_dir = tmp_path / "run"
    argv = ["--gin_file", os.path.join(CONFIGS, "coclr_ucf101.gin"),
            *[f"--gin_param={p}" for p in schedule_params(flow_shards)],
            "--gin_param=BraVe.predictor_hidden_dim=8", "--model_dir", str(model_dir)]
    assert fails(argv, capsys, model_dir) == (
        "--gin_param=BraVe.predictor_hidden_dim=8: does nothing in any stage: this run "
        "never calls BraVe")


class Observed(Exception):
    pass


class ObserveThenStop(user_bindings.ScheduleCheck):
    def check(self, stage_names):
        raise Observed  # every stage built and observed: stop before training


def test_schedule_check_spans_the_stages(tmp_path, flow_shards):
    files = [os.path.join(CONFIGS, "coclr_ucf101.gin")]
    used = ["CoCLR.topk = 2",  # the cycle stage only
            "cycle1_rgb/QueueNCE.temperature = 0.1"]  # a stage's own
    unused = {
        "train.epochs = 3": "every stage binds its own (infonce_rgb/train.epochs, "
                            "cycle1_rgb/train.epochs); set those instead",
        # Replaces %CYCLE_EPOCHS, which then no stage reads.
        "cycle1_rgb/train.epochs = 2": None,
        "CYCLE_EPOCHS = 1": "macro CYCLE_EPOCHS is referenced only by bindings this run "
                            "does not use"}
    params = schedule_params(flow_shards) + used + list(unused)
    gin.clear_config()
    try:
        config_lib.parse_gin(files, params)
        added = user_bindings.user_bindings(files, params)
        assert len(added) == len(params) - 1  # CYCLE_EPOCHS once, the last
        check = ObserveThenStop(added)
        with pytest.raises(Observed):
            stages.run_schedule(str(tmp_path / "run"), train_lib.train, check=check)
        names = ["infonce_rgb", "cycle1_rgb"]
        failing = {}
        for binding in added:
            try:
                user_bindings.check_reached([binding], check.usages, names)
            except ValueError as error:
                failing[binding.where.removeprefix("--gin_param=")] = str(error)
    finally:
        gin.clear_config()
    assert not (tmp_path / "run").exists()
    expected = {p: f"--gin_param={p}: does nothing in any stage: {why}"
                for p, why in unused.items() if why}
    assert failing == expected


def test_project_files_add_no_user_bindings():
    """Every recipe under the demo overlay (and the eval configs under theirs) passes
    the checks whatever they bind: only the user's bindings are checked."""
    import video_ssl.evaluate  # noqa: F401  (registers the evaluation configurables)
    pairs = [(p, DEMO) for p in sorted(glob.glob(os.path.join(CONFIGS, "*.gin")))
             if p != DEMO]
    pairs += [(p, os.path.join(EVAL_CONFIGS, "demo.gin"))
              for p in sorted(glob.glob(os.path.join(EVAL_CONFIGS, "*.gin")))]
    for recipe, overlay in pairs:
        gin.clear_config()
        try:
            config_lib.parse_gin([recipe, overlay], [])
            assert user_bindings.user_bindings([recipe, overlay], []) == [], recipe
            assert user_bindings.user_bindings([recipe, overlay], ["train.seed = 1"])
        except ValueError as error:  # a base file alone: not a recipe
            assert "train" not in os.path.basename(recipe), error
        finally:
            gin.clear_config()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shards):
    """A tiny MoCo run's folder, saved untrained."""
    from helpers import save_run
    folder = tmp_path_factory.mktemp("moco")
    gin.clear_config()
    try:
        config_lib.parse_gin([os.path.join(CONFIGS, "moco_rho2.gin"),
                              train_overlay(folder, shards)], [])
        return save_run(config_lib.method_configurable("MoCo")(), folder / "run")
    finally:
        gin.clear_config()


def test_evaluate_checks_the_command_lines_macros(run_dir, capsys):
    """(And types, as train: the same check_types.)"""
    from video_ssl import evaluate as evaluate_lib
    code = evaluate_lib.main([f"--gin_file={os.path.join(EVAL_CONFIGS, 'linear_ucf101.gin')}",
                              "--gin_param=NUM_CLASES=2", f"--checkpoint={run_dir}"])
    assert code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["video_ssl.evaluate: error: --gin_param=NUM_CLASES=2: does nothing, no "
                     "binding refers to macro NUM_CLASES (%NUM_CLASES); did you mean "
                     "NUM_CLASSES?"]
    assert not [f for f in os.listdir(run_dir) if f.startswith("eval_")]
