"""Random templates and random workspaces: rendering raises only TemplateError, and
``validate`` answers with ``file:line:col: severity:`` lines or success, never a crash."""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.errors import TemplateError
from headwater.workspace import check_workspace
from headwater.workspace.templating import TemplateEngine

ENGINE = TemplateEngine(environ={}, env_allow=())
FILTERS = sorted(ENGINE.env.filters)
TESTS = sorted(ENGINE.env.tests)
FUNCTIONS = ["range", "now", "throw", "get_random", "get_env"]
ARG_NAMES = ["pat", "n", "sep", "key", "default", "attribute", "value", "with", "format",
             "timezone", "from", "to", "start", "end", "prefix", "first", "blank", "pretty",
             "case_sensitive", "length", "method", "precision", "base", "step_by", "name",
             "message", "timestamp", "utc", "singular", "plural", "binary"]  # fmt: skip
CONTEXT: dict[str, Any] = {
    "input": {
        "s": "Hello, World",
        "n": 7,
        "f": -2.5,
        "b": True,
        "z": None,
        "arr": [1, "two", {"k": 3}, None],
        "obj": {"a": 1, "b": [1, 2], "c": {"d": "e"}},
        "env": "production",
    },
    "secret": {"token": "t0k"},
    "job": {"id": "j1"},
    "steps": {"a": {"output": {"x": 1}, "status": "completed"}},
}

literals = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.text(max_size=8).map(lambda s: repr(s)),
    st.sampled_from(["true", "false", "none", "[]", "{}", "[1, 'a']", "{'k': 1}"]),
)
variables = st.sampled_from(
    [
        "input",
        "input.s",
        "input.n",
        "input.f",
        "input.b",
        "input.z",
        "input.arr",
        "input.obj",
        "input.obj.c.d",
        "input.missing",
        "input.missing.deeper",
        "secret.token",
        "job.id",
        "steps.a.output.x",
        "nope",
        "input['s']",
        "input.arr[2]",
    ]
)
atoms = st.one_of(literals, variables)


@st.composite
def calls(draw: st.DrawFn, names: list[str]) -> str:
    name = draw(st.sampled_from(names))
    if draw(st.booleans()):
        return name
    args = draw(
        st.lists(
            st.one_of(atoms, st.tuples(st.sampled_from(ARG_NAMES), atoms).map("=".join)),
            max_size=3,
        )
    )
    return f"{name}({', '.join(args)})"


@st.composite
def expressions(draw: st.DrawFn) -> str:
    head = draw(st.one_of(atoms, calls(FUNCTIONS)))
    for _ in range(draw(st.integers(0, 3))):
        head += " | " + draw(calls(FILTERS))
    if draw(st.booleans()):
        negate = draw(st.sampled_from(["", "not "]))
        head += f" is {negate}" + draw(calls(TESTS))
    return head


pieces = st.one_of(
    expressions().map(lambda e: "{{ " + e + " }}"),
    st.tuples(variables, expressions()).map(
        lambda t: "{% for k, v in " + t[0] + " %}{{ " + t[1] + " }}{% endfor %}"
    ),
    expressions().map(lambda e: "{% if " + e + " %}yes{% else %}no{% endif %}"),
    st.sampled_from(["{{", "}}", "{%", "%}", "{#", "|", "(", ")", "is", "=", " ", "\n", "x"]),
    st.text(max_size=6),
)
templates = st.lists(pieces, min_size=1, max_size=4).map("".join)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(templates)
def test_rendering_raises_nothing_but_template_error(template: str) -> None:
    for render in (ENGINE.render, ENGINE.render_str):
        with contextlib.suppress(TemplateError):
            render(template, CONTEXT, where="step 's' input")
    # The static helpers validate uses never raise either.
    ENGINE.syntax_error(template)
    ENGINE.free_names(template)
    ENGINE.referenced_names(template)
    ENGINE.unquoted_values(template)


LINE = re.compile(r"^.+:\d+:\d+: (error|warning|note): .+", re.DOTALL)

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=10), templates
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "type", "script"]), children, max_size=3)
    ),
    max_leaves=6,
)
step_names = st.sampled_from(["a", "b", "say-hello", "input"])


@st.composite
def workspaces(draw: st.DrawFn) -> dict[str, Any]:
    flow: dict[str, Any] = {}
    for name in draw(st.lists(step_names, min_size=1, max_size=3, unique=True)):
        step: dict[str, Any] = {"action": draw(st.sampled_from(["run", "nope"]))}
        if draw(st.booleans()):
            step["when"] = draw(templates)
        if draw(st.booleans()):
            step["input"] = draw(st.dictionaries(st.sampled_from(["x", "y"]), json_values))
        if draw(st.booleans()):
            step["depends_on"] = draw(st.lists(step_names, max_size=2))
        flow[name] = step
    action: dict[str, Any] = {"type": "script", "script": draw(templates)}
    if draw(st.booleans()):
        action["env"] = {"X": draw(templates)}
    if draw(st.booleans()):
        action["language"] = draw(st.sampled_from(["shell", "python", "bash"]))
    ws: dict[str, Any] = {"actions": {"run": action}, "tasks": {"t": {"flow": flow}}}
    if draw(st.booleans()):
        ws["triggers"] = {
            "cron": {"type": "scheduler", "cron": "0 * * * *", "task": "t", "input": {
                "v": draw(templates)}}
        }  # fmt: skip
    if draw(st.booleans()):
        ws["tasks"]["t"]["input"] = {"v": {"type": "string", "default": draw(templates)}}
    if draw(st.booleans()):
        ws[draw(st.sampled_from(["actions", "tasks", "secrets", "triggers", "junk"]))] = draw(
            json_values
        )
    return ws


def _check_lines(path: Path) -> None:
    report = check_workspace(path, environ={})
    for problem in report.problems:
        assert LINE.match(problem.format()), problem.format()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workspaces())
def test_validate_answers_every_random_workspace_with_located_lines(ws: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ws.yaml"
        path.write_text(yaml.safe_dump(ws, allow_unicode=True), encoding="utf-8")
        _check_lines(path)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(templates, st.sampled_from(["actions:", "  a:", "    script: ", "- ",
       "tasks:", ": ", "\n", "  "])), max_size=8).map("".join))  # fmt: skip
def test_validate_answers_random_yaml_text_with_located_lines(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ws.yaml"
        path.write_text(text, encoding="utf-8")
        _check_lines(path)


def test_a_control_character_is_a_located_yaml_error(tmp_path: Path) -> None:
    # It escaped as yaml.reader.ReaderError, a traceback out of `headwater validate`.
    path = tmp_path / "ws.yaml"
    path.write_text('actions:\n  a: "x\x1fy"\n', encoding="utf-8")
    (problem,) = check_workspace(path).problems
    assert problem.format() == (
        f"{path}:2:8: error: invalid YAML: the character U+001F is not allowed in YAML"
    )
