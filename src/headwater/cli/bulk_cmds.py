"""``headwater retry`` / ``headwater cancel`` with filters instead of a job id: the jobs
they select are retried or cancelled by the server (``POST /api/jobs/retry|cancel``);
``--dry-run`` prints exactly the jobs that would be touched, and the ones skipped."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import typer

__all__ = ["run_bulk", "selection_of", "when"]

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EXIT_USAGE = 2


def _usage(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def when(value: str, option: str, now: datetime | None = None) -> str:
    """An ISO 8601 UTC time from ``value``: an age (``30m``: that long ago) or a time."""
    text = value.strip()
    age = _AGE.fullmatch(text)
    if age is not None:
        ago = float(age.group(1)) * _UNIT_SECS[age.group(2)]
        at = (now or datetime.now(UTC)) - timedelta(seconds=ago)
        return at.isoformat().replace("+00:00", "Z")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _usage(f"{option} {value!r}: give an ISO 8601 time or an age such as 30m, 2h, 1d")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def selection_of(
    *,
    task: str | None,
    status: str | None,
    source_type: str | None,
    source_id: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    dry_run: bool,
) -> dict[str, Any] | None:
    """The request body, or None when no filter was given (a single-job command)."""
    body: dict[str, Any] = {
        "task": task,
        "status": status,
        "source_type": source_type,
        "source_id": source_id,
        "created_after": when(since, "--since") if since else None,
        "created_before": when(until, "--until") if until else None,
    }
    body = {k: v for k, v in body.items() if v is not None}
    if not body:
        return None
    return {**body, "limit": limit, "dry_run": dry_run}


def run_bulk(
    action: str, selection: dict[str, Any], server: str, token: str | None, as_json: bool
) -> None:
    from rich.console import Console
    from rich.markup import escape

    from headwater.cli.client_cmds import _client, short_id

    with _client(server, token) as client:
        result = client.bulk_jobs(action, selection)
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    out = Console(highlight=False)
    dry = bool(result.get("dry_run"))
    jobs: list[dict[str, Any]] = result.get("jobs", [])
    skipped: list[dict[str, Any]] = result.get("skipped", [])
    verb = {"retry": "retried", "cancel": "cancelled"}[action]
    head = f"would be {verb}" if dry else verb
    out.print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} {head}" + (":" if jobs else ""))
    for job in jobs:
        line = (
            f"  {escape(str(job['id']))}  {escape(str(job['task']))}  {job['status']}"
            f"  {escape(str(job['created_at']))}"
        )
        if job.get("new_job_id"):
            line += f"  → {escape(short_id(str(job['new_job_id'])))}"
        elif job.get("outcome") == "cancel_requested":
            line += "  (cancel requested; its worker is stopping it)"
        out.print(line)
    if skipped:
        out.print(f"{len(skipped)} skipped:")
        for job in skipped:
            out.print(f"  {escape(str(job['id']))}  {escape(str(job.get('reason')))}")
    if result.get("truncated"):
        out.print(f"more jobs match than --limit {selection['limit']}: run it again")
