"""`validate` on approval steps: Strøm's keys accepted, misuse reported at its file:line."""

from __future__ import annotations

from pathlib import Path

from headwater.errors import Severity
from tests.unit.test_workspace_validate import check, check_tasks, problems

FULL = """\
actions:
  run:
    type: script
    script: echo run
  gate:
    type: approval
    message: "Deploy {{ input.version }}?"
    timeout: 24h
    input:
      ticket: { type: string, required: true }
tasks:
  deploy:
    on_suspended:
      - action: run
        input: { text: "{{ hook.step_name }}: {{ hook.message }}" }
    flow:
      approve:
        action: gate
      inline:
        type: approval
        message: "ok?"
        timeout: 5m
        depends_on: [approve]
      after:
        action: run
        depends_on: [inline]
        input: { by: "{{ approve.output.approved_by }}" }
on_suspended:
  - action: run
"""


def test_strom_approval_syntax_is_valid(tmp_path: Path) -> None:
    report = check(tmp_path, "", base=FULL)
    assert report.valid, [p.format() for p in report.problems]
    assert problems(report, Severity.WARNING) == []


def test_approval_misuse_is_reported_with_its_line(tmp_path: Path) -> None:
    report = check_tasks(
        tmp_path,
        """
        gated:
          flow:
            a:
              type: approval
              message: "{{ input.x "
            b:
              type: approval
              script: echo no
            c:
              type: script
              script: echo
              message: hello
            d:
              type: approval
              timeout: soon
            e:
              type: approval
              for_each: [1, 2]
        """,
    )
    found = problems(report)
    assert any(line == 18 and "message" in text for line, text in found), found
    assert any(
        line == 21 and "a `type: approval` action cannot have `script`" in text
        for line, text in found
    ), found
    assert any(
        line == 25 and "a `type: script` action cannot have `message`" in text
        for line, text in found
    ), found
    assert any(line == 28 and "soon" in text for line, text in found), found
    assert any(line == 31 and "cannot loop" in text for line, text in found), found
