"""Multi-stage pre-training in one command: CoCLR's schedule (InfoNCE for each stream,
then alternation cycles), or any sequence of training runs.

`run_schedule.stages` lists the stages in order as (name, init) pairs: each stage is a
complete training run in `model_dir/<name>`, configured by the unscoped bindings plus
those scoped with its name (`cycle1_rgb/train.method = @CoCLR`,
`cycle1_rgb/CoCLR.modality = 'rgb'`, `cycle1_rgb/train.epochs = 100`), and `init` maps
encoder names to earlier stages whose run initializes them (the method's
`init_checkpoints`, e.g. {'rgb': 'infonce_rgb', 'flow': 'infonce_flow'}). Each stage
trains under a config of its own in which its scoped bindings are plain ones (other
stages' are left out), so its operative_config.gin reads like that of a single run and
evaluation, export and `pretrained.load_encoder` treat the stage as one. A stage that
finished writes `model_dir/<name>/STAGE_COMPLETE` (its final metrics) after
`STAGE_CONFIG` (the config it finished with); re-running the command skips finished
stages and resumes the first unfinished one from its newest checkpoint (the trainer's
own resume). A re-run that would give a finished stage other settings (its epochs,
method or any binding it uses, `settings_differences`) is refused before anything
runs, naming the stage and the difference; with `extend_finished` (the trainer's
`--extend_finished_stages`) such a stage is trained on from its newest checkpoint under
the new settings, e.g. to its new length. `run_schedule.only` runs one stage alone
(its `init` stages must have finished). `model_dir/schedule.json` collects the final
metrics of every finished stage, rewritten after each stage.

The trainer (`video_ssl.train`) calls `run_schedule` when `run_schedule.stages` is bound
(`scheduled()`), instead of training one run. It hands in a `StageCheck` of the user's
bindings: before any stage trains, every stage is built once under its own config
(`train_fn(stage_dir, build_only=True)`: method and optimizer, nothing written), so that
a binding no stage uses fails first.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import gin
import tensorflow as tf

from video_ssl import atomic

COMPLETE_FILE = "STAGE_COMPLETE"
STAGE_CONFIG = "stage_config.gin"
SUMMARY_FILE = "schedule.json"
OPERATIVE_CONFIG = "operative_config.gin"  # what the trainer writes
EXTEND_FLAG = "--extend_finished_stages"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Bindings that say how a stage runs, not what it trains: they may change between runs.
_HOW_IT_RUNS = re.compile(r"run_schedule\.\w+|train\.(verbose|strategy|checkpoint_every_steps|"
                          r"tensorboard_every_steps|knn_\w+)")
_MAX_DIFFERENCES_SHOWN = 3


def scheduled() -> bool:
    """Whether the parsed gin config binds `run_schedule.stages`."""
    try:
        gin.query_parameter("run_schedule.stages")
    except ValueError:
        return False
    return True


def _check_stages(stages) -> list[tuple[str, dict]]:
    checked, seen = [], set()
    for entry in stages:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2
                and isinstance(entry[1], Mapping)):
            raise ValueError(f"run_schedule.stages: expected (name, {{encoder: stage}}) pairs, "
                             f"got {entry!r}")
        name, init = entry[0], dict(entry[1])
        if not isinstance(name, str) or not _NAME.match(name) or name in seen:
            raise ValueError(f"run_schedule.stages: stage name {name!r}: expected a unique "
                             "identifier (it names the stage's folder and gin scope)")
        unknown = {source for source in init.values() if source not in seen}
        if unknown:
            raise ValueError(f"run_schedule.stages: stage {name!r} initializes from "
                             f"{sorted(unknown)}; expected earlier stages of {sorted(seen)}")
        seen.add(name)
        checked.append((name, init))
    if not checked:
        raise ValueError("run_schedule.stages: expected at least one stage")
    return checked


def is_complete(stage_dir: str) -> bool:
    return tf.io.gfile.exists(os.path.join(stage_dir, COMPLETE_FILE))


def _entries(config: str) -> list[str]:
    """The bindings of a gin config text, one string each (continuation lines
    included); comments and blank lines dropped."""
    entries = []
    for line in config.splitlines():
        if line[:1].isspace() and entries:
            entries[-1] += "\n" + line
        elif line.strip() and not line.startswith("#"):
            entries.append(line)
    return entries


def stage_config(config: str, name: str, stage_names: Sequence[str]) -> str:
    """Stage `name`'s config: the unscoped bindings of `config` (a `gin.config_str()`),
    then those scoped `name/` with the scope removed (so they win); bindings scoped
    with another stage's name are left out."""
    common, own = [], []
    for entry in _entries(config):
        key = entry.split("=", 1)[0].strip()
        scope, _, rest = key.partition("/")
        if rest and scope in stage_names:
            if scope == name:
                own.append(entry.lstrip()[len(scope) + 1:])
            continue
        common.append(entry)
    return "\n".join(common + own) + "\n"


def _bind_init_checkpoints(init: Mapping[str, str], model_dir: str) -> None:
    """Binds `<Method>.init_checkpoints` to the earlier stages' folders."""
    method = gin.query_parameter("train.method").configurable.name
    checkpoints = {encoder: os.path.join(model_dir, source) for encoder, source in init.items()}
    with gin.unlock_config():
        gin.bind_parameter(f"{method}.init_checkpoints", checkpoints)


class StageCheck(Protocol):
    """A check over every stage's use of the config (`video_ssl.user_bindings`)."""

    def observe(self, stage: str | None) -> None:
        """Called under a stage's config once its method and optimizer are built, and
        (None) under the whole config, where only `run_schedule` was called."""

    def check(self, stage_names: Sequence[str]) -> None:
        """Called once every stage was observed; raises to stop the schedule."""


@contextlib.contextmanager
def _stage(config: str, name: str, names: Sequence[str], init: Mapping[str, str],
           model_dir: str) -> Iterator[None]:
    """Stage `name`'s own config (`stage_config`, its `init` bound), then `config` again
    (for the next stage and the caller)."""
    gin.clear_config()
    try:
        gin.parse_config(stage_config(config, name, names))
        if init:
            _bind_init_checkpoints(init, model_dir)
        yield
    finally:
        gin.clear_config()
        gin.parse_config(config)


def _bindings(config: str) -> dict[str, str]:
    """{key: value} of a gin config text's bindings (the last one of a key wins), every
    macro reference replaced by the macro's value; macro definitions, imports and the
    bindings of `_HOW_IT_RUNS` left out."""
    bindings, macros = {}, {}
    for entry in _entries(config):
        key, equals, value = entry.partition("=")
        if not equals:  # an import
            continue
        key, value = key.strip(), " ".join(value.split())
        target = bindings if "." in key.rsplit("/", 1)[-1] else macros
        target[key] = value

    def resolve(value: str, depth: int = 0) -> str:
        if depth > len(macros):  # a macro cycle: gin refuses it anyway
            return value
        return re.sub(r"%([\w./]+)", lambda m: resolve(macros[m[1]], depth + 1)
                      if m[1] in macros else m[0], value)

    return {key: resolve(value) for key, value in bindings.items()
            if not _HOW_IT_RUNS.fullmatch(key.rsplit("/", 1)[-1])}


def _configurables(operative_config: str) -> set[str]:
    """The configurables an operative config shows were called, with the scope they were
    called in ("train", "short_run_lars/build_optimizer")."""
    return {key.rsplit(".", 1)[0] for key in _bindings(operative_config)}


def _applies(key: str, used: set[str]) -> bool:
    """Whether binding `key` reaches one of the `used` configurables: a scoped binding
    the configurable called in that scope, an unscoped one the configurable in any."""
    configurable = key.rsplit(".", 1)[0]
    if "/" in configurable:
        return configurable in used
    return any(name.rsplit("/", 1)[-1] == configurable for name in used)


def settings_differences(finished: str, new: str, used: set[str] | None = None) -> list[str]:
    """How the stage config `new` differs from `finished` (the one a stage finished
    with), as "KEY: FINISHED_VALUE then, NEW_VALUE now" (macros resolved); with
    `used` (the configurables the stage called, `_configurables`), only in the
    bindings that reach them."""
    old_values, new_values = _bindings(finished), _bindings(new)
    differences = []
    for key in sorted(set(old_values) | set(new_values)):
        if used is not None and not _applies(key, used):
            continue
        before, after = old_values.get(key, "unbound"), new_values.get(key, "unbound")
        if before != after:
            differences.append(f"{key}: {before} then, {after} now")
    return differences


def _changed_settings(stage_dir: str, config: str) -> list[str]:
    """How the stage config `config` differs from the one the finished stage in
    `stage_dir` finished with, in the bindings of the configurables it called (its
    operative config); nothing for a stage finished before its config was recorded."""
    recorded = os.path.join(stage_dir, STAGE_CONFIG)
    if not tf.io.gfile.exists(recorded):
        return []
    operative = os.path.join(stage_dir, OPERATIVE_CONFIG)
    used = _configurables(_read(operative)) if tf.io.gfile.exists(operative) else None
    return settings_differences(_read(recorded), config, used)


def _shown(differences: Sequence[str]) -> str:
    more = len(differences) - _MAX_DIFFERENCES_SHOWN
    return "; ".join(differences[:_MAX_DIFFERENCES_SHOWN]) + (
        f"; and {more} more" if more > 0 else "")


def _read(path: str) -> str:
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def _write_summary(model_dir: str, names: Sequence[str]) -> dict:
    """schedule.json: {stage: final metrics} of the finished stages; returns it."""
    summary = {name: json.loads(_read(os.path.join(model_dir, name, COMPLETE_FILE)))
               for name in names if is_complete(os.path.join(model_dir, name))}
    atomic.write_text(os.path.join(model_dir, SUMMARY_FILE), json.dumps(summary, indent=1))
    return summary


@gin.configurable(denylist=["model_dir", "train_fn", "extend_finished", "check"])
def run_schedule(model_dir: str, train_fn: Callable[..., dict], *,
                 stages: Sequence = gin.REQUIRED, only: str | None = None,
                 extend_finished: bool = False, check: StageCheck | None = None) -> dict:
    """Runs the unfinished `stages` in order (or stage `only`), each as
    `train_fn(model_dir/<name>)` under its own config (`stage_config`); returns
    {stage: final metrics} of the finished stages. A finished stage whose settings
    differ from this run's is refused before anything runs, or, with
    `extend_finished`, trained on under them. check (not a binding): first every
    stage is built (`train_fn(stage_dir, build_only=True)`) and observed, then checked."""
    stages = _check_stages(stages)
    names = [name for name, _ in stages]
    if only is not None and only not in names:
        raise ValueError(f"run_schedule.only={only!r}: expected one of {names}")
    config = gin.config_str()
    if check is not None:
        check.observe(None)
        for name, init in stages:
            with _stage(config, name, names, init, model_dir):
                train_fn(os.path.join(model_dir, name), build_only=True)
                check.observe(name)
        check.check(names)
    tf.io.gfile.makedirs(model_dir)
    todo = []
    for name, _ in stages:  # every finished stage checked before anything runs
        stage_dir = os.path.join(model_dir, name)
        if only is not None and name != only:
            continue
        if is_complete(stage_dir):
            changed = _changed_settings(stage_dir, stage_config(config, name, names))
            if changed and not extend_finished:
                raise ValueError(
                    f"run_schedule: stage {name!r} finished with other settings "
                    f"({_shown(changed)}); pass {EXTEND_FLAG} to train it on under these "
                    "(from its newest checkpoint, e.g. to more epochs), or use another "
                    "model_dir")
            if not changed and only is None:
                continue
            if changed:
                print(f"Schedule: stage {name!r} finished with other settings "
                      f"({_shown(changed)}); training it on under these ({EXTEND_FLAG})")
        todo.append(name)
    for name, init in stages:
        if name not in todo:
            continue
        stage_dir = os.path.join(model_dir, name)
        missing = [source for source in init.values()
                   if not is_complete(os.path.join(model_dir, source))]
        if missing:
            raise ValueError(f"run_schedule: stage {name!r} needs finished stages {missing} "
                             f"in {model_dir} (run the schedule without run_schedule.only)")
        tf.io.gfile.makedirs(stage_dir)
        if is_complete(stage_dir):  # trained on: unfinished until it ends again
            tf.io.gfile.remove(os.path.join(stage_dir, COMPLETE_FILE))
        print(f"Schedule: stage {name!r} ({names.index(name) + 1}/{len(names)}) in {stage_dir}")
        with _stage(config, name, names, init, model_dir):
            final = train_fn(stage_dir)
        atomic.write_text(os.path.join(stage_dir, STAGE_CONFIG), stage_config(config, name, names))
        atomic.write_text(os.path.join(stage_dir, COMPLETE_FILE), json.dumps(final, indent=1))
        _write_summary(model_dir, names)
    return _write_summary(model_dir, names)
