"""The user's gin bindings, and that each of them does something.

The user's bindings are those of the --gin_param s and of the gin files outside the
project's recipes (`config.is_project_file`: gin_configs/ and its installed copy,
whose overlays deliberately bind configurables some recipes never call), in gin's own
parse order (files, their includes where they stand, then the --gin_param s). The
checks name the first binding that fails, in one line:

- `check_types`, right after parsing: a value that does not fit the argument's
  annotation (also through a macro the user defines): "NAME: expected a number, got 'hot'".
- `check_written`, right after parsing: a binding a later project file binds again, a
  macro no binding refers to (with the closest macro name).
- `check_reached`, once the run has called its configurables (the method, optimizer
  and data built, nothing written yet): a binding that reaches nothing the run uses,
  read from gin's operative config (every configurable called, in which scope, with
  which arguments from gin): a configurable the run never calls, a scope it never
  calls it in, a scoped binding that wins over it (which, and what to set instead),
  an argument the caller always passes itself, a macro only unused bindings refer to.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import typing
from typing import Any, Iterator, Sequence

from gin import config as gin_config
from gin import config_parser

from video_ssl.config import is_project_file, quiet_gin_search, resolve_gin_file
from video_ssl.training.bindings import describe, fits

MACRO = "gin.macro"
_OWN = "the stage binds its own: "
Key = tuple  # (scope, selector, argument): gin's own key; a macro is (name, MACRO, "value")


@dataclasses.dataclass(frozen=True)
class Binding:
    """One user binding: its key, value, where it is written (`--gin_param=...` or
    `FILE, line N`) and, when a later project file binds the same key, where."""
    key: Key
    value: Any
    where: str
    overridden_by: str | None = None

    @property
    def is_macro(self) -> bool:
        return self.key[1] == MACRO

    @property
    def name(self) -> str:
        """As a user writes it: `scope/configurable.argument` or the macro's name."""
        return _name(self.key)

    @property
    def source(self) -> str:
        """Where, and what when the place alone does not say it."""
        return self.where if self.where.startswith("--gin_param") else (
            f"{self.where} ({self.name})")


@dataclasses.dataclass(frozen=True)
class Usage:
    """What one run (or one stage of a schedule, `stage`) did with its config: the
    arguments bound per (scope, selector), and per selector the scopes it was called in
    with the arguments gin supplied (gin's operative config)."""
    bound: dict[tuple[str, str], frozenset]
    calls: dict[str, dict[str, frozenset]]
    stage: str | None = None


def user_bindings(gin_files: Sequence[str], gin_params: Sequence[str]) -> list[Binding]:
    """The user's bindings of the parsed config (call after `config.parse_gin` with the
    same files and params): the last one of each key, with the project file binding it
    later, if any."""
    with quiet_gin_search():
        statements = [
            *(s for path in gin_files for s in _file_statements(resolve_gin_file(path))),
            *(s for param in gin_params for s in _param_statements(param))]
    last_user, later_project = {}, {}
    for key, value, where, user in statements:
        if user:
            last_user[key] = Binding(key, value, where)
            later_project.pop(key, None)
        elif key in last_user:
            later_project[key] = where
    return [dataclasses.replace(b, overridden_by=later_project.get(k))
            for k, b in last_user.items()]


def check_types(bindings: Sequence[Binding]) -> None:
    """Raises ValueError "NAME: expected T, got V" for the first user binding whose value
    does not fit its argument's annotation, or whose macro's value does not fit an
    argument bound to the macro ("MACRO (for NAME): ..."). Unannotated arguments,
    references and values built by gin (@x()) are left alone."""
    for binding in bindings:
        if binding.is_macro:
            name, value = binding.key[0], binding.value
            for (scope, selector), arguments in gin_config._CONFIG.items():
                for argument, bound in arguments.items():
                    if _macro_name(bound) == name:
                        _check_value(f"{name} (for {_name((scope, selector, argument))})",
                                     selector, argument, value)
        else:
            _check_value(binding.name, binding.key[1], binding.key[2], binding.value)


def usage(stage: str | None = None) -> Usage:
    """The current config's bindings and gin's operative config so far."""
    bound = {key: frozenset(arguments) for key, arguments in gin_config._CONFIG.items()}
    calls: dict[str, dict[str, frozenset]] = {}
    for (scope, selector), arguments in gin_config._OPERATIVE_CONFIG.items():
        calls.setdefault(selector, {})[scope] = frozenset(arguments)
    return Usage(bound, calls, stage)


def check_written(bindings: Sequence[Binding]) -> None:
    """Raises ValueError naming the first user binding that does nothing whatever the
    run calls: one a later project file binds again, or a macro no binding refers to
    (with the closest macro name). Right after parsing."""
    config = dict(gin_config._CONFIG)
    referenced = _referenced_macros(config)
    for binding in bindings:
        if binding.overridden_by:
            raise ValueError(f"{binding.source}: does nothing, {binding.overridden_by} binds "
                             f"it again later (give your file after the project's)")
        if binding.is_macro and binding.key[0] not in referenced:
            name = binding.key[0]
            defined = {scope for scope, selector in config if selector == MACRO}
            close = difflib.get_close_matches(name, sorted((referenced | defined) - {name}),
                                              n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"{binding.source}: does nothing, no binding refers to macro "
                             f"{name} (%{name}){hint}")


def check_reached(bindings: Sequence[Binding], usages: Sequence[Usage],
                  stage_names: Sequence[str] = ()) -> None:
    """Raises ValueError naming the first user binding that reaches nothing in any of
    `usages` (one run; or a schedule's own, then its stages named `stage_names`), with
    why (in the stages' words for a schedule)."""
    config = dict(gin_config._CONFIG)
    for binding in bindings:
        reasons = []
        for run in usages:
            reason = _unreached(binding, run, config, stage_names)
            if reason is None:
                break
            if reason and reason not in reasons and (run.stage or len(usages) == 1):
                reasons.append(reason)
        else:
            own = [r[len(_OWN):] for r in reasons if r.startswith(_OWN)]
            if own and len(own) == len(reasons):
                reasons = [f"every stage binds its own ({', '.join(own)}); set those instead"]
            where = " in any stage" if len(usages) > 1 else ""
            raise ValueError(f"{binding.source}: does nothing{where}: {'; '.join(reasons)}")


class ScheduleCheck:
    """`stages.StageCheck` of the user's bindings: each stage's usage, then
    `check_reached` over them all."""

    def __init__(self, bindings: Sequence[Binding]):
        self.bindings, self.usages = bindings, []

    def observe(self, stage: str | None) -> None:
        self.usages.append(usage(stage))

    def check(self, stage_names: Sequence[str]) -> None:
        check_reached(self.bindings, self.usages, stage_names)


def _unreached(binding: Binding, run: Usage, config: dict,
               stage_names: Sequence[str]) -> str | None:
    """None when `binding` reaches a call of `run`, else why not ('' when it is not
    meant for this stage)."""
    scope, selector, argument = binding.key
    parts = scope.split("/") if scope else []
    if run.stage is not None:  # the stage's config: its own scope removed, others' dropped
        if parts and parts[0] in stage_names and not binding.is_macro:
            if parts[0] != run.stage:
                return ""
            parts = parts[1:]
        elif argument in config.get(("/".join([run.stage, *parts]), selector), ()):
            return f"{_OWN}{run.stage}/{binding.name}"
    if binding.is_macro:
        return None if binding.key[0] in run.calls.get(MACRO, {}) else (
            f"macro {binding.key[0]} is referenced only by bindings this run does not use")
    calls = run.calls.get(selector, {})
    name = _short(selector)
    if not calls:
        return f"this run never calls {name}"
    here = [s for s in calls if _components(s)[:len(parts)] == parts]
    if not here:
        return (f"the run calls {name} only in scope {_scopes(calls)}, never in "
                f"{'/'.join(parts)!r}")
    winners = []
    for call_scope in here:
        winner = _winner(_components(call_scope), selector, argument, run.bound)
        if winner == parts and argument in calls[call_scope]:
            return None
        winners.append((call_scope, winner))
    shadowed = [(s, w) for s, w in winners if w != parts]
    if shadowed:
        call_scope, winner = shadowed[0]
        wins = f"{'/'.join(winner)}/{name}.{argument}"
        return (f"the run calls {name} in scope {call_scope!r}, where {wins} wins; set "
                f"{wins} instead")
    return f"{name}'s caller always passes {argument} itself"


def _winner(call_scope: list[str], selector: str, argument: str,
            bound: dict[tuple[str, str], frozenset]) -> list[str] | None:
    """The scope whose binding of `argument` gin applies in `call_scope`: the longest
    bound prefix (gin's `_get_bindings`)."""
    winner = None
    for i in range(len(call_scope) + 1):
        if argument in bound.get(("/".join(call_scope[:i]), selector), ()):
            winner = call_scope[:i]
    return winner


def _name(key: Key) -> str:
    scope, selector, argument = key
    if selector == MACRO:
        return scope
    return f"{scope + '/' if scope else ''}{_short(selector)}.{argument}"


def _components(scope: str) -> list[str]:
    return scope.split("/") if scope else []


def _scopes(calls: dict) -> str:
    return ", ".join(repr(s) for s in sorted(calls))


def _short(selector: str) -> str:
    try:
        return gin_config._REGISTRY.minimal_selector(selector)
    except KeyError:
        return selector


def _macro_name(value) -> str | None:
    if isinstance(value, gin_config.ConfigurableReference):
        selector = value.scoped_selector
        if selector.endswith("/" + MACRO):
            return selector[:-len(MACRO) - 1]
    return None


def _holds_reference(value) -> bool:
    if isinstance(value, gin_config.ConfigurableReference):
        return True
    if isinstance(value, dict):
        return any(_holds_reference(v) for v in (*value.keys(), *value.values()))
    if isinstance(value, (list, tuple, set)):
        return any(_holds_reference(v) for v in value)
    return False


def _referenced_macros(config: dict) -> set[str]:
    """The macros some binding's value refers to (%NAME), in lists and dicts too."""
    found = set()

    def walk(value):
        name = _macro_name(value)
        if name:
            found.add(name)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in (*value.keys(), *value.values()):
                walk(item)
    for arguments in config.values():
        for value in arguments.values():
            walk(value)
    return found


def _check_value(name: str, selector: str, argument: str, value) -> None:
    if _holds_reference(value):  # known only when gin calls the configurable
        return
    hint = _hints(selector).get(argument)
    if hint is not None and not fits(value, hint):
        raise ValueError(f"{name}: expected {describe(hint)}, got {value!r}")


def _hints(selector: str) -> dict:
    """The annotations of a configurable's arguments ({} when they cannot be read)."""
    try:
        wrapped = gin_config._REGISTRY[selector].wrapped
        if inspect.isclass(wrapped):
            return typing.get_type_hints(wrapped.__init__)
        return typing.get_type_hints(wrapped)
    except Exception:  # noqa: BLE001  an annotation Python cannot resolve: not checkable
        return {}


def _file_statements(path: str) -> Iterator[tuple]:
    """The statements of a gin file, its includes expanded where they stand (found as
    gin finds them)."""
    user = not is_project_file(path)
    for reader, exists in gin_config._FILE_READERS:
        if exists(path):
            with reader(path) as f:
                text = f.read()
            break
    else:
        return
    parser = config_parser.ConfigParser(text, gin_config.ParserDelegate())
    for statement in parser:
        if isinstance(statement, config_parser.IncludeStatement):
            yield from _file_statements(_included(statement.filename))
        elif isinstance(statement, config_parser.BindingStatement):
            yield _entry(statement, f"{path}, line {statement.location.line_num}", user)


def _param_statements(param: str) -> Iterator[tuple]:
    for statement in config_parser.ConfigParser(param, gin_config.ParserDelegate()):
        if isinstance(statement, config_parser.BindingStatement):
            yield _entry(statement, f"--gin_param={param}", True)


def _entry(statement, where: str, user: bool) -> tuple:
    """(key, value, where, user) with gin's canonical key."""
    scope, selector, argument, value, _ = statement
    if not argument:
        return (("/".join(p for p in (scope, selector) if p), MACRO, "value"), value, where,
                user)
    canonical = gin_config._REGISTRY.get_match(selector).selector
    return (scope, canonical, argument), value, where, user


def _included(filename: str) -> str:
    """The file an `include` names, searched as gin searches it."""
    prefixes = gin_config._LOCATION_PREFIXES if not os.path.isabs(filename) else [""]
    for prefix in prefixes:
        candidate = os.path.join(prefix, filename)
        if any(exists(candidate) for _, exists in gin_config._FILE_READERS):
            return candidate
    return filename
