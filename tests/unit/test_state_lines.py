"""Strøm's STATE: / GLOBAL_STATE: lines: merged objects, never an exception."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from headwater.engine.task_state import StateLines

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def test_lines_merge_with_a_later_key_winning_and_global_apart() -> None:
    lines = StateLines()
    assert lines.feed('STATE: {"cursor": "page-1", "total": 50}') is None
    assert lines.feed('STATE:{"cursor": "page-2"}') is None
    assert lines.feed('GLOBAL_STATE: {"token": "t"}') is None
    assert lines.task == {"cursor": "page-2", "total": 50}
    assert lines.global_ == {"token": "t"}


def test_malformed_lines_are_skipped_with_a_warning() -> None:
    lines = StateLines()
    assert "not JSON" in (lines.feed("STATE: {oops") or "")
    assert "JSON object" in (lines.feed("STATE: [1, 2]") or "")
    assert lines.task == {}


@given(st.text(max_size=200))
def test_any_line_is_taken_or_warned_about_never_raised(text: str) -> None:
    lines = StateLines()
    for line in (text, "STATE:" + text, "GLOBAL_STATE: " + text):
        problem = lines.feed(line)
        assert problem is None or problem.startswith("warning: ")


@given(st.dictionaries(st.text(max_size=8), _json, max_size=5))
def test_a_json_object_line_is_kept_as_written(value: dict[str, object]) -> None:
    lines = StateLines()
    assert lines.feed("STATE: " + json.dumps(value)) is None
    assert lines.task == value
