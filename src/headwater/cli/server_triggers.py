"""``headwater triggers`` against a running server: live state, restart, release."""

from __future__ import annotations

import json
from typing import Any

from headwater.cli.client_cmds import _client

__all__ = ["list_server_triggers", "trigger_action"]

_PHASE_STYLE = {
    "running": "green",
    "backoff": "yellow",
    "idle": "dim",
    "quarantined": "bold red",
    "disabled": "dim",
    "paused": "yellow",
}
_MIN_DETAIL_WIDTH = 24


def list_server_triggers(server: str, token: str | None, as_json: bool) -> None:
    from headwater.cli.plain import Cell, Column, Out, cut, render_table

    with _client(server, token) as client:
        rows = client.list_triggers()
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    headers = ("trigger", "type", "task", "state", "in flight", "accepted", "rejected")
    cells: list[list[Cell]] = []
    details: list[str] = []
    for row in rows:
        state: dict[str, Any] = row.get("state") or {}
        phase = state.get("state") or ("enabled" if row.get("enabled") else "disabled")
        if row.get("paused") and row.get("enabled"):  # a webhook has no live state
            phase = "paused"
        limit = state.get("max_in_flight")
        in_flight = state.get("in_flight")
        cells.append(
            [
                Cell(str(row["name"])),
                Cell(str(row["type"])),
                Cell(str(row.get("target_task") or row.get("task") or "")),
                Cell(phase, _PHASE_STYLE.get(phase)),
                Cell("" if in_flight is None else f"{in_flight}/{limit if limit else '∞'}"),
                Cell(str(state.get("events_accepted", ""))),
                Cell(str(state.get("events_rejected", ""))),
            ]
        )
        details.append(" ".join(_detail(row, state).split()))
    out = Out()
    # The detail (a consumer's last error can be a traceback) gets the width the other
    # columns leave, on one line cut with "…"; on a screen too narrow for that, it goes
    # under the table, one line per trigger.
    widths = [max([len(h), *(len(c[i].text) for c in cells)]) for i, h in enumerate(headers)]
    detail_width = out.width - sum(widths) - len(headers)  # one space between
    inline = detail_width >= _MIN_DETAIL_WIDTH
    columns = [Column(h, w) for h, w in zip(headers, widths, strict=True)]
    if inline:
        longest = max([len("detail"), *map(len, details)])
        columns.append(Column("detail", min(detail_width, longest)))
        cells = [[*c, Cell(d)] for c, d in zip(cells, details, strict=True)]
    for line in render_table(out, columns, cells, gap=1):
        out.line(line)
    if not inline:
        for row_cells, detail in zip(cells, details, strict=True):
            if detail:
                out.line(cut(f"{row_cells[0].text}: {detail}", out.width))


def _detail(row: dict[str, Any], state: dict[str, Any]) -> str:
    if row.get("type") == "scheduler":
        return f"cron {row.get('cron')}" + (
            f", next {state['next_fire_at']}" if state.get("next_fire_at") else ""
        )
    if row.get("type") == "webhook":
        return str(row.get("path", ""))
    parts = []
    if state.get("lag_events") is not None or state.get("lag_ms") is not None:
        lag_ms = state.get("lag_ms")
        age = f", oldest {lag_ms / 1000:.1f}s" if isinstance(lag_ms, int | float) else ""
        lag_bytes = state.get("lag_bytes")
        log = f", {lag_bytes:,} log bytes" if isinstance(lag_bytes, int) else ""
        parts.append(f"lag {state.get('lag_events', '?')}{age}{log}")
    if state.get("cursor") is not None:
        parts.append(f"cursor {state['cursor']}")
    if state.get("restarts"):
        parts.append(f"{state['restarts']} restarts")
    if state.get("next_restart_at"):
        parts.append(f"next restart {state['next_restart_at']}")
    if state.get("idle_reason"):
        parts.append(str(state["idle_reason"]))
    if state.get("last_error"):
        parts.append(f"last error: {state['last_error']}")
    return "; ".join(parts)


def trigger_action(server: str, token: str | None, action: str, name: str, as_json: bool) -> None:
    with _client(server, token) as client:
        result = client.trigger_action(name, action)
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    phase = (result.get("state") or {}).get("phase", "?")
    done = "restarted" if action == "restart" else "released"
    print(f"trigger {name} {done} (now {phase})")
