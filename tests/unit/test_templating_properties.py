"""Property tests of the typing rule: one expression keeps its JSON type, text is a str."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from headwater.workspace.templating import TemplateEngine

ENGINE = TemplateEngine()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_a_single_expression_returns_the_value_itself(value: Any) -> None:
    rendered = ENGINE.render("{{ input.v }}", {"input": {"v": value}})
    assert rendered == value
    assert type(rendered) is type(value)


@given(json_values, st.sampled_from(["", " ", "  ", "\n"]), st.sampled_from(["", " ", "\t"]))
def test_whitespace_around_the_expression_does_not_matter(
    value: Any, left: str, right: str
) -> None:
    template = f"{left}{{{{ input.v }}}}{right}"
    assert ENGINE.render(template, {"input": {"v": value}}) == value


@given(
    st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans(),
    # Jinja writes line breaks in template text as "\n" ("\r\n" and "\r" included).
    st.text(min_size=1, max_size=10).filter(
        lambda s: s.strip() != "" and not any(c in s for c in "{}\r")
    ),
)
def test_mixed_text_becomes_a_string(value: Any, prefix: str) -> None:
    rendered = ENGINE.render(prefix + "{{ input.v }}", {"input": {"v": value}})
    assert isinstance(rendered, str)
    expected = json.dumps(value) if isinstance(value, bool) else str(value)
    assert rendered == prefix + expected


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_structures_render_leaf_by_leaf(values: dict[str, Any]) -> None:
    template = {key: "{{ input[k] }}".replace("k", repr(key)) for key in values}
    assert ENGINE.render(template, {"input": values}) == values


@given(st.text(max_size=30).filter(lambda s: not any(m in s for m in ("{{", "{%", "{#"))))
def test_text_without_template_markers_is_returned_unchanged(text: str) -> None:
    assert ENGINE.render(text, {}) == text
    assert ENGINE.render_str(text, {}) == text
