"""Moving a checkpoint's tensors into a Keras model, each exactly once.

`SourceTensors` holds the file's named arrays: a format's converter `take`s each
tensor it maps (or `drop`s the ones it knowingly leaves, with the reason), and
`check_consumed` fails on any tensor left over, so a layout the converter does not
expect is never half-imported. `assign` then writes the converted arrays into the
model, failing unless every one of the model's weights is given, with its shape.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import keras
import numpy as np


class ImportFailure(ValueError):
    """A checkpoint does not fit what its format and the target architecture expect."""


def _shape(value) -> tuple:
    return tuple(np.shape(value))


class SourceTensors:
    """The named arrays of one checkpoint file (`path` names it in errors)."""

    def __init__(self, path: str, tensors: Mapping[str, np.ndarray]):
        self.path = path
        self._tensors = {k: np.asarray(v) for k, v in tensors.items()}
        self._used: set[str] = set()
        self.dropped: dict[str, str] = {}

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def take(self, key: str, shape: tuple | None = None) -> np.ndarray:
        """The tensor `key` (of `shape`, when given), marked consumed; taking it twice
        is an error, as is a missing key or another shape."""
        if key not in self._tensors:
            raise ImportFailure(f"{self.path}: no tensor {key!r} (expected by this format's "
                                "layout; is the file of another architecture?)")
        if key in self._used or key in self.dropped:
            raise ImportFailure(f"{self.path}: tensor {key!r} consumed twice")
        value = self._tensors[key]
        if shape is not None and _shape(value) != tuple(shape):
            raise ImportFailure(f"{self.path}: tensor {key!r} has shape {_shape(value)}, "
                                f"expected {tuple(shape)}")
        self._used.add(key)
        return value

    def drop(self, match: str | Callable[[str], bool], reason: str) -> int:
        """Marks the not yet consumed tensors whose key matches (a regular expression,
        searched, or a predicate) as knowingly left out; returns how many."""
        test = match if callable(match) else re.compile(match).search
        keys = [k for k in self._tensors if k not in self._used and test(k)]
        for key in keys:
            self.dropped[key] = reason
        return len(keys)

    def check_consumed(self) -> None:
        left = [k for k in self._tensors if k not in self._used and k not in self.dropped]
        if left:
            more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
            raise ImportFailure(f"{self.path}: tensor {left[0]!r} of shape "
                                f"{_shape(self._tensors[left[0]])} has no place in the "
                                f"target architecture{more}")


def assign(model: keras.Model, weights: Mapping[str, np.ndarray], *, source: str) -> None:
    """Sets every weight of `model` from `weights`, keyed by Keras variable path
    (`<layer>/<weight>`, e.g. "res2_0_a/kernel"); every weight must be given once,
    with the variable's shape. `source` names the file in errors."""
    variables = {v.path: v for v in model.weights}
    missing = [p for p in variables if p not in weights]
    if missing:
        raise ImportFailure(f"{source}: nothing for {model.name} weight {missing[0]!r} "
                            f"{tuple(variables[missing[0]].shape)} "
                            f"({len(missing)} weights unassigned)")
    unknown = [p for p in weights if p not in variables]
    if unknown:
        raise ImportFailure(f"{source}: converted weight {unknown[0]!r} has no place in "
                            f"{model.name}")
    for path, variable in variables.items():
        value = np.asarray(weights[path])
        if value.shape != tuple(variable.shape):
            raise ImportFailure(f"{source}: {model.name} weight {path!r} expects shape "
                                f"{tuple(variable.shape)}, the converted tensor has "
                                f"{value.shape}")
        variable.assign(value.astype(variable.dtype))
