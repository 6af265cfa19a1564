"""Pydantic validation errors, told in the workspace's words at ``file:line:col``.

Pydantic reports a ``loc`` tuple through the *model* (which may contain union tags such
as ``"str"`` or ``"function-after[...]"``); we walk it over the raw YAML data instead, so
the path names what the user wrote, then ask the SourceMap where that was.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from headwater.errors import Problem
from headwater.workspace.inputs import type_name
from headwater.workspace.models import Action, Step
from headwater.workspace.strom_compat import not_yet_key, not_yet_type
from headwater.workspace.yamlsource import SourceMap, YamlPath

__all__ = ["describe", "did_you_mean", "field_label", "problems_from_validation_error"]

_QUOTED = re.compile(r"'([^']*)'")
_SECTION_NOUN = {"actions": "action", "tasks": "task", "triggers": "trigger", "secrets": "secret"}


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` when a candidate is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def describe(path: YamlPath) -> tuple[str, YamlPath]:
    """The entity a path belongs to (``"step 'poll' of task 'c'"``) and the rest of it."""
    if len(path) >= 2 and path[0] in _SECTION_NOUN:
        section, name = path[0], path[1]
        if section == "tasks" and len(path) >= 4 and path[2] == "flow":
            return f"step {path[3]!r} of task {name!r}", path[4:]
        return f"{_SECTION_NOUN[str(section)]} {name!r}", path[2:]
    if path and path[0] in ("on_success", "on_error", "on_suspended", "on_cancel"):
        if len(path) >= 2:
            return f"workspace hook {path[0]}[{path[1]}]", path[2:]
        return f"workspace `{path[0]}`", ()
    return "workspace", path


def field_label(rest: YamlPath) -> str:
    """``("retry", "count")`` as ``retry.count``; list indexes as ``[0]``."""
    out = ""
    for part in rest:
        if part == "inline":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _map_loc(raw: Any, loc: Sequence[int | str]) -> YamlPath:
    """The part of ``loc`` that exists in the raw data (union tags are skipped)."""
    current = raw
    mapped: list[str | int] = []
    for part in loc:
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
            mapped.append(part)
    return tuple(mapped)


def _unwrap(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [inner for arg in get_args(tp) for inner in _unwrap(arg) if inner is not type(None)]
    return [tp]


def _models_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[type[BaseModel]]:
    """The models that hold the value at ``loc`` (for listing valid keys)."""
    current: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for tp in (inner for t in current for inner in _unwrap(t)):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                info = tp.model_fields.get(part) if isinstance(part, str) else None
                if info is not None:
                    following.append(info.annotation)
            elif get_origin(tp) is dict and isinstance(part, str):
                following.append(get_args(tp)[1])
            elif get_origin(tp) is list and isinstance(part, int):
                following.append(get_args(tp)[0])
        if following:  # an unmatched part is a union tag: stay where we are
            current = following
    return [
        tp
        for t in current
        for tp in _unwrap(t)
        if isinstance(tp, type) and issubclass(tp, BaseModel)
    ]


def _valid_keys(model: type[BaseModel], parent_loc: Sequence[int | str]) -> list[str]:
    keys: list[str] = []
    for found in _models_at(model, parent_loc):
        keys.extend(found.model_fields)
        if found is Step:  # a step may carry an inline action's fields
            keys.extend(Action.model_fields)
    return [k for k in dict.fromkeys(keys) if k != "inline"]


def _model_names(model: type[BaseModel], parent_loc: Sequence[int | str]) -> list[str]:
    names: list[str] = []
    for found in _models_at(model, parent_loc):
        names.append(found.__name__)
        if found is Step:  # a step may carry an inline action's fields
            names.append(Action.__name__)
    return names


def _expected(ctx: dict[str, Any] | None) -> list[str]:
    text = str((ctx or {}).get("expected", ""))
    return _QUOTED.findall(text) or ([text] if text else [])


def _got(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"got {type_name(value)}"
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"got {type_name(value)} {shown}"


def problems_from_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    raw: Any,
    base: YamlPath,
    source_map: SourceMap,
    *,
    skip: Iterable[tuple[str, str]] = (),
) -> list[Problem]:
    """One Problem per pydantic error; ``skip`` drops ``(type, field)`` pairs."""
    skipped = set(skip)
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if (error["type"], str(loc[-1]) if loc else "") in skipped:
            continue
        problems.append(_problem(error, model, raw, base, source_map))
    return problems


def _problem(
    error: ErrorDetails, model: type[BaseModel], raw: Any, base: YamlPath, source_map: SourceMap
) -> Problem:
    loc = error["loc"]
    kind = error["type"]
    mapped = _map_loc(raw, loc)
    path = (*base, *mapped)
    entity, rest = describe(path)
    label = field_label(rest)
    value = error.get("input")
    ctx = error.get("ctx")

    if kind == "extra_forbidden":
        key = str(loc[-1])
        not_yet = not_yet_key(_model_names(model, loc[:-1]), key)
        if not_yet is not None:
            return source_map.problem(f"{entity}: {not_yet}", path, at_key=True)
        parent = field_label(rest[:-1])
        where = f" in `{parent}`" if parent else ""
        hint = did_you_mean(key, _valid_keys(model, loc[:-1]))
        return source_map.problem(f"{entity}: unknown key `{key}`{where}{hint}", path, at_key=True)
    if kind == "missing":
        key = str(loc[-1])
        where = f" in `{label}`" if label else ""
        return source_map.problem(
            f"{entity}: missing required key `{key}`{where}", path, at_key=True
        )
    if kind in ("enum", "literal_error") and not_yet_type(value) is not None:
        return source_map.problem(f"{entity}: {not_yet_type(value)}", path)
    if kind in ("enum", "literal_error"):
        valid = _expected(ctx)
        hint = did_you_mean(str(value), valid)
        name = str(loc[-1]).replace("_", " ") if loc and isinstance(loc[-1], str) else "value"
        container = field_label(rest[:-1])
        where = f" in `{container}`" if container else ""
        return source_map.problem(
            f"{entity}: unknown {name} {value!r}{where}; valid: {', '.join(valid)}{hint}", path
        )
    if kind == "greater_than_equal" and ctx and ctx.get("ge") == 0:
        return source_map.problem(f"{entity}: `{label}` cannot be negative (got {value!r})", path)
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        return source_map.problem(f"{entity}: `{label}`: {message}", path)
    message = message.replace("Input should be", "should be", 1)
    if kind.endswith(("_type", "_parsing")) or kind in ("model_type", "model_attributes_type"):
        message = f"{message}, {_got(value)}"
    subject = f"`{label}`" if label else "value"
    return source_map.problem(f"{entity}: {subject} {message}", path)
