"""YAML that names Python workflows: ``type: workflow`` steps and a receiver's
``target_workflow`` are checked by importing the workflow, with file:line."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.sdk.registry import set_default_registry
from headwater.workspace.loader import check_workspace
from headwater.workspace.models import ActionType

FLOWS = """
import headwater

registry = headwater.Registry(app="flows")


@headwater.workflow(registry=registry)
def process(payload, metadata):
    return payload


@headwater.workflow(registry=registry)
def only_payload(payload):
    return payload


def plain(payload, metadata):
    return payload
"""


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    mod = f"flows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text(FLOWS)
    previous = set_default_registry(None)
    try:
        yield tmp_path, mod
    finally:
        set_default_registry(previous)
        sys.modules.pop(mod, None)


def _write(folder: Path, text: str) -> Path:
    ws = folder / "ws.yaml"
    ws.write_text(textwrap.dedent(text))
    return ws


def test_a_receiver_target_workflow_becomes_a_task_running_it(
    folder: tuple[Path, str],
) -> None:
    root, mod = folder
    ws = _write(
        root,
        f"""
        triggers:
          orders:
            type: redis_stream
            url: redis://localhost:6379/0
            stream: orders
            target_workflow: "{mod}:process"
        """,
    )
    report = check_workspace(ws)
    assert report.errors == [], [p.format() for p in report.errors]
    assert report.workspace is not None
    trigger = report.workspace.triggers["orders"]
    assert trigger.target_task == "orders"  # type: ignore[union-attr]
    step = report.workspace.tasks["orders"].flow["workflow"]
    assert step.inline is not None and step.inline.type is ActionType.WORKFLOW
    assert step.inline.function == step.inline.workflow == f"{mod}:process"
    assert step.input == {"payload": "{{ input.payload }}", "metadata": "{{ input.metadata }}"}


def test_workflow_names_that_do_not_run_are_errors_with_their_line(
    folder: tuple[Path, str],
) -> None:
    root, mod = folder
    ws = _write(
        root,
        f"""
        tasks:
          a:
            flow:
              missing: {{type: workflow, workflow: "{mod}:nope"}}
              plain: {{type: workflow, workflow: "{mod}:plain"}}
              unimportable: {{type: workflow, workflow: "no_such_module_x:wf"}}
              unnamed: {{type: workflow}}
        triggers:
          narrow:
            type: redis_stream
            url: redis://localhost:6379/0
            stream: s
            target_workflow: "{mod}:only_payload"
          both:
            type: redis_stream
            url: redis://localhost:6379/0
            stream: s
            target_task: a
            target_workflow: "{mod}:process"
          clash:
            type: redis_stream
            url: redis://localhost:6379/0
            stream: s
            target_workflow: "{mod}:process"
          a:
            type: redis_stream
            url: redis://localhost:6379/0
            stream: s
            target_workflow: "{mod}:process"
        """,
    )
    errors = [p.format() for p in check_workspace(ws).errors]
    text = "\n".join(errors)
    assert f"{ws}:5:" in text and f"module '{mod}' has no 'nope'" in text
    assert f"{ws}:6:" in text and "is not a @headwater.workflow" in text
    assert f"{ws}:7:" in text and "'no_such_module_x:wf' does not import" in text
    assert "`workflow` needs a Python workflow" in text
    assert f"{ws}:14:" in text and "it does not take metadata" in text
    assert "give `target_task` or `target_workflow`, not both" in text
    assert "a task of that name exists" in text


def test_a_task_runs_at_most_one_workflow_step(folder: tuple[Path, str]) -> None:
    root, mod = folder
    ws = _write(
        root,
        f"""
        tasks:
          two:
            flow:
              first: {{type: workflow, workflow: "{mod}:process"}}
              second: {{type: workflow, workflow: "{mod}:process", depends_on: [first]}}
        """,
    )
    errors = [p.format() for p in check_workspace(ws).errors]
    assert len(errors) == 1 and f"{ws}:6:" in errors[0], errors
    assert "at most one `type: workflow` step (also 'first')" in errors[0]
