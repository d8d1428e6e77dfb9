"""Type and range checks of a configurable's arguments, so that a gin binding of the
wrong type (`train.epochs='x'`) or out of range (`train.epochs=-1`) fails before
anything runs, with a line naming the binding, instead of deep inside."""
from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any, Callable, Mapping


def check_types(function: Callable, arguments: Mapping[str, Any], scope: str) -> None:
    """Raises ValueError "SCOPE.NAME: expected an int, got 'x'" for the first argument
    whose value does not fit its annotation. Annotations it cannot check are skipped."""
    hints = typing.get_type_hints(function)
    for name, value in arguments.items():
        if name in hints and not fits(value, hints[name]):
            raise ValueError(f"{scope}.{name}: expected {describe(hints[name])}, "
                             f"got {value!r}")


def check_minimums(arguments: Mapping[str, Any], minimums: Mapping[str, float],
                   scope: str) -> None:
    """Raises ValueError "SCOPE.NAME: expected at least M, got V" for the first argument
    below its minimum (None, for an optional one, is left alone)."""
    for name, minimum in minimums.items():
        value = arguments[name]
        if value is not None and value < minimum:
            raise ValueError(f"{scope}.{name}: expected at least {minimum}, got {value!r}")


def fits(value, hint) -> bool:
    """Whether `value` fits the annotation `hint` (True for what cannot be checked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:  # an int is a number too; a bool is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is collections.abc.Callable:
        return callable(value)
    if origin in (collections.abc.Sequence, list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return False
        return not args or all(fits(v, args[0]) for v in value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # not checkable here


_ARTICLES = {int: "an int", float: "a number", str: "a string", bool: "True or False",
             type(None): "None"}


def describe(hint) -> str:
    """`hint` in words: "an int", "a number or None", "a list of strings", ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if hint in _ARTICLES:
        return _ARTICLES[hint]
    if origin is collections.abc.Callable:
        return "a callable (a gin reference such as @name)"
    if origin in (collections.abc.Sequence, list, tuple):
        return f"a list of {describe(args[0]).split(' ', 1)[-1]}s" if args else "a list"
    return getattr(hint, "__name__", str(hint))
