"""Properties of everything headwater parses from outside (issue 14's fuzz suite).

For any input, the OUTPUT-line parser, the strict JSON decoder, a webhook body and a
template give a value or a defined rejection, never an unhandled exception; and a value
they accept is one the stores can keep. CI runs a few hundred examples each;
``bench/fuzz.py`` sets ``HEADWATER_PROPERTY_EXAMPLES`` for a long run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater import jsonsafe
from headwater.errors import JsonValueError, TemplateError
from headwater.runners.base import OUTPUT_PREFIX, parse_output_line
from headwater.server.routes_webhooks import _parse_body, _Refused
from headwater.workspace.templating import TemplateEngine

EXAMPLES = int(os.environ.get("HEADWATER_PROPERTY_EXAMPLES", "150"))
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Any JSON Python can write, including what the stores cannot keep.
any_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["\x00", "\ud800", "a\udfffb", "\ud83d\ude00", "\\u0000"])
)
any_values = st.recursive(
    any_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.just("\x00"), children, max_size=4)
    ),
    max_leaves=16,
)
# JSON texts: Python's encoder (with NaN), hand-made fragments, and noise.
json_like = (
    any_values.map(lambda v: json.dumps(v))
    | any_values.map(lambda v: json.dumps(v, ensure_ascii=False))
    | st.lists(
        st.sampled_from(
            [
                "[",
                "]",
                "{",
                "}",
                ",",
                ":",
                '"a"',
                "1",
                "-",
                "1e999",
                "NaN",
                "Infinity",
                "-Infinity",
                "null",
                "true",
                '"\\u0000"',
                '"\\ud800"',
                '"\\ud83d\\ude00"',
                " ",
            ]
        ),
        max_size=40,
    ).map("".join)
    | st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n)
    | st.text()
)


def assert_storable(value: Any) -> None:
    """What the stores need: strict JSON text that encodes to UTF-8, without NUL."""
    text = jsonsafe.encode(value)  # refuses NUL in strings and NaN
    text.encode("utf-8")  # no lone surrogate
    assert jsonsafe.depth(text) <= jsonsafe.MAX_DEPTH


@PROPERTY
@given(json_like)
def test_loads_gives_a_storable_value_or_a_json_value_error(text: str) -> None:
    try:
        value = jsonsafe.loads(text)
    except JsonValueError as exc:
        assert str(exc)
        if exc.unstorable:  # valid JSON: its cleaned value can be recorded
            assert_storable(exc.cleaned)
        return
    assert_storable(value)


@PROPERTY
@given(st.binary() | json_like.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_loads_of_bytes_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(JsonValueError):
        assert_storable(jsonsafe.loads(data))


storable_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6).filter(lambda k: "\x00" not in k), children)
    ),
    max_leaves=16,
)


@PROPERTY
@given(storable_values)
def test_every_storable_value_round_trips(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert jsonsafe.loads(text) == value
    assert jsonsafe.loads(jsonsafe.encode(value)) == value


@PROPERTY
@given(any_values)
def test_encode_refuses_exactly_what_no_store_can_keep(value: Any) -> None:
    try:
        text = jsonsafe.encode(value)
    except JsonValueError as exc:
        assert exc.unstorable
        assert_storable(jsonsafe.clean(value))
        return
    assert json.loads(text) == value or _has_nan(value)  # NaN != NaN, but it is refused
    assert_storable(value)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


@PROPERTY
@given(json_like | st.text())
def test_output_line_parser_gives_an_object_or_a_reason(rest: str) -> None:
    parsed = parse_output_line(OUTPUT_PREFIX + rest)
    assert parsed is not None
    if parsed.value is not None:
        assert isinstance(parsed.value, dict)
        assert_storable(parsed.value)
        assert parsed.problem is None
        return
    assert parsed.problem
    if parsed.unstorable:
        assert parsed.cleaned is not None
        assert_storable(parsed.cleaned)


@PROPERTY
@given(st.text())
def test_lines_without_the_prefix_are_not_output_lines(line: str) -> None:
    if not line.startswith(OUTPUT_PREFIX):
        assert parse_output_line(line) is None


@PROPERTY
@given(st.binary() | json_like.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_a_webhook_body_is_an_object_or_a_422(body: bytes) -> None:
    try:
        data = _parse_body(body)
    except _Refused as refused:
        assert refused.status == 422
        return
    assert isinstance(data, dict)
    assert_storable(data)


ENGINE = TemplateEngine()
template_text = st.lists(
    st.sampled_from(
        [
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            " input.",
            "x",
            "secret",
            " | ",
            "upper",
            "default(",
            ")",
            "'",
            '"',
            "[0]",
            "if ",
            "endif",
            "for ",
            " in ",
            "range(99999999)",
            "~",
            ".",
        ]
    )
    | st.text(max_size=5),
    max_size=20,
).map("".join)


@PROPERTY
@given(template_text, any_values)
def test_rendering_any_template_gives_a_value_or_a_template_error(
    template: str, value: Any
) -> None:
    try:
        ENGINE.render(template, {"input": {"x": value}, "secret": {"x": "s"}}, where="fuzz")
    except TemplateError as exc:
        assert str(exc)


def test_refused_values_say_why() -> None:
    cases = {
        '{"a": NaN}': "NaN is not a JSON number",
        "[" * 101 + "]" * 101: "deeper than 100 levels",
        '{"a": "\\u0000"}': "\\u0000 (NUL)",
        '["\\udc00"]': "lone surrogate \\udc00",
    }
    for text, reason in cases.items():
        with pytest.raises(JsonValueError, match=re.escape(reason)):
            jsonsafe.loads(text)
