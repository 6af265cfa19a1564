"""TemplateEngine: typing of single expressions, string rendering, errors, inspection."""

from __future__ import annotations

from typing import Any

import pytest

from headwater.errors import TemplateError
from headwater.workspace.templating import TemplateEngine, build_context, is_truthy


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine()


@pytest.fixture
def ctx() -> dict[str, Any]:
    return build_context(
        input={"amount": 12.5, "orderId": "o-1", "items": [1, 2], "o": {"a": 1}, "n": None},
        secrets={"token": "s3cret"},
        job={"id": "j-1", "task": "t", "workspace": "w"},
        steps={"say-hello": {"output": {"greeting": "hi"}, "status": "completed"}},
    )


def test_a_single_expression_keeps_its_type(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    assert engine.render("{{ input.amount }}", ctx) == 12.5
    assert engine.render("  {{ input.o }}  ", ctx) == {"a": 1}
    assert engine.render("{{ input.items }}", ctx) == [1, 2]
    assert engine.render("{{ input.n }}", ctx) is None
    assert engine.render("{{ input.amount > 10 }}", ctx) is True
    assert engine.render("{{- input.amount -}}", ctx) == 12.5
    assert engine.render("{{ input }}", ctx)["orderId"] == "o-1"


def test_anything_else_renders_to_a_string(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    assert engine.render("total {{ input.amount }}", ctx) == "total 12.5"
    assert engine.render("{{ input.amount }}{{ input.orderId }}", ctx) == "12.5o-1"
    # JSON spelling in text: objects, lists, booleans and null.
    assert engine.render("x={{ input.o }}", ctx) == 'x={"a": 1}'
    assert engine.render("{{ input.items }}!", ctx) == "[1, 2]!"
    assert engine.render("{{ input.n }} {{ input.amount > 1 }}", ctx) == "null true"


def test_non_templates_pass_through_untouched(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    for text in ("plain", '{"json": 1}', "a } b {", ""):
        assert engine.render(text, ctx) is text
    assert engine.render(5, ctx) == 5
    assert engine.render(None, ctx) is None


def test_render_recurses_into_dicts_and_lists(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    value = {"id": "{{ input.orderId }}", "nested": [{"amount": "{{ input.amount }}"}, 3]}
    assert engine.render(value, ctx) == {"id": "o-1", "nested": [{"amount": 12.5}, 3]}


def test_render_str_always_returns_text(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    assert engine.render_str("{{ input.amount }}", ctx) == "12.5"
    assert engine.render_str("{{ input.o }}", ctx) == '{"a": 1}'
    assert engine.render_str("echo hi\n", ctx) == "echo hi\n"
    assert engine.render_str("a {{ input.orderId }}\n", ctx) == "a o-1\n"


def test_steps_are_reachable_by_name_and_with_underscores(
    engine: TemplateEngine, ctx: dict[str, Any]
) -> None:
    assert engine.render("{{ say_hello.output.greeting }}", ctx) == "hi"
    assert engine.render("{{ steps['say-hello'].status }}", ctx) == "completed"
    assert engine.render("{{ secret.token }} {{ secrets.token }}", ctx) == "s3cret s3cret"
    assert engine.render("{{ job.id }}", ctx) == "j-1"


def test_build_context_keeps_reserved_names() -> None:
    context = build_context(input={"x": 1}, steps={"input": {"output": {}, "status": "done"}})
    assert context["input"] == {"x": 1}
    assert context["steps"]["input"]["status"] == "done"


def test_dict_keys_win_over_dict_methods(engine: TemplateEngine) -> None:
    context = {"input": {"items": [1, 2, 3], "keys": "k"}}
    assert engine.render("{{ input.items | length }}", context) == 3
    assert engine.render("{{ input.keys }}", context) == "k"
    # Without such a key, the method is still there for the usual Jinja idiom.
    loop = "{% for k, v in input.items() %}{{ k }}={{ v }};{% endfor %}"
    assert engine.render(loop, {"input": {"a": 1, "b": 2}}) == "a=1;b=2;"


def test_tera_spellings_of_default_and_join(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    assert engine.render("{{ input.missing | default(value='x') }}", ctx) == "x"
    assert engine.render("{{ input.missing | default('y') }}", ctx) == "y"
    assert engine.render("{{ input.items | join(sep=', ') }}", ctx) == "1, 2"
    assert engine.render("{{ input.items | join('-') }}", ctx) == "1-2"
    assert engine.render("{{ input.o | tojson }}", ctx) == '{"a": 1}'


def test_a_missing_variable_names_the_template_and_the_variable(
    engine: TemplateEngine, ctx: dict[str, Any]
) -> None:
    with pytest.raises(TemplateError) as info:
        engine.render({"order_id": "{{ input.x }}"}, ctx, where="step 'validate' input")
    message = str(info.value)
    assert message.startswith("'input.x' is undefined in step 'validate' input 'order_id'")
    assert "input has: amount, items, n, o, orderId" in message


def test_missing_variable_messages_in_text_and_nested_paths(
    engine: TemplateEngine, ctx: dict[str, Any]
) -> None:
    with pytest.raises(TemplateError, match=r"'input\.o\.b' is undefined in step 's' script"):
        engine.render_str("echo {{ input.o.b }}", ctx, where="step 's' script")
    with pytest.raises(TemplateError, match=r"'classify' is undefined in template"):
        engine.render("{{ classify.output.category }}", ctx)
    with pytest.raises(TemplateError, match=r"'secret\.nope' is undefined .*secret has: token"):
        engine.render("{{ secret.nope }}", ctx, where="env")
    with pytest.raises(TemplateError, match=r"in x \[1\]"):
        engine.render(["ok", "{{ input.q }}"], ctx, where="x")


def test_syntax_and_runtime_errors_are_template_errors(
    engine: TemplateEngine, ctx: dict[str, Any]
) -> None:
    with pytest.raises(TemplateError, match="template syntax error in w"):
        engine.render("{{ input.", ctx, where="w")
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        engine.render("{{ 1 / 0 }}", ctx)
    with pytest.raises(TemplateError, match="unsafe"):
        engine.render("{{ input.__class__.__mro__ }}", ctx)


def test_the_sandbox_is_immutable(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError):
        engine.render("{{ input.items.append(3) }}", ctx)
    assert ctx["input"]["items"] == [1, 2]


def test_no_autoescape(engine: TemplateEngine) -> None:
    assert engine.render("<{{ x }}>", {"x": "&<'\""}) == "<&<'\">"


def test_syntax_error_reports_or_none(engine: TemplateEngine) -> None:
    assert engine.syntax_error("{{ ok }}") is None
    assert engine.syntax_error("no template") is None
    assert engine.syntax_error("{{ a b }}") is not None
    # bash's ${#arr[@]} opens a Jinja comment: it is worth knowing before the run.
    message = engine.syntax_error("echo ${#arr[@]}")
    assert message is not None and "comment" in message


def test_referenced_names_are_secret_paths(engine: TemplateEngine) -> None:
    text = "{{ secret.db.password }} {{ secrets['api-key'] }} {{ secret[input.k] }} {{ input.x }}"
    assert engine.referenced_names(text) == {"secret.db.password", "secrets.api-key", "secret"}
    assert engine.referenced_names("{{ steps.a.output }}", roots=("steps",)) == {"steps.a.output"}
    assert engine.referenced_names("{% if secret.flag %}x{% endif %}") == {"secret.flag"}
    assert engine.referenced_names("{{ broken") == set()
    assert engine.referenced_names("nothing") == set()


def test_free_names_skip_loop_variables(engine: TemplateEngine) -> None:
    text = "{% for o in input.orders %}{{ o.x }}{{ validate.output }}{{ range(2) }}{% endfor %}"
    assert engine.free_names(text) == {"input", "validate"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, False),
        (None, False),
        (0, False),
        (0.0, False),
        ("", False),
        ([], False),
        ({}, False),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("null", False),
        ("None", False),
        (" none ", False),
        (True, True),
        (1, True),
        ("yes", True),
        ("no", True),  # only Strøm's falsy strings are false
        ([0], True),
        ({"a": 1}, True),
    ],
)
def test_is_truthy(value: Any, expected: bool) -> None:
    assert is_truthy(value) is expected
    assert TemplateEngine.is_truthy(value) is expected


def test_compiled_templates_are_cached(engine: TemplateEngine, ctx: dict[str, Any]) -> None:
    engine.render("{{ input.amount }}", ctx)
    size = len(engine._cache)
    for _ in range(3):
        engine.render("{{ input.amount }}", ctx)
    assert len(engine._cache) == size
