"""The Triggers page's rows from the runtime's trigger states: the states the browser
tests cannot reach without a broker or a second server (a receiver's lag, a receiver
backing off, a trigger owned by another server), and the masking of what they report."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headwater.core.status import PauseKind
from headwater.server.ui.pages_ops import trigger_rows
from headwater.server.ui.render import make_environment
from headwater.workspace.loader import load_workspace

SECRET = "row-secret-31a8"

WORKSPACE = """
secrets:
  redis_url: "redis://:%s@127.0.0.1:6379/0"
actions:
  noop: { type: script, script: "true" }
tasks:
  send:
    flow:
      s: { action: noop }
triggers:
  outbox:
    type: redis_list
    url: "{{ secret.redis_url }}"
    list: mail:outbox
    target_task: send
    max_in_flight: 4
  retrying:
    type: redis_list
    url: "{{ secret.redis_url }}"
    list: mail:other
    target_task: send
  hook:
    type: webhook
    task: send
  tick:
    type: scheduler
    cron: "0 3 * * *"
    task: send
"""


class _Paused:
    def __init__(self, name: str) -> None:
        self.name = name


class _Store:
    async def list_paused(self, kind: PauseKind) -> list[_Paused]:
        return [_Paused("hook")] if kind is PauseKind.TRIGGER else []


class _Runtime:
    """What ``trigger_rows`` reads: a TriggerStateProvider, no TriggerControl."""

    def __init__(self, ws_path: Path, states: Mapping[str, Mapping[str, Any]]) -> None:
        self._ws = load_workspace(ws_path)
        self._states = states
        self.store = _Store()

    def workspace(self) -> Any:
        return self._ws

    async def trigger_states(self) -> Mapping[str, Mapping[str, Any]]:
        return self._states

    def redact(self, data: Any) -> Any:
        if isinstance(data, str):
            return data.replace(SECRET, "••••••")
        if isinstance(data, dict):
            return {k: self.redact(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.redact(v) for v in data]
        return data


def _rows(tmp_path: Path, states: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    ws = tmp_path / "ws.yaml"
    ws.write_text(textwrap.dedent(WORKSPACE % SECRET))
    runtime = _Runtime(ws, states)
    rows = asyncio.run(trigger_rows(runtime))  # type: ignore[arg-type]
    return {r["name"]: r for r in rows}


def test_a_receivers_lag_use_and_error_are_shown_masked(tmp_path: Path) -> None:
    error = f"connection to redis://:{SECRET}@127.0.0.1 refused"
    states = {
        "outbox": {
            "state": "running",
            "restarts": 1,
            "in_flight": 3,
            "max_in_flight": 4,
            "events_accepted": 40,
            "events_rejected": 2,
            "lag_events": 12,
            "lag_ms": 1500.0,
            "owned_here": True,
        },
        "retrying": {"state": "backoff", "restarts": 3, "last_error": error},
        "tick": {"state": "scheduled", "next_fire_at": "2026-12-08T03:00:00Z", "owned_here": False},
    }
    rows = _rows(tmp_path, states)
    assert {n: r["label"] for n, r in rows.items()} == {
        "outbox": "running",
        "retrying": "backing off",
        "hook": "paused",  # the store's pause wins over any state
        "tick": "owned elsewhere",
    }
    assert rows["tick"]["owner"] == "another server" and rows["outbox"]["owner"] == "this server"
    html = (
        make_environment()
        .get_template("ops/_trigger_rows.html")
        .render(triggers=list(rows.values()))
    )
    assert SECRET not in html and "refused" in html
    outbox = html[html.index('id="trigger-outbox"') : html.index('id="trigger-retrying"')]
    assert "12 ev" in outbox and "1.5 s" in outbox and "3 / 4" in outbox
    # Without TriggerControl (no event sources here) only pause/resume is offered.
    assert "Release" not in html and "Restart" not in html
    hook = html[html.index('id="trigger-hook"') : html.index('id="trigger-outbox"')]
    assert "Enable" in hook and "Disable" not in hook
