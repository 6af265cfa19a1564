"""Loading: files, directories, Strøm folders, merging, YAML errors, locations."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from headwater.errors import Problem, Severity, WorkspaceError
from headwater.workspace import check_workspace, load_workspace
from headwater.workspace.loader import Report
from headwater.workspace.models import ActionType

HELLO = """
actions:
  greet:
    type: script
    script: echo hi
tasks:
  hello:
    flow:
      greet:
        action: greet
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def check(path: Path) -> Report:
    return check_workspace(path, environ={})


def errors(report: Report) -> list[Problem]:
    return [p for p in report.problems if p.severity is Severity.ERROR]


def test_a_single_file(tmp_path: Path) -> None:
    ws = load_workspace(write(tmp_path / "hello.yaml", HELLO))
    assert ws.name == "hello"
    assert ws.root == tmp_path.resolve()
    assert list(ws.actions) == ["greet"] and list(ws.tasks) == ["hello"]
    assert ws.action_for(ws.tasks["hello"].flow["greet"]).script == "echo hi"


def test_a_directory_merges_its_yaml_files(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    write(folder / "actions.yaml", "actions:\n  greet:\n    type: script\n    script: echo\n")
    write(folder / "tasks.yml", "tasks:\n  hello:\n    flow:\n      s:\n        action: greet\n")
    write(folder / ".hidden.yaml", "not: [valid")
    write(folder / "notes.txt", "ignored")
    ws = load_workspace(folder)
    assert ws.name == "shop"
    assert ws.root == folder.resolve()
    assert set(ws.actions) == {"greet"} and set(ws.tasks) == {"hello"}


def test_a_name_defined_in_two_files_names_both_places(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", HELLO)
    write(tmp_path / "b.yaml", "tasks: {}\nactions:\n  greet:\n    type: script\n    script: 2\n")
    report = check(tmp_path)
    [problem] = errors(report)
    assert problem.file == str(tmp_path / "b.yaml")
    assert (problem.line, problem.column) == (3, 3)
    assert problem.message == (
        f"action 'greet' is defined twice: at {tmp_path / 'a.yaml'}:2:3"
        f" and at {tmp_path / 'b.yaml'}:3:3"
    )
    assert report.workspace is None


def test_hooks_from_several_files_keep_their_locations(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", HELLO + "on_error:\n  - action: greet\n")
    write(tmp_path / "b.yaml", "on_error:\n  - action: nope\n")
    report = check(tmp_path)
    [problem] = errors(report)
    assert problem.file == str(tmp_path / "b.yaml") and problem.line == 2
    assert problem.message == "workspace hook on_error[1]: action 'nope' is not defined"


def test_a_strom_folder_loads_workflows_and_keeps_sources_relative_to_it(tmp_path: Path) -> None:
    write(tmp_path / "actions" / "deploy.sh", "echo deploying\n")
    write(
        tmp_path / ".workflows" / "deploy.yaml",
        """
        actions:
          deploy:
            type: script
            source: actions/deploy.sh
        tasks:
          deploy:
            flow:
              run:
                action: deploy
        """,
    )
    write(tmp_path / "other.yaml", "this: is not part of the workspace")
    report = check(tmp_path)
    assert report.valid, [p.format() for p in report.problems]
    assert report.workspace is not None and report.workspace.root == tmp_path.resolve()


def test_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    report = check(tmp_path / "nope.yaml")
    assert [p.message for p in report.problems] == [
        f"no such file or directory: {tmp_path / 'nope.yaml'}"
    ]
    with pytest.raises(WorkspaceError, match="no such file or directory"):
        load_workspace(tmp_path / "nope.yaml")


def test_a_directory_without_yaml_files(tmp_path: Path) -> None:
    report = check(tmp_path)
    assert report.problems[0].message == f"no *.yaml or *.yml files in {tmp_path}"


def test_yaml_syntax_errors_point_at_the_spot_and_do_not_cascade(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "tasks:\n  t:\n    flow:\n      s: {action: greet\n")
    write(tmp_path / "b.yaml", "triggers:\n  x:\n    type: webhook\n    task: t\n")
    report = check(tmp_path)
    [problem] = errors(report)
    assert problem.file == str(tmp_path / "a.yaml")
    assert problem.line == 5 and problem.message.startswith("invalid YAML:")


def test_a_key_repeated_in_one_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", HELLO + "  hello:\n    flow: {}\n")
    [problem] = errors(check(path))
    assert (problem.line, problem.column) == (10, 3)
    assert problem.message == f"duplicate key `hello` (first written at {path}:6:3)"


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.yaml",
        """
        actions:
          base: &base
            type: script
            script: echo base
            env: {A: "1"}
          derived:
            <<: *base
            script: echo derived
        """,
    )
    ws = load_workspace(path)
    assert ws.actions["derived"].script == "echo derived"
    assert ws.actions["derived"].env == {"A": "1"}


def test_dates_stay_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.yaml",
        HELLO + "    input:\n      day: {type: date, default: 2026-01-15}\n",
    )
    assert load_workspace(path).tasks["hello"].input["day"].default == "2026-01-15"


def test_an_empty_file_is_an_empty_workspace(tmp_path: Path) -> None:
    ws = load_workspace(write(tmp_path / "empty.yaml", "# nothing yet\n"))
    assert (ws.actions, ws.tasks, ws.triggers) == ({}, {}, {})


def test_the_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    [problem] = errors(check(write(tmp_path / "w.yaml", "- a\n- b\n")))
    assert problem.message == "a workspace file must be a mapping"


def test_unknown_top_level_keys(tmp_path: Path) -> None:
    report = check(write(tmp_path / "w.yaml", HELLO + "trigers: {}\nconnections: {}\n"))
    [error] = errors(report)
    assert error.line == 10
    assert error.message.startswith("unknown top-level key `trigers` (did you mean `triggers`?)")
    [warning] = [p for p in report.problems if p.severity is Severity.WARNING]
    assert warning.line == 11 and "`connections` (a Strøm feature) is not supported" in (
        warning.message
    )


def test_an_entry_must_be_a_mapping(tmp_path: Path) -> None:
    [problem] = errors(check(write(tmp_path / "w.yaml", "actions:\n  a: echo hi\n")))
    assert problem.message == "an action must be a mapping of keys ('a')"
    assert problem.line == 2


def test_inline_actions_move_into_step_inline(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.yaml",
        """
        tasks:
          t:
            flow:
              greet:
                type: script
                script: "echo Hello {{ input.name }}"
                timeout: 5s
                input:
                  name: "{{ input.name }}"
        """,
    )
    step = load_workspace(path).tasks["t"].flow["greet"]
    assert step.action is None and step.inline is not None
    assert step.inline.type is ActionType.SCRIPT and step.inline.script is not None
    assert step.input == {"name": "{{ input.name }}"} and step.timeout == 5.0


def test_a_step_cannot_have_both_action_and_inline_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", HELLO + "        script: echo\n")
    [problem] = errors(check(path))
    assert problem.line == 10
    assert problem.message == (
        "step 'greet' of task 'hello' names `action` and also has inline action fields"
        " (`script`): keep one of the two"
    )


def test_load_workspace_raises_with_every_error(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", "actions:\n  a: {type: nope}\n  b: {type: script}\n")
    with pytest.raises(WorkspaceError) as info:
        load_workspace(path)
    assert len(info.value.problems) == 2
    assert str(info.value).endswith("(and 1 more)")


def test_warnings_leave_the_workspace_valid(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", HELLO.replace("echo hi", "echo {{ secret.nope }}"))
    report = check(path)
    assert report.valid and report.workspace is not None
    assert [p.severity for p in report.problems] == [Severity.WARNING]
    assert load_workspace(path).name == "w"


def test_problems_are_sorted_by_place(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", "actions:\n  b: {type: nope}\n  a: {type: script}\n")
    lines = [p.line for p in check(path).problems]
    assert lines == sorted(lines)


def test_problem_dicts_for_json(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", "actions:\n  a: {type: script, scirpt: x}\n")
    [problem] = errors(check(path))
    assert problem.to_dict() == {
        "file": str(path),
        "line": 2,
        "column": 21,
        "severity": "error",
        "message": "action 'a': unknown key `scirpt` (did you mean `script`?)",
        "path": "actions.a.scirpt",
    }
