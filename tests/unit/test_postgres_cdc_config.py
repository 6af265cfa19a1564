"""`headwater validate` refuses a postgres_cdc trigger that could not run, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.workspace import check_workspace

BASE = """\
actions:
  noop: {type: script, script: "true"}
tasks:
  handle:
    flow:
      run: {action: noop}
triggers:
  changes:
    type: postgres_cdc
    target_task: handle
    url: "{{ secret.pg_url }}"
"""


def _problems(tmp_path: Path, extra: str) -> list[str]:
    path = tmp_path / "ws.yaml"
    path.write_text(BASE + extra)
    return [p.message for p in check_workspace(path, {}).errors]


def test_a_valid_trigger_passes(tmp_path: Path) -> None:
    assert _problems(tmp_path, "    tables: [public.orders, items]\n") == []
    # One table may be written as a string; an existing publication needs no tables.
    assert _problems(tmp_path, "    tables: orders\n") == []
    assert _problems(tmp_path, "    publication: dba_pub\n    create: false\n") == []


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("", "name the tables to capture"),
        (
            "    tables: [orders]\n    slot: Orders-Slot\n",
            "lower-case letters, digits or underscores",
        ),
        ("    tables: [a.b.c]\n", "is not a table name"),
        ("    tables: [orders]\n    operations: [upsert]\n", "operations"),
        ("    tables: [orders]\n    operations: []\n", "operations"),
        ("    tables: [orders]\n    poll_secs: 0\n", "poll_secs"),
        ("    tables: [orders]\n    publication: ''\n", "publication name"),
        ("    tables: [orders]\n    snapshot: true\n", "snapshot"),
    ],
)
def test_a_bad_config_is_an_error_naming_the_problem(
    tmp_path: Path, extra: str, words: str
) -> None:
    problems = _problems(tmp_path, extra)
    assert any(words in p for p in problems), problems


def test_a_password_in_clear_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(
        BASE.replace("{{ secret.pg_url }}", "postgresql://hw:hunter2@db/app")
        + "    tables: [orders]\n"
    )
    messages = [p.message for p in check_workspace(path, {}).problems]
    assert any("password in clear" in m for m in messages), messages
