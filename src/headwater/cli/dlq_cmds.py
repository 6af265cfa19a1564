"""``headwater dlq list / replay``: the events that could not become jobs.

Every trigger stores what it cannot turn into a job (invalid input, an undecodable broker
message) with the reason, and acknowledges it so the source is never blocked. These
commands show them and, once the workspace is fixed (or with a corrected ``--input``),
dispatch them again.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.cli import app
from headwater.cli.client_cmds import JsonOpt, ServerOpt, TokenOpt, _client, _err, _print_json
from headwater.cli.http_client import DEFAULT_SERVER

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    help="Dead letters: events that could not become jobs, and their replay.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq", rich_help_panel="Server")

_REPLAY_STYLE = {"created": "green", "already_replayed": "dim", "still_invalid": "red"}


@dlq_app.command("list")
def list_cmd(
    source_id: Annotated[
        str | None,
        typer.Option("--source-id", "-s", help="Only this trigger's ({workspace}/{trigger})."),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Include dead letters already replayed.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List dead letters, newest first (those not replayed yet, unless --all)."""
    with _client(server, token) as client:
        found = client.list_dead_letters(source_id=source_id, pending=not show_all, limit=limit)
    if as_json:
        _print_json(found)
        return
    out = Console(highlight=False)
    if not found:
        out.print("no dead letters", style="dim")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "SOURCE", "TASK", "CREATED", "REASON"):
        table.add_column(column, overflow="fold")
    for item in found:
        reason = escape(str(item.get("reason") or ""))
        if item.get("replay_job_id"):
            reason = f"[dim]replayed → {escape(item['replay_job_id'])}[/dim]  {reason}"
        table.add_row(
            str(item["id"]),
            escape(f"{item.get('source_type')}:{item.get('source_id') or '-'}"),
            escape(str(item.get("target_task") or "-")),
            escape(str(item.get("created_at") or "")[:19]),
            reason,
        )
    out.print(table)


@dlq_app.command("replay")
def replay_cmd(
    ids: Annotated[list[int], typer.Argument(help="Dead-letter ids (see `headwater dlq list`).")],
    job_input: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="A JSON object to use as the job input instead of the stored payload.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Dispatch dead letters again; each becomes at most one job, however often replayed.

    Exits 1 when any of them is still refused (its dead letter stays, with the reason)."""
    parsed: dict[str, Any] | None = None
    if job_input is not None:
        try:
            value = json.loads(job_input)
        except json.JSONDecodeError as exc:
            _err().print(f"error: --input is not JSON: {exc}", markup=False)
            raise typer.Exit(2) from None
        if not isinstance(value, dict):
            _err().print("error: --input must be a JSON object, like '{\"id\": 1}'", markup=False)
            raise typer.Exit(2)
        parsed = value
    with _client(server, token) as client:
        outcomes = client.replay_dead_letters(list(ids), parsed)
    if as_json:
        _print_json(outcomes)
    else:
        out = Console(highlight=False)
        for o in outcomes:
            style = _REPLAY_STYLE.get(o["status"], "red")
            detail = o.get("job_id") or o.get("reason") or ""
            out.print(f"{o['id']}: [{style}]{o['status']}[/{style}] {escape(str(detail))}")
    if any(o["status"] not in ("created", "already_replayed") for o in outcomes):
        raise typer.Exit(1)
