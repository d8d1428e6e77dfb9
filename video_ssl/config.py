"""Gin in one place: parsing config files (with the packaged recipes as a fallback),
registering the configurables they name, and the embedded demo dataset's gin hook."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import pkgutil
from typing import Iterator, Sequence

import gin
import tensorflow as tf


@gin.configurable
def demo_files(split: str = gin.REQUIRED) -> str:
    """File pattern of a split of the embedded demo dataset (built on first use)."""
    from video_ssl.data.demo import ensure_demo_dataset
    return ensure_demo_dataset(progress=True)[split]


def parse_gin(gin_files: Sequence[str], gin_params: Sequence[str], *,
              skip_unknown: bool = False) -> None:
    """Parses the gin files in order, then the single bindings. Each file's folder is
    searched for its `include`s, so recipes include their base files by name.
    `skip_unknown`: ignore bindings of configurables not registered (e.g. `train.*`
    when only the method is built)."""
    gin_files = [resolve_gin_file(path) for path in gin_files]
    for path in gin_files:
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
    register_configurables()
    with quiet_gin_search():
        gin.parse_config_files_and_bindings(gin_files, gin_params, skip_unknown=skip_unknown)


# setup.py ships gin_configs/ as this data-only package.
PACKAGED_CONFIGS = "video_ssl_configs"


def resolve_gin_file(path: str) -> str:
    """`path` when it exists, else the installed copy of a recipe: `gin_configs/X.gin`
    or `X.gin` (also `eval/X.gin`) found in the `video_ssl_configs` package, so that
    `--gin_file=gin_configs/moco_rho3.gin` works from any folder after `pip install .`."""
    if tf.io.gfile.exists(path):
        return path
    relative = os.path.normpath(path)
    if relative.startswith("gin_configs" + os.sep):
        relative = relative[len("gin_configs" + os.sep):]
    spec = None if os.path.isabs(relative) else importlib.util.find_spec(PACKAGED_CONFIGS)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidate = os.path.join(folder, relative)
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(f"--gin_file={path}: no such file (nor {relative} among the installed "
                     f"recipes of the {PACKAGED_CONFIGS} package)")


def is_project_file(path: str) -> bool:
    """Whether `path` is one of the project's recipes: under gin_configs/ of this
    source tree or in its installed copy (the `video_ssl_configs` package). Their
    bindings are not the user's (`video_ssl.user_bindings`)."""
    source_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "gin_configs")
    spec = importlib.util.find_spec(PACKAGED_CONFIGS)
    folders = [source_tree, *(spec.submodule_search_locations or [] if spec else [])]
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(folder) + os.sep) for folder in folders)


@contextlib.contextmanager
def quiet_gin_search() -> Iterator[None]:
    """Without the error gin logs for each search folder that lacks an included file
    (the include is still an error when no folder has it)."""
    quiet = _QuietGinSearch()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


class _QuietGinSearch(logging.Filter):
    def filter(self, record):
        return not record.getMessage().startswith("Path not found")


def register_configurables() -> None:
    """Imports the modules whose classes and functions gin files name: every module of
    `video_ssl.methods`, whose concrete method classes are registered under their names
    (so a new method registers by existing; the classes stay gin-free: gin builds them,
    Python callers pass their arguments), the optimizers and the stage schedule."""
    import video_ssl.methods
    from video_ssl.methods.base import all_concrete_methods
    for module in pkgutil.iter_modules(video_ssl.methods.__path__):
        importlib.import_module(f"video_ssl.methods.{module.name}")
    for cls in all_concrete_methods():
        if cls not in _REGISTERED_METHODS:
            gin.external_configurable(cls, module=cls.__module__)
            _REGISTERED_METHODS.add(cls)
    import video_ssl.optim  # noqa: F401
    import video_ssl.training.stages  # noqa: F401


_REGISTERED_METHODS: set[type] = set()


def method_configurable(name: str):
    """The gin-registered constructor of the method class `name` (building it applies
    the parsed bindings); a ValueError when no method has that name."""
    register_configurables()
    return gin.get_configurable(name)
