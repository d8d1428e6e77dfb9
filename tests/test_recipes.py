"""The gin recipes against the "Recipe values" table of docs/recipes.md, the
method-agnostic demo overlay, and the packaged copy of gin_configs/ (resolve_gin_file,
setup.py)."""
from __future__ import annotations

import ast
import glob
import importlib.util
import inspect
import os
import re

import gin
import pytest
import setuptools  # noqa: F401  (provides distutils where the standard library lacks it)
from distutils.core import run_setup

import video_ssl.evaluate  # noqa: F401  (registers the evaluation configurables)
import video_ssl.train  # noqa: F401  (registers train and train_input)
from video_ssl import config as config_lib
from video_ssl.training import stages
from gin_query import bound

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "gin_configs")
RECIPES_DOC = os.path.join(REPO, "docs", "recipes.md")
RECIPES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*_rho*.gin"))
                 + glob.glob(os.path.join(CONFIGS, "*_aug_plus.gin")))


# ------------------------------------------------------ the recipe-values table

def table_rows(text: str) -> list[dict]:
    """The rows of the tables in docs/recipes.md's "## Recipe values" section as {column:
    cell}; the tables share one header."""
    section = re.search(r"^## Recipe values\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "docs/recipes.md has no '## Recipe values' section"
    header, rows = None, []
    for line in section.group(1).splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif cells != header and not all(set(c) <= set("-:") for c in cells):
            assert len(cells) == len(header), \
                f"Recipe values row {line!r}: expected {len(header)} columns"
            rows.append(dict(zip(header, cells)))
    return rows


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def row_files(row: dict) -> list[str]:
    """The config files a row is checked in: the backticked names before any '('
    (the parenthesis says which file sets the value), globs expanded."""
    patterns = _ticked(row["gin file"].split("(")[0])
    assert patterns, f"Recipe values row {row}: no gin file"
    files = []
    for pattern in patterns:
        if pattern.endswith(".py"):
            files.append(pattern)
            continue
        matched = sorted(os.path.relpath(p, CONFIGS)
                         for p in glob.glob(os.path.join(CONFIGS, pattern)))
        assert matched, f"Recipe values row {row}: {pattern!r} matches no gin file"
        files += matched
    return files


def row_value(row: dict):
    ticked = _ticked(row["value"])
    assert ticked, f"Recipe values row {row}: the value must be in backticks"
    return ast.literal_eval(ticked[0])


def code_default(path: str, binding: str):
    """In the Python module at `path`: the constant `NAME`, or the default of
    `function.argument`."""
    module = importlib.import_module(os.path.splitext(path)[0].replace("/", "."))
    if "." not in binding:
        return getattr(module, binding)
    function, argument = binding.split(".")
    return inspect.signature(getattr(module, function)).parameters[argument].default


def parse(config: str, extra: tuple[str, ...] = ()) -> None:
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, config)], list(extra))


def same(actual, expected) -> bool:
    """Equal values of one kind: numbers of either type, but booleans and None only
    equal themselves (True != 1) and a tuple is no list."""
    if isinstance(actual, bool) or isinstance(expected, bool) or None in (actual, expected):
        return actual is expected
    numbers = (int, float)
    if isinstance(actual, numbers) and isinstance(expected, numbers):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def mismatches(rows: list[dict], extra: tuple[str, ...] = ()) -> list[str]:
    """What differs between the rows' values and the configs (each parsed once, with
    the `extra` bindings after it)."""
    checks = {}
    for row in rows:
        for config in row_files(row):
            checks.setdefault(config, []).append((_ticked(row["binding"])[0], row_value(row)))
    problems = []
    for config, expectations in checks.items():
        if not config.endswith(".py"):
            parse(config, extra)
        for binding, expected in expectations:
            actual = (code_default(config, binding) if config.endswith(".py")
                      else bound(binding))
            if not same(actual, expected):
                problems.append(
                    f"{config}: {binding} = {actual!r}, docs/recipes.md says {expected!r}")
    return problems


ROWS = table_rows(open(RECIPES_DOC, encoding="utf-8").read())


def test_recipe_values_table_matches_the_gin_recipes():
    assert len(ROWS) >= 40
    problems = mismatches(ROWS)
    assert not problems, "docs/recipes.md '## Recipe values' and gin_configs/ disagree:\n" + \
        "\n".join(problems)


def test_table_check_fails_when_a_gin_value_changes():
    blur = [r for r in ROWS if _ticked(r["binding"]) == ["train_input.blur_prob"]]
    assert blur and mismatches(blur) == []
    assert mismatches(blur, extra=("train_input.blur_prob = 0.25",))
    momentum = [r for r in ROWS if _ticked(r["binding"]) == ["MoCo.base_momentum"]]
    assert len(mismatches(momentum, extra=("BASE_MOMENTUM = 0.999",))) == 4  # moco_rho1-4


def test_table_parser_reads_cells():
    rows = table_rows("## Recipe values\n\n| paper | gin file | binding | value | why |\n"
                      "|---|---|---|---|---|\n"
                      "| §B.1 | `moco_rho*.gin` (`moco_base.gin`) | `MoCo.temperature` | "
                      "`0.1` | |\n\n**more**\n\n| paper | gin file | binding | value | why |\n"
                      "|---|---|---|---|---|\n## Next\n| x |\n")
    assert rows == [{"paper": "§B.1", "gin file": "`moco_rho*.gin` (`moco_base.gin`)",
                     "binding": "`MoCo.temperature`", "value": "`0.1`", "why": ""}]
    assert row_files(rows[0]) == ["moco_rho1.gin", "moco_rho2.gin", "moco_rho3.gin",
                                  "moco_rho4.gin"]
    assert row_value(rows[0]) == 0.1


# -------------------------------------------------------------- recipes and the demo

@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_parses_alone_and_under_the_demo_overlay(recipe):
    parse(recipe)
    assert bound("%BACKBONE") == "slow_r50"
    with pytest.raises(ValueError):
        gin.query_parameter("train.train_files")  # required: no default in a recipe
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, recipe), os.path.join(CONFIGS, "demo.gin")], [])
    assert bound("%BACKBONE") == "slow_r18"
    method = gin.query_parameter("train.method").configurable.name
    assert bound(f"{method}.hidden_dim") == 256
    assert bound(f"{method}.synchronized_bn") is False
    # Shuffle-BN needs BN groups on the demo's one device: MoCo's 8 (4 groups of 8);
    # the others keep the whole batch.
    assert bound(f"{method}.bn_group_size") == (8 if method == "MoCo" else None)
    optimizer = demo_optimizer()  # LARS at 4.8 x 32 / 256 for every ρ method
    assert type(optimizer).__name__ == "LARS"
    assert float(optimizer.learning_rate) == pytest.approx(0.6)


def demo_optimizer():
    """The optimizer train builds from the parsed config for a demo run (batch 32, 10
    epochs of 12 steps): built, so that a binding the optimizer does not read fails."""
    return bound("train.optimizer").scoped_configurable_fn(
        global_batch_size=32, total_steps=120, warmup_steps=0, steps_per_epoch=12)


def test_coclr_schedule_and_recipes_under_the_demo_overlay():
    demo = os.path.join(CONFIGS, "demo.gin")
    gin.clear_config()
    config_lib.parse_gin([os.path.join(CONFIGS, "coclr_ucf101.gin"), demo], [])
    config, schedule = gin.config_str(), bound("run_schedule.stages")
    names = [name for name, _ in schedule]
    expected = {"infonce_rgb": ("InfoNCE", "rgb", 30), "infonce_flow": ("InfoNCE", "flow", 30),
                **{f"cycle{c}_{m}": ("CoCLR", m, 10) for c in (1, 2) for m in ("rgb", "flow")}}
    assert names == list(expected)
    for name in names:  # each stage as run_schedule configures it
        gin.clear_config()
        gin.parse_config(stages.stage_config(config, name, names))
        method = gin.query_parameter("train.method").configurable.name
        stream = bound("pair_views.modality" if method == "InfoNCE" else f"{method}.modality")
        assert (method, stream, bound("train.epochs")) == expected[name], name
        assert bound("QueueNCE.backbone") == "slow_r18"
        assert bound("QueueNCE.queue_size") == 256
        assert bound("QueueNCE.base_momentum") == 0.99
        assert bound("QueueNCE.bn_group_size") == 8  # 4 groups: shuffle-BN on one device
        optimizer = demo_optimizer()  # CoCLR's own: Adam 1e-3 (not scaled), plateau decay
        assert type(optimizer).__name__ == "Adam"
        assert float(optimizer.learning_rate) == pytest.approx(1e-3)
        assert bound("build_optimizer.schedule") == "plateau"
    for recipe, method in (("infonce_rgb.gin", "InfoNCE"), ("infonce_flow.gin", "InfoNCE"),
                           ("ubernce_rgb.gin", "UberNCE")):
        gin.clear_config()
        config_lib.parse_gin([os.path.join(CONFIGS, recipe), demo], [])
        assert gin.query_parameter("train.method").configurable.name == method
        assert bound("train.epochs") == 30  # as each InfoNCE stage above
        assert type(demo_optimizer()).__name__ == "Adam"


def test_aug_plus_is_one_overlay_on_the_rho_4_recipes():
    for method in ("moco", "byol", "simclr", "swav"):
        text = open(os.path.join(CONFIGS, f"{method}_aug_plus.gin"), encoding="utf-8").read()
        assert f"include '{method}_rho4.gin'" in text and "include 'aug_plus.gin'" in text
        if method in ("simclr", "swav"):  # not in the paper (Table 9: MoCo and BYOL)
            assert "OUR EXTENSION" in text
    assert not os.path.exists(os.path.join(CONFIGS, "strong_augmentation.gin"))


def test_demo_overlay_names_no_method_binding():
    methods = set()
    for recipe in RECIPES:
        parse(recipe)
        methods.add(gin.query_parameter("train.method").configurable.name)
    assert methods == {"MoCo", "BYOL", "SimCLR", "SwAV"}
    demo = open(os.path.join(CONFIGS, "demo.gin"), encoding="utf-8").read()
    selectors = set(re.findall(r"^(?:[\w.]+/)?([\w.]+)\.\w+\s*=", demo, re.M))
    assert selectors and not selectors & methods, selectors & methods


# ----------------------------------------------------------------- packaged configs

def _installed_configs() -> str:
    spec = importlib.util.find_spec(config_lib.PACKAGED_CONFIGS)
    assert spec is not None, (f"package {config_lib.PACKAGED_CONFIGS} not installed: reinstall with "
                              "`pip install -e . --use-pep517` (or `pip install .`)")
    return list(spec.submodule_search_locations)[0]


def test_resolve_gin_file_falls_back_to_the_installed_recipes(tmp_path, monkeypatch):
    installed = _installed_configs()
    monkeypatch.chdir(tmp_path)
    for given, relative in [("gin_configs/moco_rho3.gin", "moco_rho3.gin"),
                            ("moco_rho3.gin", "moco_rho3.gin"),
                            ("gin_configs/eval/linear_ucf101.gin", "eval/linear_ucf101.gin")]:
        assert config_lib.resolve_gin_file(given) == os.path.join(installed, relative)
    (tmp_path / "gin_configs").mkdir()
    (tmp_path / "gin_configs" / "moco_rho3.gin").write_text("RHO = 5\n")
    assert config_lib.resolve_gin_file("gin_configs/moco_rho3.gin") == "gin_configs/moco_rho3.gin"
    with pytest.raises(ValueError, match="--gin_file=gin_configs/nope.gin: no such file"):
        config_lib.resolve_gin_file("gin_configs/nope.gin")
    with pytest.raises(ValueError, match="no such file"):
        config_lib.resolve_gin_file(str(tmp_path / "moco_rho2.gin"))  # absolute: no fallback
    gin.clear_config()
    config_lib.parse_gin(["byol_rho2.gin", "gin_configs/demo.gin"], [])  # includes found there too
    assert bound("%RHO") == 2 and bound("%BACKBONE") == "slow_r18"


def test_setup_ships_every_gin_file(monkeypatch):
    monkeypatch.chdir(REPO)
    distribution = run_setup(os.path.join(REPO, "setup.py"), stop_after="init")
    package_dir = distribution.package_dir
    shipped = set()
    for package, patterns in distribution.package_data.items():
        assert package in distribution.packages, package
        top, *rest = package.split(".")
        folder = os.path.join(REPO, package_dir.get(top, top), *rest)
        for pattern in patterns:
            shipped |= {os.path.relpath(p, CONFIGS)
                        for p in glob.glob(os.path.join(folder, pattern))}
    every = {os.path.relpath(p, CONFIGS)
             for p in glob.glob(os.path.join(CONFIGS, "**", "*.gin"), recursive=True)}
    assert every and every == shipped, sorted(every - shipped)
    assert package_dir[config_lib.PACKAGED_CONFIGS] == "gin_configs"
