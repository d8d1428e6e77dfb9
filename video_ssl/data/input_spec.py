"""The typed input spec: what `train_input.<key>` and `eval_input.<key>` may bind.

Both are gin configurables whose signature lists every accepted key (the `ViewSpec`
clip and crop fields, the `AugmentSpec` fields and the dataset options), so gin
rejects a typo'd key when the config is parsed, naming the key, on every path.
`view_from_input` turns the bound values into a `ViewSpec` with its `AugmentSpec`. A
run writes its views as JSON (`view_to_json`) next to its operative config, and
everything that later needs the training clips (evaluation, serving, the kNN monitor)
reads them back with `view_from_json` instead of re-parsing gin.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Mapping

import gin

from video_ssl.data import views
from video_ssl.data.views import AudioSpec, AugmentSpec, ViewSpec

# Set by the method from its own structure (rho, its modalities), never by the user.
METHOD_KEYS = ("num_clips", "same_window", "modalities")
VIEW_KEYS = tuple(k for k in views.VIEW_FIELDS if k not in METHOD_KEYS + ("augmentation",))
AUGMENT_KEYS = views.AUGMENT_FIELDS
DATASET_KEYS = ("default_frame_rate", "shuffle_buffer", "num_parallel_calls", "deterministic")
# Evaluation only: the test views' clip count (training clips follow the method) and
# dense windows given by their overlap (evaluation.protocol).
EVAL_KEYS = ("num_clips", "window_overlap")


def _configurable_input(name: str, keys: tuple[str, ...], doc: str):
    def bound(**kwargs) -> dict:
        return kwargs
    bound.__name__ = bound.__qualname__ = name
    bound.__doc__ = doc
    bound.__signature__ = inspect.Signature(
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in keys])
    configurable = gin.configurable(name)(bound)

    def call() -> dict:
        # Only what is bound: unbound keys keep the pipeline's defaults.
        return {k: v for k, v in configurable().items() if v is not None}
    call.__name__, call.__doc__ = name, doc
    return call


# `train_input.audio = @AudioSpec()` with `AudioSpec.<field>` bindings (BraVe's audio).
gin.external_configurable(AudioSpec, "AudioSpec")

train_input = _configurable_input(
    "train_input", VIEW_KEYS + AUGMENT_KEYS + DATASET_KEYS,
    "Training clips, crops, augmentation and dataset options (`train_input.<key>`).")
eval_input = _configurable_input(
    "eval_input", VIEW_KEYS + AUGMENT_KEYS + DATASET_KEYS + EVAL_KEYS,
    "Evaluation clips (`eval_input.<key>`, scoped `train/`, `test/`, `gallery/`).")


def view_from_input(values: Mapping, **method_fields) -> ViewSpec:
    """The `ViewSpec` of bound `train_input` values plus the fields the method sets
    (`num_clips`, `same_window`, `modalities`). Dataset options are left out."""
    bound = {k: v for k, v in values.items() if k in VIEW_KEYS + AUGMENT_KEYS}
    return views.view_from_options({**bound, **method_fields}, where="train_input")


def dataset_options(values: Mapping) -> dict:
    """The `make_view_dataset` keywords among bound `train_input` values."""
    return {k: v for k, v in values.items() if k in DATASET_KEYS}


def view_to_json(view: ViewSpec) -> dict:
    return dataclasses.asdict(view)


def view_from_json(data: Mapping) -> ViewSpec:
    """The `ViewSpec` that `view_to_json` wrote. Its "augmentation" and "audio" may
    hold some fields only (runs written before `AugmentSpec` stored the bound keys
    alone): the others take their defaults."""
    unknown = set(data) - set(views.VIEW_FIELDS)
    if unknown:
        raise ValueError(f"view {dict(data)}: unknown fields {sorted(unknown)}; expected "
                         f"{sorted(views.VIEW_FIELDS)}")
    values = dict(data)
    for name, spec in (("augmentation", AugmentSpec), ("audio", AudioSpec)):
        if isinstance(values.get(name), Mapping):
            values[name] = _spec(spec, name, values[name])
    return ViewSpec(**values)


def _spec(spec: type, name: str, values: Mapping):
    fields = {f.name for f in dataclasses.fields(spec)}
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"{name} {dict(values)}: unknown keys {sorted(unknown)}; expected "
                         f"some of {sorted(fields)} ({spec.__name__})")
    return spec(**values)


def clip_settings(view: ViewSpec) -> tuple[dict, dict]:
    """(clip, normalization) of a training view, for evaluation clips of the same
    shape: num_frames, frame_stride, crop_size, target_fps; mean and std (0 and 1
    when the view did not normalize)."""
    clip = {k: getattr(view, k) for k in ("num_frames", "frame_stride", "crop_size",
                                          "target_fps")}
    spec = view.augmentation
    if not spec.normalize:
        return clip, {"mean": 0.0, "std": 1.0}
    return clip, {"mean": spec.mean, "std": spec.std}
