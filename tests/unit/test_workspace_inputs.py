"""apply_input_schema (and its compiled form): defaults, required, types, options, extra
keys."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.errors import InputValidationError
from headwater.workspace.inputs import apply_input_schema, compile_input_schema
from headwater.workspace.models import InputField


def schema(**fields: dict[str, Any]) -> dict[str, InputField]:
    return {name: InputField.model_validate(spec) for name, spec in fields.items()}


def reasons(fields: dict[str, InputField], data: dict[str, Any]) -> list[str]:
    with pytest.raises(InputValidationError) as info:
        apply_input_schema("t", fields, data)
    assert info.value.task == "t"
    return info.value.reasons


def test_defaults_fill_missing_and_null_values() -> None:
    fields = schema(env={"type": "string", "default": "staging"}, n={"type": "integer"})
    assert apply_input_schema("t", fields, {}) == {"env": "staging"}
    assert apply_input_schema("t", fields, {"env": None}) == {"env": "staging"}
    assert apply_input_schema("t", fields, {"env": "prod", "n": 3}) == {"env": "prod", "n": 3}


def test_mutable_defaults_are_copied() -> None:
    fields = schema(tags={"type": "array", "default": ["a"]})
    first = apply_input_schema("t", fields, {})
    first["tags"].append("b")
    assert apply_input_schema("t", fields, {}) == {"tags": ["a"]}


def test_extra_keys_are_kept_and_the_input_is_not_mutated() -> None:
    fields = schema(orderId={"type": "string", "required": True})
    data = {"orderId": "1", "extra": {"x": 1}}
    result = apply_input_schema("t", fields, data)
    assert result == data and result is not data


def test_no_schema_keeps_everything() -> None:
    assert apply_input_schema("t", {}, {"a": 1}) == {"a": 1}


def test_every_problem_is_listed() -> None:
    fields = schema(
        orderId={"type": "string", "required": True},
        amount={"type": "number", "required": True},
        count={"type": "integer"},
    )
    found = reasons(fields, {"amount": "12", "count": 1.5})
    assert found == [
        "missing required field `orderId`",
        "`amount` must be a number, got string '12'",
        "`count` must be an integer, got number 1.5",
    ]


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("string", "x", 1),
        ("text", "a\nb", ["x"]),
        ("integer", 3, True),
        ("integer", -1, 1.0),
        ("number", 1, False),
        ("number", 1.5, "1.5"),
        ("boolean", False, "false"),
        ("array", [1], {"a": 1}),
        ("object", {"a": 1}, [1]),
        ("date", "2026-01-15", "15/01/2026"),
        ("datetime", "2026-01-15T14:30", "yesterday"),
        ("date", "2026-01-15", 20260115),
    ],
)
def test_types(kind: str, good: Any, bad: Any) -> None:
    fields = schema(v={"type": kind})
    assert apply_input_schema("t", fields, {"v": good}) == {"v": good}
    [reason] = reasons(fields, {"v": bad})
    assert reason.startswith("`v` must be ")


@pytest.mark.parametrize("kind", ["any", "json"])
def test_any_accepts_everything(kind: str) -> None:
    fields = schema(v={"type": kind})
    for value in (1, "x", [1], {"a": None}, True):
        assert apply_input_schema("t", fields, {"v": value}) == {"v": value}


def test_options_restrict_unless_custom_is_allowed() -> None:
    strict = schema(env={"type": "string", "options": ["staging", "production"]})
    assert apply_input_schema("t", strict, {"env": "staging"}) == {"env": "staging"}
    assert reasons(strict, {"env": "dev"}) == [
        "`env` must be one of staging, production; got 'dev'"
    ]
    loose = schema(env={"type": "string", "options": ["staging"], "allow_custom": True})
    assert apply_input_schema("t", loose, {"env": "dev"}) == {"env": "dev"}


def test_multiple_values_are_lists_of_options() -> None:
    fields = schema(envs={"type": "string", "options": ["dev", "prod"], "multiple": True})
    assert apply_input_schema("t", fields, {"envs": ["dev", "prod"]}) == {"envs": ["dev", "prod"]}
    assert reasons(fields, {"envs": "dev"}) == ["`envs` must be a list, got string 'dev'"]
    assert reasons(fields, {"envs": ["dev", "qa"]}) == [
        "`envs[1]` must be one of dev, prod; got 'qa'"
    ]


def test_a_default_can_be_rendered() -> None:
    fields = schema(key={"type": "string", "default": "{{ secret.k }}"})
    result = apply_input_schema(
        "t", fields, {}, render_default=lambda v: v.replace("{{ secret.k }}", "K")
    )
    assert result == {"key": "K"}


def test_the_error_message_names_the_task() -> None:
    with pytest.raises(InputValidationError, match=r"input for task 'orders' is invalid: missing"):
        apply_input_schema("orders", schema(a={"required": True}), {})


_KINDS = ["string", "integer", "number", "boolean", "array", "object", "date", "any"]
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["a", "b", "2026-01-02", "2026-01-02T03:04:05", ""]),
    st.lists(st.sampled_from(["a", "b", 1]), max_size=3),
    st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 2), max_size=2),
)
_FIELD = st.fixed_dictionaries(
    {"type": st.sampled_from(_KINDS)},
    optional={
        "required": st.booleans(),
        "default": _VALUES,
        "options": st.lists(st.sampled_from(["a", "b", 1, 2, True]), min_size=1, max_size=3),
        "allow_custom": st.booleans(),
        "multiple": st.booleans(),
    },
)


@given(
    fields=st.dictionaries(st.sampled_from(["p", "q", "r"]), _FIELD, max_size=3),
    data=st.dictionaries(st.sampled_from(["p", "q", "r", "extra"]), _VALUES, max_size=4),
)
def test_the_compiled_checker_agrees_with_apply_input_schema(
    fields: dict[str, dict[str, Any]], data: dict[str, Any]
) -> None:
    parsed = schema(**fields)
    check = compile_input_schema(parsed)
    try:
        expected: Any = apply_input_schema("t", parsed, data)
    except InputValidationError as exc:
        expected = exc.reasons
    try:
        got: Any = check("t", data)
    except InputValidationError as exc:
        got = exc.reasons
    assert got == expected
    if isinstance(got, dict):
        assert got is not data
