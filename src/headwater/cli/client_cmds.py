"""Commands that talk to a running headwater over HTTP: ``jobs``, ``job``, ``logs``,
``cancel``.

They only use the public API (``headwater.cli.http_client``), so they work the same
against ``headwater up`` on this machine and a remote server. Errors are one line on
stderr and exit code 1; ``--json`` prints exactly what the API returned.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from headwater.cli import app
from headwater.cli.job_filters import (
    DryRunOpt,
    LimitOpt,
    SinceOpt,
    SourceIdOpt,
    SourceTypeOpt,
    StatusOpt,
    TaskOpt,
    UntilOpt,
)
from headwater.cli.keys import api_keys
from headwater.core.status import JobStatus
from headwater.defaults import DEFAULT_SERVER

if TYPE_CHECKING:  # imported where used: --help does not load the HTTP client
    from rich.console import Console

    from headwater.cli.http_client import HeadwaterClient
    from headwater.cli.plain import Out

__all__ = ["SHORT_ID", "cancel", "job", "jobs", "jobs_table", "logs", "short_id"]

# Tables show a job's last 8 characters: a UUIDv7 begins with its creation time (the
# jobs of one minute share it) and ends with random bits. Every command that takes a job
# id also takes at least 8 characters that begin or end exactly one job's id.
SHORT_ID = 8

ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="HEADWATER_SERVER",
        help="URL of the headwater server.",
        rich_help_panel="Connection",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        # The server's variables: with a comma-separated list the first key is sent.
        envvar=["HEADWATER_API_KEY", "HEADWATER_API_KEYS"],
        help="API key of the server (sent as 'Authorization: Bearer ...').",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]

STATUS_STYLE = {
    "pending": "yellow",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "skipped": "dim",
    "suspended": "yellow",  # waiting for an approval
}


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextmanager
def _client(server: str, token: str | None) -> Iterator[HeadwaterClient]:
    """A client whose errors become one line on stderr and exit code 1."""
    from headwater.cli.http_client import ClientError, HeadwaterClient

    if token is not None:  # several server keys: the client sends the first
        token = next(iter(api_keys([token])), None)
    try:
        with HeadwaterClient(server, token) as client:
            yield client
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _usage(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _print_json(data: Any) -> None:
    # Plain echo, not rich: the output is for programs (no wrapping, no markup).
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


# -- jobs -----------------------------------------------------------------------------


@app.command(rich_help_panel="Server")
def jobs(
    task: Annotated[str | None, typer.Option("--task", help="Only jobs of this task.")] = None,
    status: Annotated[
        JobStatus | None, typer.Option("--status", help="Only jobs in this status.")
    ] = None,
    source_type: Annotated[
        str | None,
        typer.Option("--source-type", help="Only jobs from this source (api, webhook...)."),
    ] = None,
    source_id: Annotated[
        str | None, typer.Option("--source-id", help="Only jobs of this source (a trigger).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List jobs, newest first."""
    from headwater.cli.plain import Out

    with _client(server, token) as client:
        found = client.list_jobs(
            task=task,
            status=status.value if status else None,
            source_type=source_type,
            source_id=source_id,
            limit=limit,
        )
    if as_json:
        _print_json(found)
        return
    out = Out()
    if not found:
        out.line("no jobs", "dim")
        return
    for line in jobs_table(found, out.width, out):
        out.line(line)
    waiting = [j for j in found if j.get("waiting_for")]
    if waiting:  # pending because no worker can run them: say so, not just "pending"
        out.line(
            f"{len(waiting)} pending job(s) wait for a worker: {waiting[0]['waiting_for']}",
            "yellow",
        )


def jobs_table(found: list[dict[str, Any]], width: int, out: Out | None = None) -> list[str]:
    """The jobs as the lines of a table that fits ``width`` columns. TASK is never dropped
    and keeps up to 20 characters whatever the width; when room runs out, SOURCE is cut,
    then CREATED loses its year, then SOURCE is dropped."""
    from headwater.cli.plain import Cell, Column, Out, render_table

    sources = [_source(j) for j in found]
    task_len = max(len(j["task"]) for j in found)
    source_len = max(max((len(s) for s in sources), default=0), len("SOURCE"))
    fixed = SHORT_ID + len("cancelled") + len("DURATION")
    task_w = source_w = 0
    created_w = 19
    for created_w, with_source in ((19, True), (14, True), (14, False)):
        room = width - fixed - created_w - 2 * (5 if with_source else 4)
        task_w = min(task_len, max(room, 4))
        if not with_source:
            break
        if room - min(task_len, 20) >= 10:  # SOURCE gets at least 10
            task_w = min(task_len, max(20, room - source_len))
            source_w = min(source_len, room - task_w)
            break
    columns = [
        Column("ID", SHORT_ID),
        Column("TASK", max(task_w, 4)),
        Column("STATUS", len("cancelled")),
        *([Column("SOURCE", source_w)] if source_w else []),
        Column("CREATED", created_w),
        Column("DURATION", len("DURATION"), right=True),
    ]
    rows: list[list[Cell | str]] = []
    for j, source in zip(found, sources, strict=True):
        status = "suspended" if j.get("suspended") else str(j["status"])
        row: list[Cell | str] = [short_id(j["id"]), j["task"], Cell(status, _style(status))]
        if source_w:
            row.append(source)
        created = _when(j.get("created_at"))
        row.append(created if created_w == 19 or created == "-" else created[5:])
        row.append(_duration(j.get("started_at"), j.get("finished_at")))
        rows.append(row)
    return render_table(out or Out(color=False), columns, rows)


def short_id(job_id: str) -> str:
    return job_id[-SHORT_ID:]


@app.command(rich_help_panel="Server")
def job(
    job_id: Annotated[
        str, typer.Argument(help="The job's id, or 8+ of its first or last characters.")
    ],
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Show one job with its steps."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    with _client(server, token) as client:
        data = client.get_job(job_id)
    if as_json:
        _print_json(data)
        return
    out = Console(highlight=False)
    status = "suspended" if data.get("suspended") else data["status"]
    out.print(f"[bold]job {escape(data['id'])}[/bold]  {_status(status)}")
    fields = [
        ("task", escape(data["task"])),
        ("workspace", escape(str(data.get("workspace", "")))),
        ("source", escape(_source(data))),
        ("created", _when(data.get("created_at"))),
        ("started", _when(data.get("started_at"))),
        ("finished", _when(data.get("finished_at"))),
        ("duration", _duration(data.get("started_at"), data.get("finished_at"))),
        ("input", escape(json.dumps(data.get("input"), ensure_ascii=False))),
    ]
    if data.get("output") is not None:
        fields.append(("output", escape(json.dumps(data["output"], ensure_ascii=False))))
    if data.get("error"):
        fields.append(("error", f"[red]{escape(data['error'])}[/red]"))
    if data.get("cancel_requested") and data["status"] == "running":
        fields.append(("cancel", "[magenta]requested[/magenta]"))
    if data.get("waiting_for"):
        fields.append(("waiting", f"[yellow]{escape(data['waiting_for'])}[/yellow]"))
    if data.get("retry_job_id"):  # the task's retry that followed this failed job
        fields.append(("retried", f"as job {escape(data['retry_job_id'])}"))
    for name, value in fields:
        out.print(f"  [dim]{name:<9}[/dim] {value}", soft_wrap=True)
    steps = data.get("steps") or []
    if not steps:
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for column in ("STEP", "ACTION", "STATUS", "ATTEMPTS", "EXIT", "DURATION", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR")
    for s in steps:
        exit_code = s.get("exit_code")
        table.add_row(
            escape(s["name"]),
            escape(s.get("action") or "-"),
            _status(s["status"]),
            str(s.get("attempts", 0)),
            "-" if exit_code is None else str(exit_code),
            _duration(s.get("started_at"), s.get("finished_at")),
            escape(s.get("error") or ""),
        )
    out.print()
    out.print(table)
    if data.get("workflow_steps"):
        from headwater.cli.workflow_view import print_workflow_steps

        print_workflow_steps(out, data["workflow_steps"], _status, _duration)
    from headwater.cli.workflow_view import is_workflow_wait

    for s in steps:  # what the approvers are asked, and how to answer
        if s["status"] != "suspended" or is_workflow_wait(s):
            continue
        output = s.get("output") if isinstance(s.get("output"), dict) else {}
        until = f" (times out {_when(s['timeout_at'])})" if s.get("timeout_at") else ""
        out.print(f"\n[yellow]step {escape(s['name'])} waits for approval{until}[/yellow]")
        if output.get("approval_message"):
            out.print(f"  {escape(str(output['approval_message']).strip())}", soft_wrap=True)
        out.print(
            f"  headwater approve {escape(short_id(data['id']))} {escape(s['name'])}"
            f"  |  headwater reject {escape(short_id(data['id']))} {escape(s['name'])}"
        )


# -- logs -----------------------------------------------------------------------------


@app.command(rich_help_panel="Server")
def logs(
    job_id: Annotated[
        str, typer.Argument(help="The job's id, or 8+ of its first or last characters.")
    ],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing until the job ends; exit 1 unless it completed."
        ),
    ] = False,
    step: Annotated[str | None, typer.Option("--step", help="Only this step's lines.")] = None,
    timestamps: Annotated[
        bool | None,
        typer.Option(
            "--timestamps/--no-timestamps",
            "-t",
            help="Begin each line with its time (local). Default: on with --follow.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON log record per line (NDJSON).")
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Print a job's log lines, each prefixed with its step."""
    from headwater.cli.plain import Out

    printer = _LogPrinter(as_json, timestamps=follow if timestamps is None else timestamps)
    final: str | None = None
    with _client(server, token) as client:
        try:
            if follow:
                for record in client.follow_logs(job_id, step=step):
                    if record.get("event") == "end":
                        final = str(record.get("status"))
                        if as_json:
                            printer.json(record)
                    else:
                        printer(record)
            else:
                for record in client.iter_logs(job_id, step=step):
                    printer(record)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if final is not None and final != JobStatus.COMPLETED.value:
        if not as_json:
            err = Out(sys.stderr)
            err.line(f"job {job_id} {err.style(final, _style(final))}")
        raise typer.Exit(1)


class _LogPrinter:
    """``[step] line`` on stdout; stderr lines as ``[step:stderr] line`` so they stay
    recognisable when piped (no colours); headwater's own lines dimmed."""

    def __init__(self, as_json: bool, *, timestamps: bool = False) -> None:
        from headwater.cli.plain import Out

        self.as_json = as_json
        self.timestamps = timestamps
        self.out = Out()

    def json(self, record: Any) -> None:
        typer.echo(json.dumps(record, ensure_ascii=False))

    def __call__(self, record: dict[str, Any]) -> None:
        if self.as_json:
            self.json(record)
            return
        paint = self.out.style
        step = str(record.get("step") or "job")
        line = str(record.get("line", ""))
        stream = record.get("stream")
        if stream == "stderr":
            text = f"{paint(f'[{step}:stderr]', 'cyan')} {paint(line, 'yellow')}"
        elif stream == "system":
            text = paint(f"[{step}] {line}", "dim")
        else:
            text = f"{paint(f'[{step}]', 'cyan')} {line}"
        if self.timestamps:
            text = f"{paint(_clock(record.get('ts')), 'dim')} {text}"
        # One record, one line, never wrapped (terminals wrap it; pipes get it whole).
        self.out.line(text)


# -- cancel ---------------------------------------------------------------------------


@app.command(rich_help_panel="Server")
def cancel(
    job_id: Annotated[
        str | None,
        typer.Argument(
            help="The job's id, or 8+ of its first or last characters.", show_default=False
        ),
    ] = None,
    task: TaskOpt = None,
    status: StatusOpt = None,
    source_type: SourceTypeOpt = None,
    source_id: SourceIdOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = 1000,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Cancel a job: at once when pending, via its worker when running.

    \b
    headwater cancel JOB                          one job
    headwater cancel --task T --dry-run           list the pending/running jobs of T
    headwater cancel --source-id ws/hook --since 10m
    """
    from rich.console import Console
    from rich.markup import escape

    from headwater.cli.bulk_cmds import run_bulk, selection_of

    selection = selection_of(
        task=task, status=status, source_type=source_type, source_id=source_id,
        since=since, until=until, limit=limit, dry_run=dry_run,
    )  # fmt: skip
    if selection is not None:
        if job_id is not None:
            _usage("give a job id or filters, not both")
        run_bulk("cancel", selection, server, token, as_json)
        return
    if job_id is None:
        _usage("which job? give its id, or filters such as --task/--status/--since")
    if dry_run:
        _usage("--dry-run goes with filters (--task, --status, --since...)")
    with _client(server, token) as client:
        data = client.cancel_job(job_id)
    if as_json:
        _print_json(data)
        return
    out = Console(highlight=False)
    if data["status"] == "cancelled":
        out.print(f"job {escape(data['id'])} {_status('cancelled')}")
    else:
        out.print(f"job {escape(data['id'])}: cancel requested; its worker is stopping it")


# -- formatting -----------------------------------------------------------------------


def _style(status: str) -> str:
    return STATUS_STYLE.get(status, "white")


def _status(status: str) -> str:
    """``status`` in its colour, as rich markup."""
    from rich.markup import escape

    style = _style(status)
    return f"[{style}]{escape(status)}[/{style}]"


def _source(data: dict[str, Any]) -> str:
    source = str(data.get("source_type") or "")
    if data.get("source_id"):
        source += f":{data['source_id']}"
    return source


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _when(ts: str | None) -> str:
    moment = _parse(ts)
    # Local time: the table is for the person at this terminal; --json keeps UTC.
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _clock(ts: str | None) -> str:
    moment = _parse(ts)
    if moment is None:
        return " " * 12
    return moment.astimezone().strftime("%H:%M:%S.%f")[:12]


def _duration(started: str | None, finished: str | None) -> str:
    start = _parse(started)
    if start is None:
        return "-"
    end = _parse(finished)
    running = end is None
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    text = _human_seconds(max(0.0, seconds))
    return text + "…" if running else text


def _human_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
