"""Several workspaces from one config: what `validate` says, and what the runtime sees."""

from __future__ import annotations

import textwrap
from pathlib import Path

import hypothesis.strategies as st
import yaml
from hypothesis import HealthCheck, given, settings

from headwater.dispatch.dispatcher import tag_sets, task_tags
from headwater.errors import Severity
from headwater.workspace.loader import check_workspace
from headwater.workspace.multi import owner_secrets, resolve_task_name, task_workspace

CALLER = """
actions:
  local: { type: script, script: "true" }
tasks:
  daily:
    flow:
      run: { action: local }
      recalc:
        action: jobs.recalc
        depends_on: [run]
"""

JOBS = """
secrets:
  key: "jobs-key"
actions:
  recalc: { type: script, source: run.sh }
  start: { type: task, task: recalc }
tasks:
  recalc:
    flow:
      once: { action: recalc }
  outer:
    flow:
      call: { action: start }
"""


def layout(tmp_path: Path, caller: str = CALLER, jobs: str = JOBS, extra: str = "") -> Path:
    for name, text in (("main", caller), ("jobs", jobs)):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "ws.yaml").write_text(textwrap.dedent(text))
    (tmp_path / "jobs" / "run.sh").write_text("echo hi\n")
    config = tmp_path / "server-config.yaml"
    config.write_text(
        "workspaces:\n"
        "  main: { type: folder, path: ./main }\n"
        "  jobs: { type: folder, path: ./jobs }\n" + extra
    )
    return config


def errors(report: object) -> list[str]:
    return [p.format() for p in report.problems if p.severity is Severity.ERROR]  # type: ignore[attr-defined]


def test_the_combined_workspace_keeps_the_first_ones_names(tmp_path: Path) -> None:
    report = check_workspace(layout(tmp_path), environ={})
    ws = report.workspace
    assert ws is not None, errors(report)
    assert set(ws.tasks) == {"daily", "jobs/recalc", "jobs/outer"}
    # Steps of a later workspace name its actions and tasks by their qualified names.
    assert ws.tasks["jobs/recalc"].flow["once"].action == "jobs.recalc"
    assert ws.actions["jobs.start"].task == "jobs/recalc"
    recalc = ws.actions["jobs.recalc"]
    assert (recalc.owner, recalc.owner_root) == ("jobs", (tmp_path / "jobs").resolve())
    assert ws.actions["local"].owner == "main"
    assert ws.later_workspaces == {"jobs"}
    assert ws.secrets == {"jobs/key": "jobs-key"}
    assert owner_secrets(ws.secrets, "jobs") == {"key": "jobs-key"}
    assert owner_secrets(ws.secrets, None) == {}
    assert task_workspace(ws, "jobs/recalc") == "jobs"
    assert task_workspace(ws, "daily") == "main"
    assert resolve_task_name(ws, "main/daily") == "daily"
    assert resolve_task_name(ws, "jobs/recalc") == "jobs/recalc"


def test_a_missing_workspace_or_action_is_named_with_its_line(tmp_path: Path) -> None:
    caller = CALLER.replace("jobs.recalc", "job.recalc")
    report = check_workspace(layout(tmp_path, caller=caller), environ={})
    (error,) = errors(report)
    assert error.startswith(f"{tmp_path / 'main' / 'ws.yaml'}:9:")
    assert "workspace 'job' is not loaded (other workspaces: jobs) (did you mean `jobs`?)" in error

    caller = CALLER.replace("jobs.recalc", "jobs.recalk")
    report = check_workspace(layout(tmp_path, caller=caller), environ={})
    (error,) = errors(report)
    assert "workspace 'jobs' has no action 'recalk' (did you mean `recalc`?)" in error


def test_one_folder_alone_says_the_other_workspace_is_not_loaded(tmp_path: Path) -> None:
    layout(tmp_path)
    (error,) = errors(check_workspace(tmp_path / "main", environ={}))
    assert ":9:" in error and "workspace 'jobs' is not loaded" in error


def test_a_local_dotted_action_wins_over_a_workspace_reference(tmp_path: Path) -> None:
    caller = CALLER.replace(
        "  local: {", '  jobs.recalc: { type: script, script: "true" }\n  local: {'
    )
    report = check_workspace(layout(tmp_path, caller=caller), environ={})
    assert report.workspace is not None, errors(report)
    ws = report.workspace
    step = ws.tasks["daily"].flow["recalc"]
    assert step.action == "main.jobs.recalc"
    assert ws.action_for(step).owner == "main"
    assert ws.actions["jobs.recalc"].owner == "jobs"  # what other workspaces reach


def test_config_problems_are_reported(tmp_path: Path) -> None:
    config = layout(
        tmp_path,
        extra="  data: { type: git, url: https://example.org/x.git }\n"
        "  bad.name: { type: folder, path: ./main }\n"
        "  nopath: { type: folder }\n"
        "  itself: { type: folder, path: ./server-config.yaml }\n",
    )
    config.write_text("listen: 0.0.0.0:8080\n" + config.read_text())
    report = check_workspace(config, environ={})
    assert report.workspace is None
    text = "\n".join(p.format() for p in report.problems)
    assert "server-config.yaml:1:1: warning: `listen` is a Strøm server setting" in text
    assert "`type: git` is not supported in headwater" in text
    assert "workspace name 'bad.name' must be non-empty without `.` or `/`" in text
    assert "workspace 'nopath' needs `path: FOLDER`" in text
    assert "workspace 'itself': `path` is a config listing workspaces" in text


def test_webhooks_and_trigger_secrets_that_cannot_be_served_are_refused(tmp_path: Path) -> None:
    hook = "triggers:\n  push: { type: webhook, task: %s }\n"
    caller = CALLER + hook % "daily"
    jobs = JOBS + hook % "recalc"
    report = check_workspace(layout(tmp_path, caller=caller, jobs=jobs), environ={})
    assert any(
        "webhook 'push' is defined by workspaces 'main' and 'jobs'" in e for e in errors(report)
    )

    jobs = (
        JOBS + "triggers:\n  push2: { type: webhook, task: recalc, secret: '{{ secret.key }}' }\n"
    )
    report = check_workspace(layout(tmp_path, jobs=jobs), environ={})
    assert any("trigger 'push2' of workspace 'jobs' uses secrets" in e for e in errors(report))


TAGGED = """
actions:
  fit: { type: script, script: "true", tags: [gpu] }
  plain: { type: script, script: "true" }
tasks:
  train:
    flow:
      a: { action: plain }
      b: { action: plain, tags: [arm], depends_on: [a] }
      c: { action: fit, depends_on: [b] }
"""


def test_validate_warns_about_steps_the_up_worker_lacks_tags_for(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(TAGGED))
    warnings = [
        p.format() for p in check_workspace(path, environ={}).problems if "worker tags" in p.message
    ]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{path}:3:")  # the action's tags
    assert "step 'c' of task 'train' needs the worker tags gpu" in warnings[0]
    assert "`--tags gpu`" in warnings[0]
    assert warnings[1].startswith(f"{path}:9:")  # the step's own tags
    given = check_workspace(path, environ={}, worker_tags=frozenset({"gpu", "arm"}))
    assert not [p for p in given.problems if "worker tags" in p.message]


def test_a_job_carries_its_first_steps_tags_and_a_step_its_own(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(TAGGED))
    ws = check_workspace(path, environ={}).workspace
    assert ws is not None
    assert task_tags(ws, ws.tasks["train"]) == {"script"}
    assert tag_sets(ws) == {
        frozenset({"script"}),
        frozenset({"script", "arm"}),
        frozenset({"script", "gpu"}),
    }


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.dictionaries(st.text(max_size=8), _values, max_size=4))
def test_any_workspaces_section_gives_located_problems_never_an_exception(
    tmp_path: Path, entries: dict[str, object]
) -> None:
    config = tmp_path / "server-config.yaml"
    config.write_text(yaml.safe_dump({"workspaces": entries}, allow_unicode=True))
    report = check_workspace(config, environ={})
    assert report.workspace is not None or report.errors
    assert all(p.file for p in report.problems)


def test_every_kind_of_hook_is_kept_when_workspaces_are_combined(tmp_path: Path) -> None:
    """on_suspended and on_cancel too, a later workspace's hook naming its own action."""
    hooks = "\n".join(f"{e}: [{{ action: {a} }}]" for e, a in EVENTS_AND_ACTIONS)
    jobs = JOBS.replace("actions:\n", "actions:\n  notify: { type: script, script: 'true' }\n", 1)
    caller = CALLER + "\n" + hooks.replace("notify", "local") + "\n"
    report = check_workspace(layout(tmp_path, caller, jobs + hooks + "\n"))
    assert errors(report) == []
    ws = report.workspace
    assert ws is not None
    for event, _ in EVENTS_AND_ACTIONS:
        assert [h.action for h in getattr(ws, event)] == ["local"], event
        # the later workspace's workspace-level hooks become its tasks' own
        assert [h.action for h in getattr(ws.tasks["jobs/recalc"], event)] == ["jobs.notify"]


EVENTS_AND_ACTIONS = [
    (e, "notify") for e in ("on_success", "on_error", "on_suspended", "on_cancel")
]
