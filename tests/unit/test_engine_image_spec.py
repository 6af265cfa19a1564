"""How an image action becomes a StepSpec: templates, cmd/command/entrypoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from headwater.engine.step_attempt import image_command
from headwater.engine.steps import StepRunner
from headwater.errors import TemplateError
from headwater.store.base import JobRecord
from headwater.workspace.models import Action, Step, Workspace
from headwater.workspace.templating import TemplateEngine


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "command", "expected"),
    [
        (None, None, None, (None, None)),
        (None, "deploy --env production", None, (("/bin/sh", "-c"), ("deploy --env production",))),
        (
            ["/app/run"],
            "--verbose --env 'staging eu'",
            None,
            (("/app/run",), ("--verbose", "--env", "staging eu")),
        ),
        (None, None, ["migrate", "--target", "latest"], (None, ("migrate", "--target", "latest"))),
        ("/app/run -x", ["a", 1], None, (("/app/run", "-x"), ("a", "1"))),
    ],
)
def test_cmd_command_and_entrypoint(entrypoint: Any, cmd: Any, command: Any, expected: Any) -> None:
    assert image_command(entrypoint, cmd, command, "action 'a'") == expected


def test_an_unsplittable_cmd_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match="action 'a' cmd: cannot be split into words"):
        image_command(["/run"], "'unclosed", None, "action 'a'")


def test_image_cmd_and_manifest_are_rendered() -> None:
    steps = StepRunner(
        control=None,  # type: ignore[arg-type]
        logs=None,  # type: ignore[arg-type]
        templates=TemplateEngine(),
        runners={},
        secrets=lambda: {"sa": "robot"},
        submit_child=None,  # type: ignore[arg-type]
    )
    action = Action.model_validate(
        {
            "type": "pod",
            "image": "myorg/app:{{ input.tag }}",
            "command": ["--count", "{{ input.n }}"],
            "manifest": {"spec": {"serviceAccountName": "{{ secret.sa }}"}},
            "resources": {"cpu": 2},
        }
    )
    job = cast(JobRecord, SimpleNamespace(id="job-1"))  # _spec reads the id only
    context = {"input": {"tag": "1.2", "n": 3}, "secret": {"sa": "robot"}}
    spec = steps._spec(Workspace(root=Path("/ws")), job, "s", Step(), action, {}, context)
    assert spec.image == "myorg/app:1.2"
    assert spec.cmd == ("--count", "3") and spec.entrypoint is None
    assert spec.manifest == {"spec": {"serviceAccountName": "robot"}}
    assert spec.resources == {"cpu": "2"}
