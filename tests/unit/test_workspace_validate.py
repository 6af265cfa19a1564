"""Validation: unknown keys, types, references, cycles, triggers. Messages and places."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from headwater.errors import Problem, Severity
from headwater.workspace import check_workspace
from headwater.workspace.loader import Report

# Lines 1-13: one valid action and two tasks that the cases below refer to.
BASE = """\
actions:
  run:
    type: script
    script: echo run
tasks:
  consumer:
    flow:
      poll:
        action: run
  handle:
    flow:
      one:
        action: run
"""


def check(tmp_path: Path, extra: str, base: str = BASE) -> Report:
    """Validate ``base`` followed by ``extra`` (dedented: top-level sections)."""
    path = tmp_path / "ws.yaml"
    path.write_text(base + textwrap.dedent(extra).lstrip("\n"))
    return check_workspace(path, environ={})


def check_tasks(tmp_path: Path, tasks: str, base: str = BASE) -> Report:
    """Validate ``base`` with more entries under its ``tasks:`` (line 14 on)."""
    path = tmp_path / "ws.yaml"
    path.write_text(base + textwrap.indent(textwrap.dedent(tasks).lstrip("\n"), "  "))
    return check_workspace(path, environ={})


def problems(report: Report, severity: Severity = Severity.ERROR) -> list[tuple[int, str]]:
    return [(p.line or 0, p.message) for p in report.problems if p.severity is severity]


def only(report: Report, severity: Severity = Severity.ERROR) -> Problem:
    found = [p for p in report.problems if p.severity is severity]
    assert len(found) == 1, [p.format() for p in report.problems]
    return found[0]


def test_the_base_is_valid(tmp_path: Path) -> None:
    report = check(tmp_path, "")
    assert report.valid and report.problems == []


def test_every_problem_is_reported_at_once_as_file_line_col(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        triggers:
          a: {type: scheduler, task: nope, cron: "* * * * *"}
          b: {type: webhook, task: handel}
        """,
    )
    formatted = [p.format() for p in report.problems]
    ws = tmp_path / "ws.yaml"
    assert formatted == [
        f"{ws}:15:30: error: trigger 'a': task 'nope' is not defined",
        f"{ws}:16:28: error: trigger 'b': task 'handel' is not defined (did you mean `handle`?)",
    ]


# -- unknown keys and types -------------------------------------------------------------
def test_unknown_keys_suggest_the_closest_one(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        triggers:
          t:
            type: event_source
            task: consumer
            target_task: handle
            restart_polcy: always
        """,
    )
    assert problems(report) == [
        (19, "trigger 't': unknown key `restart_polcy` (did you mean `restart_policy`?)")
    ]
    assert only(report).column == 5


def test_unknown_step_keys_know_inline_action_fields(tmp_path: Path) -> None:
    report = check(tmp_path, "", base=BASE + "        dependson: [poll]\n")
    assert problems(report) == [
        (14, "step 'one' of task 'handle': unknown key `dependson` (did you mean `depends_on`?)")
    ]
    report = check_tasks(tmp_path, "t:\n  flow:\n    s:\n      type: script\n      scirpt: x\n")
    assert problems(report) == [
        (18, "step 's' of task 't': unknown key `scirpt` (did you mean `script`?)")
    ]


def test_wrong_types(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        triggers:
          w:
            type: webhook
            task: handle
            timeout_secs: soon
            enabled: maybe
        """,
    )
    assert problems(report) == [
        (
            18,
            "trigger 'w': `timeout_secs` should be a valid integer, unable to parse string as"
            " an integer, got string 'soon'",
        ),
        (
            19,
            "trigger 'w': `enabled` should be a valid boolean, unable to interpret input,"
            " got string 'maybe'",
        ),
    ]


def test_missing_required_keys(tmp_path: Path) -> None:
    report = check(tmp_path, "triggers:\n  s:\n    type: scheduler\n    task: handle\n")
    assert problems(report) == [(15, "trigger 's': missing required key `cron`")]
    report = check_tasks(tmp_path, "empty: {}\n")
    assert problems(report) == [(14, "task 'empty': missing required key `flow`")]


def test_unknown_trigger_type(tmp_path: Path) -> None:
    report = check(tmp_path, "triggers:\n  s:\n    type: cron\n    task: handle\n")
    assert problems(report) == [
        (
            16,
            "trigger 's': unknown type 'cron'; valid: scheduler, webhook, event_source,"
            " redis_stream, redis_list, amqp, mqtt, nats, kafka, sqs, postgres, sqlserver_cdc,"
            " postgres_cdc, pubsub, eventhubs, pulsar, mysql_cdc, custom",
        )
    ]
    report = check(tmp_path, "triggers:\n  s:\n    task: handle\n")
    assert problems(report) == [
        (
            15,
            "trigger 's': missing required key `type` (scheduler, webhook, event_source,"
            " redis_stream, redis_list, amqp, mqtt, nats, kafka, sqs, postgres, sqlserver_cdc,"
            " postgres_cdc, pubsub, eventhubs, pulsar, mysql_cdc, custom)",
        )
    ]


# -- references -------------------------------------------------------------------------
def test_a_step_action_must_exist(tmp_path: Path) -> None:
    report = check_tasks(tmp_path, "t:\n  flow:\n    s:\n      action: runn\n")
    assert problems(report) == [
        (17, "step 's' of task 't': action 'runn' is not defined (did you mean `run`?)")
    ]


def test_a_step_needs_an_action(tmp_path: Path) -> None:
    report = check_tasks(tmp_path, "t:\n  flow:\n    s:\n      input: {a: 1}\n")
    assert problems(report) == [
        (
            16,
            "step 's' of task 't': no `action`: name an action (`action: NAME`) or define"
            " one inline (`type: script`, `script: ...`)",
        )
    ]


def test_depends_on_must_name_steps_of_the_task(tmp_path: Path) -> None:
    report = check_tasks(
        tmp_path,
        """
          t:
            flow:
              first:
                action: run
              second:
                action: run
                depends_on: [frist, second]
        """,
    )
    assert problems(report) == [
        (
            20,
            "step 'second' of task 't': depends_on 'frist' is not a step of task 't'"
            " (did you mean `first`?)",
        ),
        (20, "step 'second' of task 't': a step cannot depend on itself"),
    ]


def test_a_cycle_is_named(tmp_path: Path) -> None:
    report = check_tasks(
        tmp_path,
        """
          t:
            flow:
              a:
                action: run
                depends_on: [c]
              b:
                action: run
                depends_on: [a]
              c:
                action: run
                depends_on: [b]
              d:
                action: run
                depends_on: [a]
        """,
    )
    assert problems(report) == [
        (18, "step 'a' of task 't': steps depend on each other in a cycle: a -> c -> b -> a")
    ]


TASK_ACTIONS = BASE.replace(
    "tasks:\n",
    """\
  run-a: {type: task, task: a}
  run-b: {type: task, task: b}
  run-x: {type: task, task: hadnle}
  run-y: {type: task}
tasks:
""",
)


def test_task_actions_must_name_tasks_that_do_not_loop(tmp_path: Path) -> None:
    report = check_tasks(
        tmp_path,
        """
        a:
          flow:
            call-b: {action: run-b}
        b:
          flow:
            call-a: {action: run-a}
        """,
        base=TASK_ACTIONS,
    )
    assert problems(report) == [
        (7, "action 'run-x': task 'hadnle' is not defined (did you mean `handle`?)"),
        (8, "action 'run-y': a `type: task` action needs `task: NAME`"),
        (18, "task 'a': runs itself through `type: task` actions: a -> b -> a"),
    ]


def test_hooks_must_name_actions(tmp_path: Path) -> None:
    report = check(tmp_path, "", base=BASE + "    on_error:\n      - action: notify\n")
    assert problems(report) == [(15, "task 'handle': action 'notify' is not defined")]


def test_task_with_no_steps(tmp_path: Path) -> None:
    report = check_tasks(tmp_path, "t:\n  flow: {}\n")
    assert problems(report) == [(15, "task 't': `flow` has no steps")]


# -- triggers ---------------------------------------------------------------------------
EVENT_SOURCE = """
triggers:
  stream:
    type: event_source
    task: consumer
    target_task: {target}
    restart_policy: {policy}
    backoff_secs: {backoff}
    max_in_flight: {in_flight}
"""


def event_source(
    target: str = "handle", policy: str = "always", backoff: str = "5", in_flight: str = "10"
) -> str:
    return EVENT_SOURCE.format(target=target, policy=policy, backoff=backoff, in_flight=in_flight)


def test_a_valid_event_source(tmp_path: Path) -> None:
    assert check(tmp_path, event_source()).valid


def test_event_source_references(tmp_path: Path) -> None:
    report = check(tmp_path, event_source(target="handel"))
    assert problems(report) == [
        (18, "trigger 'stream': target_task 'handel' is not defined (did you mean `handle`?)")
    ]


def test_target_task_cannot_be_the_consumer(tmp_path: Path) -> None:
    [(line, message)] = problems(check(tmp_path, event_source(target="consumer")))
    assert line == 18
    assert message.startswith(
        "trigger 'stream': `target_task` is the consumer task 'consumer' itself: every event"
        " would start another consumer"
    )


def test_unknown_restart_policy_lists_the_valid_ones(tmp_path: Path) -> None:
    assert problems(check(tmp_path, event_source(policy="sometimes"))) == [
        (
            19,
            "trigger 'stream': unknown restart policy 'sometimes'; valid: always, on_failure,"
            " never",
        )
    ]
    assert problems(check(tmp_path, event_source(policy="on-failure"))) == [
        (
            19,
            "trigger 'stream': unknown restart policy 'on-failure'; valid: always, on_failure,"
            " never (did you mean `on_failure`?)",
        )
    ]


def test_negative_backoff_and_max_in_flight(tmp_path: Path) -> None:
    assert problems(check(tmp_path, event_source(backoff="-1", in_flight="-5"))) == [
        (20, "trigger 'stream': `backoff_secs` cannot be negative (got -1)"),
        (21, "trigger 'stream': `max_in_flight` cannot be negative (got -5)"),
    ]


SCHEDULE = """
triggers:
  nightly:
    type: scheduler
    task: handle
    cron: "{cron}"
    timezone: {tz}
"""


@pytest.mark.parametrize(
    "cron", ["* * * * *", "0 2 * * *", "*/10 * * * * *", "0 30 9 * * MON-FRI", "@hourly"]
)
def test_valid_cron_expressions(tmp_path: Path, cron: str) -> None:
    assert check(tmp_path, SCHEDULE.format(cron=cron, tz="Europe/Oslo")).valid


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", "invalid cron expression '61 * * * *'"),
        (
            "* * *",
            "cron expression '* * *' has 3 fields; write 5 (minute hour day month"
            " weekday) or 6 (second minute hour day month weekday)",
        ),
        (
            "@sometimes",
            "unknown cron alias '@sometimes' (use @yearly, @monthly, @weekly, @daily, @hourly)",
        ),
    ],
)
def test_invalid_cron_expressions(tmp_path: Path, cron: str, message: str) -> None:
    report = check(tmp_path, SCHEDULE.format(cron=cron, tz="UTC"))
    assert problems(report) == [(18, f"trigger 'nightly': {message}")]


def test_unknown_timezone(tmp_path: Path) -> None:
    report = check(tmp_path, SCHEDULE.format(cron="0 2 * * *", tz="Europe/Olso"))
    assert problems(report) == [
        (19, "trigger 'nightly': unknown timezone 'Europe/Olso' (did you mean `Europe/Oslo`?)")
    ]


def test_webhook_names(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        triggers:
          a: {type: webhook, task: handle, name: "has space"}
          b: {type: webhook, task: handle, name: github}
          github: {type: webhook, task: handle}
        """,
    )
    assert problems(report) == [
        (15, "trigger 'a': webhook name 'has space' may only hold letters, digits, - and _"),
        (17, "trigger 'github': webhook name 'github' is also used by trigger 'b'"),
    ]


def test_event_source_with_inline_script_shows_what_to_write(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        triggers:
          secure-consumer:
            type: event_source
            task: handle
            script: |
              #!/bin/bash
              aws sqs receive-message --queue-url "$QUEUE_URL"
            env:
              QUEUE_URL: "{{ secret.queue_url }}"
        """,
    )
    problem = only(report)
    assert (problem.line, problem.column) == (18, 5)
    message = problem.message
    assert message.startswith(
        "trigger 'secure-consumer': an event source cannot carry `script:`; event sources run"
        " a task"
    )
    suggestion = textwrap.dedent(
        """\
            actions:
              secure-poll:
                type: script
                script: |
                  #!/bin/bash
                  aws sqs receive-message --queue-url "$QUEUE_URL"
            tasks:
              secure-consumer:
                flow:
                  poll:
                    action: secure-poll
            triggers:
              secure-consumer:
                type: event_source
                task: secure-consumer
                target_task: handle
                env:
                  QUEUE_URL: "{{ secret.queue_url }}"
        """
    )
    assert textwrap.indent(suggestion, "    ").rstrip("\n") in message
    assert "`task: handle` became the `target_task`" in message
