"""`headwater validate / tasks / triggers` through the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEADWATER = str(Path(sys.executable).parent / "headwater")
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
VALID_EXAMPLES = sorted(
    [
        *EXAMPLES.glob("*.yaml"),
        *(EXAMPLES / "seed").glob("*.yaml"),
        *(EXAMPLES / "receivers").glob("*.yaml"),
        *(EXAMPLES / "runners").glob("*.yaml"),
        EXAMPLES / "orders",
        EXAMPLES / "runners",
    ]
)
INVALID_EXAMPLES = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def headwater(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEADWATER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def test_the_examples_are_all_there() -> None:
    names = {p.name for p in VALID_EXAMPLES}
    assert {
        "hello.yaml",
        "orders",
        "sqs-events.yaml",
        "sqs-consumer-full.yaml",
        "kafka-docker.yaml",
        "rabbitmq-pod.yaml",
        "flaky-consumer.yaml",
        "high-volume.yaml",
        "batch-consumer.yaml",
        "multi-step-kafka.yaml",
        "disabled.yaml",
        "docker.yaml",
        "pod.yaml",
    } <= names
    assert [p.name for p in INVALID_EXAMPLES] == ["event-source-inline-script.yaml"]


@pytest.mark.parametrize("example", VALID_EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(example: Path) -> None:
    result = headwater("validate", str(example))
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"✓ {example}: ")
    warnings = [line for line in result.stdout.splitlines() if ": warning:" in line]
    if example.parent.name == "seed":
        # The seed's own examples paste event data into shell scripts, as Strøm's docs
        # do; validate says so, and that is all it may say about them.
        warnings = [w for w in warnings if "into a shell script unquoted" not in w]
    assert ": error:" not in result.stdout and not warnings


def test_the_seeds_image_spelling_prints_a_note() -> None:
    result = headwater("validate", str(EXAMPLES / "seed" / "kafka-docker.yaml"))
    assert result.returncode == 0
    assert "kafka-docker.yaml:10:11: note: action 'kafka-poll': `type: script` with" in (
        result.stdout
    )
    assert "write `type: docker`" in result.stdout


def test_the_seeds_pod_spelling_prints_a_note_and_the_canonical_one_none() -> None:
    result = headwater("validate", str(EXAMPLES / "seed" / "rabbitmq-pod.yaml"))
    assert result.returncode == 0
    assert "write `type: pod` (Strøm's spelling, same meaning)" in result.stdout
    canonical = headwater("validate", str(EXAMPLES / "runners" / "pod.yaml"))
    assert canonical.returncode == 0
    assert ": note:" not in canonical.stdout


def test_the_orders_example_counts() -> None:
    result = headwater("validate", str(EXAMPLES / "orders"))
    assert result.stdout.strip() == f"✓ {EXAMPLES / 'orders'}: 6 actions, 4 tasks, 3 triggers"


def test_the_inline_script_event_source_is_rejected_with_the_fix() -> None:
    path = EXAMPLES / "invalid" / "event-source-inline-script.yaml"
    result = headwater("validate", str(path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    # the seed's script pastes `{{ input.region }}` into the shell: a warning comes first
    assert "into a shell script unquoted" in lines[0]
    first = lines[1]
    assert first.startswith(f"{path}:21:5: error: trigger 'secure-consumer': an event source")
    for expected in (
        "event sources run a task",
        "    actions:\n      secure-poll:\n        type: script\n        script: |",
        "aws sqs receive-message",
        "    tasks:\n      secure-consumer:\n        flow:\n          poll:\n"
        "            action: secure-poll",
        "        task: secure-consumer\n        target_task: protected-task",
    ):
        assert expected in result.stdout
    assert result.stdout.rstrip().endswith(f"✗ {path}: 1 error, 1 warning")


BROKEN = """
actions:
  greet:
    type: script
    scirpt: echo hi
tasks:
  hello:
    flow:
      greet:
        action: gret
triggers:
  nightly:
    type: scheduler
    task: hello
    cron: "99 * * * *"
"""


def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(textwrap.dedent(BROKEN).lstrip("\n"))
    return path


def test_a_broken_workspace_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = broken(tmp_path)
    result = headwater("validate", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:4:5: error: action 'greet': unknown key `scirpt` (did you mean `script`?)",
        f"{path}:9:17: error: step 'greet' of task 'hello': action 'gret' is not defined"
        " (did you mean `greet`?)",
        f"{path}:14:11: error: trigger 'nightly': invalid cron expression '99 * * * *'",
        f"✗ {path}: 3 errors",
    ]


def test_json_output(tmp_path: Path) -> None:
    path = broken(tmp_path)
    result = headwater("validate", str(path), "--json")
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert payload["valid"] is False
    assert [(p["line"], p["severity"], p["path"]) for p in payload["problems"]] == [
        (4, "error", "actions.greet.scirpt"),
        (9, "error", "tasks.hello.flow.greet.action"),
        (14, "error", "triggers.nightly.cron"),
    ]
    assert payload["problems"][0] == {
        "file": str(path),
        "line": 4,
        "column": 5,
        "severity": "error",
        "message": "action 'greet': unknown key `scirpt` (did you mean `script`?)",
        "path": "actions.greet.scirpt",
    }
    ok = headwater("validate", str(EXAMPLES / "hello.yaml"), "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout) == {"valid": True, "problems": []}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = headwater("validate", str(missing))
    assert result.returncode == 2
    assert f"error: {missing}: no such file or directory" in result.stderr
    assert headwater("validate").returncode == 2
    result = headwater("triggers", "restart")
    assert result.returncode == 2
    assert "headwater triggers restart NAME" in result.stderr
    result = headwater("triggers", str(missing))
    assert result.returncode == 2
    assert "is not a workspace file or directory" in result.stderr


def test_triggers_without_path_asks_the_server() -> None:
    result = headwater("triggers", "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "no headwater server answers at http://127.0.0.1:9" in result.stderr


def test_tasks_lists_the_workspace_tasks() -> None:
    result = headwater("tasks", str(EXAMPLES / "orders"), "--json")
    assert result.returncode == 0, result.stderr
    tasks = {t["name"]: t for t in json.loads(result.stdout)}
    assert set(tasks) == {"order-consumer", "process-order", "accept-order", "report"}
    process = tasks["process-order"]
    assert process["mode"] == "distributed"
    assert process["inputs"]["orderId"] == {"type": "string", "required": True}
    assert process["inputs"]["customer"] == {"type": "string", "default": "anonymous"}
    assert [s["name"] for s in process["steps"]] == ["validate", "charge"]
    assert process["steps"][1]["depends_on"] == ["validate"]
    text = headwater("tasks", str(EXAMPLES / "orders"))
    assert text.returncode == 0 and "process-order" in text.stdout
    assert "validate → charge" in text.stdout


def test_triggers_lists_the_workspace_triggers() -> None:
    result = headwater("triggers", str(EXAMPLES / "orders"), "--json")
    assert result.returncode == 0, result.stderr
    triggers = {t["name"]: t for t in json.loads(result.stdout)}
    assert triggers["order-events"] == {
        "name": "order-events",
        "type": "event_source",
        "task": "order-consumer",
        "target_task": "process-order",
        "enabled": True,
        "description": None,
        "restart_policy": "on_failure",
        "backoff_secs": 2.0,
        "max_in_flight": 10,
    }
    assert triggers["run-report"]["cron"] == "* * * * *"
    assert triggers["orders"]["path"] == "/hooks/orders"
    text = headwater("triggers", str(EXAMPLES / "orders"))
    assert text.returncode == 0 and "order-events" in text.stdout


def test_listing_an_invalid_workspace_exits_1(tmp_path: Path) -> None:
    result = headwater("tasks", str(broken(tmp_path)), "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "unknown key `scirpt`" in result.stderr


TERA_WORKSPACE = """\
actions:
  deploy:
    type: script
    script: |
      echo deploying {{ input.service | shell_quote }}
      echo "{{ input.service | nope }}"
tasks:
  release:
    input:
      env: { type: string, default: production }
      service: { type: string, default: api }
    flow:
      deploy:
        action: deploy
        when: "{{ input.env is starting_with('prod') }}"
        input:
          service: "{{ input.service | split(pat='-') | first | slugify }}"
      notify:
        action: deploy
        depends_on: [deploy]
        when: "{{ input.env is bogus_test }}"
        input:
          service: "{{ input.service | replace(from='a', to='b') }}"
"""


def test_tera_tests_and_filters_validate_and_unknown_ones_are_located_errors(
    tmp_path: Path,
) -> None:
    # `is starting_with(...)` in `when:` printed a TemplateAssertionError traceback, and
    # an unknown filter inside `script:` was not reported at all.
    path = tmp_path / "tera.yaml"
    path.write_text(TERA_WORKSPACE)
    result = headwater("validate", str(path))
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:4:13: error: action 'deploy': `script` is not a valid template:"
        " No filter named 'nope'. (line 2)",
        f"{path}:21:15: error: step 'notify' of task 'release': `when` is not a valid template:"
        " No test named 'bogus_test'. (line 1)",
        f"✗ {path}: 2 errors",
    ]
    fixed = TERA_WORKSPACE.replace(" | nope", "").replace("bogus_test", "containing('prod')")
    path.write_text(fixed)
    result = headwater("validate", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # `echo "{{ input.service }}"` pastes input into the shell: a warning, exit code 0
    (warning, ok) = result.stdout.splitlines()
    assert warning.startswith(
        f"{path}:4:13: warning: action 'deploy': `script` (line 2) pastes `{{{{ input.service }}}}`"
        " into a shell script unquoted"
    )
    assert "`{{ input.service | shell_quote }}`" in warning
    assert ok == f"✓ {path}: 1 action, 1 task, 0 triggers"
