"""Option values without pydantic, for the command line's start-up time.

typer (0.29) coerces every parameter value, defaults included, through a pydantic
``TypeAdapter``; importing pydantic for that costs 100-300 ms on each ``headwater`` call,
more than the rest of ``headwater jobs`` together. The commands' parameters are plain
(``str``, ``bool``, ``int`` with bounds, enums, lists of those): a value that is already
valid for such a type is taken here as it is. Everything else, invalid values included,
goes through typer's own coercion, so what is accepted and every error message stay
typer's. Should typer's internals change, ``install`` does nothing and the command line is
only slower (``tests/unit/test_cli_root.py`` then fails on the import set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, get_args, get_origin

__all__ = ["install", "quick_value"]

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class _Unhandled:
    """Not a value this module takes: typer's coercion decides."""


UNHANDLED = _Unhandled()


def _number(annotation: type, value: Any, info: Any) -> Any:
    if info.clamp:
        return UNHANDLED
    if type(value) is annotation:
        number = value
    elif isinstance(value, str) and (_INT if annotation is int else _FLOAT).fullmatch(value):
        number = annotation(value)
    else:
        return UNHANDLED
    if (info.min is not None and number < info.min) or (info.max is not None and number > info.max):
        return UNHANDLED
    return number


def _leaf(annotation: Any, value: Any, info: Any) -> Any:
    if annotation is str:
        return value if isinstance(value, str) else UNHANDLED
    if annotation is bool:
        return value if isinstance(value, bool) else UNHANDLED
    if annotation is int or annotation is float:
        return _number(annotation, value, info)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        if isinstance(value, annotation):
            return value
        if isinstance(value, str):
            for member in annotation:
                if str(member.value) == value:
                    return member
    return UNHANDLED


def quick_value(annotation: Any, value: Any, info: Any) -> Any:
    """``value`` as ``annotation``, or ``UNHANDLED`` when typer must decide."""
    if info.parser is not None:
        return UNHANDLED
    if get_origin(annotation) is list:
        (item_type,) = get_args(annotation) or (Any,)
        if not isinstance(value, list | tuple):
            return UNHANDLED
        items = [_leaf(item_type, item, info) for item in value]
        return UNHANDLED if any(i is UNHANDLED for i in items) else items
    return _leaf(annotation, value, info)


def install() -> None:
    """Let typer's parameters take plain valid values without building a TypeAdapter."""
    try:
        from typer import core
        from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    except ImportError:
        return
    parameter = getattr(core, "_TyperParameter", None)
    if parameter is None or getattr(parameter.get_runtime_param, "headwater", False):
        return

    @dataclass(frozen=True)
    class QuickParam(RuntimeParam):
        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.descriptor.file_annotation is None and not getattr(
                ctx, "token_normalize_func", None
            ):
                quick = quick_value(self.annotation, value, self.parameter_info)
                if quick is not UNHANDLED:
                    return quick
            return build_runtime_param(self.descriptor)._coerce_value(value, param, ctx)

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            d = self.type_descriptor
            self._runtime_param = QuickParam(
                parameter_info=d.parameter_info, annotation=d.annotation, descriptor=d
            )
        return self._runtime_param

    get_runtime_param.headwater = True  # type: ignore[attr-defined]
    parameter.get_runtime_param = get_runtime_param
