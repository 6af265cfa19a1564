"""Check a job's input against its task's input schema, fast.

This runs for every event (tens of thousands a second), so it is a plain loop over the
schema with ``isinstance`` checks: no pydantic model is built per call.

Rules: a missing or ``null`` field takes its ``default``; a ``required`` field without
one is an error; present values must have the field's type (``integer`` is an int and
not a bool, ``number`` an int or float and not a bool, ``date``/``datetime`` an ISO
string); ``options`` restrict the value unless ``allow_custom``; ``multiple`` fields are
lists of such values. Keys the schema does not declare are kept: events carry more
fields than a task declares.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from headwater.errors import InputValidationError
from headwater.workspace.models import FieldType, InputField

__all__ = ["InputChecker", "apply_input_schema", "compile_input_schema", "type_name"]

# (task name, data) → data with defaults filled in; raises InputValidationError.
InputChecker = Callable[[str, Mapping[str, Any]], dict[str, Any]]


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_list(v: Any) -> bool:
    return isinstance(v, list)


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def _is_any(v: Any) -> bool:
    return True


def _is_date(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        date.fromisoformat(v)
    except ValueError:
        return False
    return True


def _is_datetime(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


_CHECKS: dict[FieldType, tuple[Callable[[Any], bool], str]] = {
    FieldType.STRING: (_is_str, "a string"),
    FieldType.TEXT: (_is_str, "a string"),
    FieldType.DATE: (_is_date, "a date (YYYY-MM-DD)"),
    FieldType.DATETIME: (_is_datetime, "a datetime (ISO 8601)"),
    FieldType.INTEGER: (_is_int, "an integer"),
    FieldType.NUMBER: (_is_number, "a number"),
    FieldType.BOOLEAN: (_is_bool, "a boolean"),
    FieldType.ARRAY: (_is_list, "an array"),
    FieldType.OBJECT: (_is_dict, "an object"),
    FieldType.JSON: (_is_any, "any JSON value"),
    FieldType.ANY: (_is_any, "any value"),
}


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def apply_input_schema(
    task_name: str,
    schema: Mapping[str, InputField],
    data: Mapping[str, Any],
    *,
    render_default: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """``data`` with defaults filled in, checked against ``schema``.

    ``render_default`` (optional) turns a default into its value, e.g. to render a
    ``"{{ secret.api_key }}"`` default. Raises InputValidationError listing every problem.
    """
    result = dict(data)
    if not schema:
        return result
    reasons: list[str] | None = None
    for name, field in schema.items():
        value = result.get(name)
        if value is None:
            default = field.default
            if default is None:
                if field.required:
                    reasons = reasons or []
                    reasons.append(f"missing required field `{name}`")
                continue
            if isinstance(default, dict | list):
                default = copy.deepcopy(default)
            if render_default is not None:
                default = render_default(default)
            result[name] = default
            continue
        reason = _check(name, field, value)
        if reason is not None:
            reasons = reasons or []
            reasons.append(reason)
    if reasons:
        raise InputValidationError(task_name, reasons)
    return result


def compile_input_schema(schema: Mapping[str, InputField]) -> InputChecker:
    """``apply_input_schema`` for one schema, with the per-field lookups done once.

    The dispatcher validates every event against the same few schemas: the checker keeps
    each field's rule as plain values (no model attributes, no enum lookups per call) and
    only takes the slow path, with its messages, for a value that fails."""
    if not schema:
        return lambda task_name, data: dict(data)
    rules = [
        (
            name,
            field,
            field.default,
            field.required,
            _CHECKS[field.type][0],
            None if field.allow_custom else field.options,
            field.multiple,
        )
        for name, field in schema.items()
    ]

    def check(task_name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        result = dict(data)
        reasons: list[str] | None = None
        for name, field, default, required, is_valid, options, multiple in rules:
            value = result.get(name)
            if value is None:
                if default is None:
                    if required:
                        reasons = reasons or []
                        reasons.append(f"missing required field `{name}`")
                    continue
                result[name] = (
                    copy.deepcopy(default) if isinstance(default, dict | list) else default
                )
                continue
            if multiple or not is_valid(value) or (options is not None and value not in options):
                reason = _check(name, field, value)
                if reason is not None:
                    reasons = reasons or []
                    reasons.append(reason)
        if reasons:
            raise InputValidationError(task_name, reasons)
        return result

    return check


def _check(name: str, field: InputField, value: Any) -> str | None:
    check, expected = _CHECKS[field.type]
    if field.multiple:
        if not isinstance(value, list):
            return f"`{name}` must be a list, got {type_name(value)} {_show(value)}"
        for i, item in enumerate(value):
            reason = _check_one(f"{name}[{i}]", field, item, check, expected)
            if reason is not None:
                return reason
        return None
    return _check_one(name, field, value, check, expected)


def _check_one(
    name: str,
    field: InputField,
    value: Any,
    check: Callable[[Any], bool],
    expected: str,
) -> str | None:
    if not check(value):
        return f"`{name}` must be {expected}, got {type_name(value)} {_show(value)}"
    options = field.options
    if options is not None and not field.allow_custom and value not in options:
        allowed = ", ".join(str(o) for o in options)
        return f"`{name}` must be one of {allowed}; got {_show(value)}"
    return None
