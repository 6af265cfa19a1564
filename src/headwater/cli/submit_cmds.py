"""Commands that start jobs on a running server or look at its workers: ``submit``,
``retry``, ``workers``.

Like the other client commands they only use the public API, print one line on stderr
and exit 1 on an error, and ``--json`` prints what the API returned.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from headwater.cli import app
from headwater.cli.client_cmds import (
    JsonOpt,
    ServerOpt,
    TokenOpt,
    _client,
    _err,
    _LogPrinter,
    _print_json,
    _status,
    _when,
    short_id,
)
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
from headwater.defaults import DEFAULT_SERVER

if TYPE_CHECKING:
    from rich.table import Table

    from headwater.cli.http_client import HeadwaterClient

__all__ = ["retry", "submit", "workers"]

WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait", help="Wait until the job is final; exit 0 when it completed, 1 otherwise."
    ),
]
FollowOpt = Annotated[
    bool,
    typer.Option("--follow", "-f", help="Print the job's logs until it is final (implies --wait)."),
]


def _parse_input(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise typer.BadParameter('give a JSON object, e.g. \'{"name": "x"}\'')
    return value


@app.command(rich_help_panel="Server")
def submit(
    task: Annotated[str, typer.Argument(help="The task to run.")],
    input_json: Annotated[
        str,
        typer.Option("--input", "-i", help="The job's input as a JSON object.", show_default=False),
    ] = "{}",
    wait: WaitOpt = False,
    follow: FollowOpt = False,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Start a job of TASK on a running server (POST /api/tasks/TASK/run)."""
    job_input = _parse_input(input_json)
    with _client(server, token) as client:
        created = client.run_task(task, job_input)
        _started(client, created["job"], "created", wait or follow, follow, as_json)


@app.command(rich_help_panel="Server")
def retry(
    job_id: Annotated[
        str | None, typer.Argument(help="The job's id (or a short id).", show_default=False)
    ] = None,
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Re-run from this step: the completed steps before it keep their outputs.",
            show_default=False,
        ),
    ] = None,
    wait: WaitOpt = False,
    follow: FollowOpt = False,
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
    """Run a final job again: a new job of the same task with the same input.

    \b
    headwater retry JOB                     the whole job again
    headwater retry JOB --from STEP         from STEP on; the steps before it are kept
    headwater retry --task T --since 1h     every failed job of T of the last hour
    headwater retry --status failed --dry-run   list what would be retried
    """
    from headwater.cli.bulk_cmds import run_bulk, selection_of

    selection = selection_of(
        task=task, status=status, source_type=source_type, source_id=source_id,
        since=since, until=until, limit=limit, dry_run=dry_run,
    )  # fmt: skip
    if selection is not None:
        if job_id is not None or from_step is not None or wait or follow:
            _usage("give a job id or filters, not both (--from/--wait/--follow: one job)")
        run_bulk("retry", selection, server, token, as_json)
        return
    if job_id is None:
        _usage("which job? give its id, or filters such as --task/--status/--since")
    if dry_run:
        _usage("--dry-run goes with filters (--task, --status, --since...)")
    with _client(server, token) as client:
        new = client.retry_job(job_id, from_step=from_step)
        what = f"created (retry of {short_id(str(new.get('source_id')))}"
        if from_step is not None:
            kept = ", ".join(s["name"] for s in new.get("steps", [])) or "no steps"
            what += f", from step {from_step}; kept {kept}"
        what += ")"
        _started(client, new, what, wait or follow, follow, as_json)


def _usage(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _started(
    client: HeadwaterClient,
    job: dict[str, Any],
    what: str,
    wait: bool,
    follow: bool,
    as_json: bool,
) -> None:
    from rich.console import Console
    from rich.markup import escape

    job_id = str(job["id"])
    if not wait:
        if as_json:
            _print_json(job)
        else:
            Console(highlight=False).print(
                f"job {escape(job_id)} {escape(what)} (task {escape(str(job['task']))})"
            )
        return
    if not as_json:
        # On stderr so that --follow's stdout is the job's logs only.
        _err().print(f"job {escape(job_id)} {escape(what)} (task {escape(str(job['task']))})")
    printer = _LogPrinter(False, timestamps=True)
    final = str(job.get("status"))
    try:
        for record in client.follow_logs(job_id):
            if record.get("event") == "end":
                final = str(record.get("status"))
            elif follow and not as_json:
                printer(record)
    except KeyboardInterrupt:
        _err().print(
            f"stopped waiting; job {escape(job_id)} goes on (cancel it with "
            f"'headwater cancel {escape(short_id(job_id))}')"
        )
        raise typer.Exit(130) from None
    if as_json:
        _print_json(client.get_job(job_id))
    else:
        _err().print(f"job {escape(job_id)} {_status(final)}")
    if final != "completed":
        raise typer.Exit(1)


@app.command(rich_help_panel="Server")
def workers(
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List the registered workers: tags, last heartbeat, the jobs they run."""
    from rich.console import Console

    with _client(server, token) as client:
        found = client.list_workers()
    if as_json:
        _print_json(found)
        return
    out = Console(highlight=False)
    if not found:
        out.print("no workers registered (start one with 'headwater worker')", style="dim")
        return
    out.print(workers_table(found))


def workers_table(found: list[dict[str, Any]]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("NAME", no_wrap=True, overflow="ellipsis", min_width=8, ratio=2)
    table.add_column("TAGS", overflow="fold", ratio=2)
    table.add_column("HEARTBEAT", no_wrap=True)
    table.add_column("JOBS", overflow="fold", ratio=1)
    for w in found:
        beat = _when(w.get("last_heartbeat"))
        beat = beat if w.get("live") else f"[red]{beat}[/red]"
        running = [short_id(j) for j in w.get("running_jobs", [])]
        table.add_row(
            escape(str(w["name"])),
            escape(",".join(w.get("tags", [])) or "-"),
            beat,
            escape(" ".join(running) or "-"),
        )
    return table
