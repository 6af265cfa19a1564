"""``headwater triggers PATH --json`` names the task each trigger feeds."""

from __future__ import annotations

from pathlib import Path

from headwater.cli.workspace_cmds import trigger_rows
from headwater.workspace import load_workspace


def test_a_receiver_trigger_lists_its_target_task(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(
        """
actions:
  a: {type: script, script: "true"}
tasks:
  t: {flow: {s: {action: a}}}
triggers:
  r: {type: redis_stream, url: "redis://127.0.0.1:6379", stream: s, target_task: t,
      max_in_flight: 7}
"""
    )
    (row,) = trigger_rows(load_workspace(path))
    assert row["type"] == "redis_stream"
    assert row["target_task"] == "t"
    assert row["max_in_flight"] == 7
