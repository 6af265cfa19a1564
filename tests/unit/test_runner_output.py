"""``OUTPUT: <json>`` lines, as the seed defines them."""

from __future__ import annotations

import pytest

from headwater.runners.base import parse_output_line


def test_object_is_an_output() -> None:
    parsed = parse_output_line('OUTPUT: {"orderId": "123", "amount": 99.99, "nested": {"a": [1]}}')
    assert parsed is not None
    assert parsed.problem is None
    assert parsed.value == {"orderId": "123", "amount": 99.99, "nested": {"a": [1]}}


def test_empty_object_is_an_output() -> None:
    parsed = parse_output_line("OUTPUT: {}")
    assert parsed is not None and parsed.value == {}


@pytest.mark.parametrize(
    "line",
    ["plain log line", "", "OUTPUT:{}", 'OUTPUT:{"a": 1}', 'output: {"a": 1}', ' OUTPUT: {"a": 1}'],
)
def test_other_lines_are_not_outputs(line: str) -> None:
    assert parse_output_line(line) is None


@pytest.mark.parametrize("text", ['{"a": ', "{'a': 1}", "not json", "", '{"a": 1} trailing'])
def test_malformed_json_is_a_problem(text: str) -> None:
    parsed = parse_output_line("OUTPUT: " + text)
    assert parsed is not None
    assert parsed.value is None
    assert parsed.problem is not None and "malformed JSON" in parsed.problem


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[1, 2]", "an array"),
        ('"s"', "a string"),
        ("42", "a number"),
        ("true", "a boolean"),
        ("null", "null"),
    ],
)
def test_json_that_is_not_an_object_is_a_problem(text: str, kind: str) -> None:
    parsed = parse_output_line("OUTPUT: " + text)
    assert parsed is not None
    assert parsed.value is None
    assert parsed.problem == f"'OUTPUT: ' must be followed by a JSON object, got {kind}"
