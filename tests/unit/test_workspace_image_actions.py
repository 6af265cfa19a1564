"""`headwater validate` on docker and pod actions: command, resources, manifest."""

from __future__ import annotations

import textwrap
from pathlib import Path

from headwater.errors import Severity
from headwater.workspace import check_workspace
from headwater.workspace.loader import Report


def action(tmp_path: Path, body: str) -> Report:
    path = tmp_path / "ws.yaml"
    text = "actions:\n  a:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    path.write_text(text)
    return check_workspace(path, environ={})


def found(report: Report, severity: Severity = Severity.ERROR) -> list[tuple[int, str]]:
    return [(p.line or 0, p.message) for p in report.problems if p.severity is severity]


def test_a_full_docker_action_is_valid(tmp_path: Path) -> None:
    report = action(
        tmp_path,
        """
        type: docker
        image: "myorg/tool:{{ input.tag }}"
        entrypoint: ["/app/run"]
        cmd: "--verbose --env staging"
        env: {TOKEN: "{{ secret.token }}"}
        resources: {cpu: 2, memory: 512Mi}
        """,
    )
    assert found(report) == []


def test_cmd_and_command_are_exclusive(tmp_path: Path) -> None:
    assert found(action(tmp_path, "type: docker\nimage: x\ncmd: run\ncommand: [run]\n")) == [
        (
            6,
            "action 'a': `cmd` and `command` are exclusive: `cmd` is a shell command (or the"
            " entrypoint's arguments), `command` the list of arguments; keep one",
        )
    ]


def test_bad_resources_are_errors_at_the_key(tmp_path: Path) -> None:
    report = action(tmp_path, "type: pod\nimage: x\nresources: {memory: 512m, gpu: 1}\n")
    assert [line for line, _ in found(report)] == [5, 5]
    messages = [m for _, m in found(report)]
    assert messages[0].startswith("action 'a': memory '512m': 'm' means milli")
    assert messages[1].startswith("action 'a': unknown resource 'gpu'")


def test_resources_on_a_local_script_are_ignored_with_a_warning(tmp_path: Path) -> None:
    report = action(tmp_path, "type: script\nscript: echo\nresources: {cpu: 1}\n")
    assert found(report, Severity.WARNING) == [
        (5, "action 'a': `resources` is only used by the docker and pod runners; ignored")
    ]


def test_a_manifest_cannot_take_what_headwater_owns(tmp_path: Path) -> None:
    report = action(
        tmp_path,
        """
        type: pod
        image: x
        manifest:
          metadata: {name: fixed, labels: {app: x}}
          spec:
            restartPolicy: Always
            containers:
              - resources: {limits: {cpu: "1"}}
        """,
    )
    assert found(report) == [
        (7, "action 'a': `manifest`: headwater names each pod (one per attempt); remove it"),
        (
            9,
            "action 'a': `manifest`: a step runs once (`restartPolicy: Never`), not 'Always';"
            " use `retry:` on the step to run it again",
        ),
        (
            11,
            "action 'a': `manifest`: every container needs a `name`: `main` is the step's own"
            " container, any other name adds a sidecar",
        ),
    ]


def test_a_script_in_a_container_needs_an_image_and_no_dependencies(tmp_path: Path) -> None:
    report = action(
        tmp_path,
        "type: script\nrunner: docker\nlanguage: python\ndependencies: [pandas]\nscript: x\n",
    )
    assert found(report) == [
        (
            6,
            "action 'a': `dependencies` are installed by the local runner only; in a"
            " container, build them into the image",
        )
    ]
    assert found(report, Severity.WARNING) == [
        (
            4,
            "action 'a': a script run by `runner: docker` needs an `image` to run in (e.g."
            " `image: python:3.12-slim`); without one the step fails",
        )
    ]


def test_templates_in_image_fields_are_checked(tmp_path: Path) -> None:
    report = action(tmp_path, 'type: pod\nimage: "x:{{ input.tag"\n')
    [(line, message)] = found(report)
    assert line == 4 and message.startswith("action 'a': `image` is not a valid template")
