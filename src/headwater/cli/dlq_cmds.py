"""``headwater dlq list / replay``: the events that could not become jobs.

Every trigger stores what it cannot turn into a job (invalid input, an undecodable broker
message) with the reason, and acknowledges it so the source is never blocked; an outbox
consumer stores the events its handler kept failing on. These commands show them and,
once the cause is fixed (or with a corrected ``--input``), dispatch them again.

They talk to a running server (``--server``), or with ``--db URL`` to the database
directly (an outbox pipeline has no server); replaying a trigger's dead letter that way
needs the workspace (``--workspace PATH``) to validate the task's input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from headwater.cli import app
from headwater.cli.client_cmds import JsonOpt, ServerOpt, TokenOpt, _client, _err, _print_json
from headwater.defaults import DEFAULT_SERVER
from headwater.errors import HeadwaterError

__all__ = ["dlq_app"]

DirectDbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Read the database directly instead of asking a server (no server needed).",
        show_default=False,
    ),
]
WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        help="With --db: the workspace a trigger's dead letter is validated against.",
        show_default=False,
    ),
]

dlq_app = typer.Typer(
    rich_markup_mode=None,
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
    db: DirectDbOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List dead letters, newest first (those not replayed yet, unless --all)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if db is not None:
        found = _direct(db, lambda store: _list_direct(store, source_id, limit, not show_all))
    else:
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
        # The first line says why; the rest (a consumer's traceback) is in --json.
        reason = escape(str(item.get("reason") or "").split("\n", 1)[0])
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
    db: DirectDbOpt = None,
    workspace: WorkspaceOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Dispatch dead letters again; each becomes at most one job, however often replayed.

    A consumer's dead letter goes back through the outbox, for that consumer only.

    Exits 1 when any of them is still refused (its dead letter stays, with the reason)."""
    from rich.console import Console
    from rich.markup import escape

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
    if db is not None:
        outcomes = _direct(db, lambda store: _replay_direct(store, list(ids), parsed, workspace))
    else:
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


# -- direct mode (--db) --------------------------------------------------------------
def _direct(db: str, work: Any) -> Any:
    import asyncio

    async def run() -> Any:
        from headwater.store.sql import open_store

        store = await open_store(db)
        try:
            return await work(store)
        finally:
            await store.close()

    from headwater.logging_setup import configure_logging

    configure_logging("warning")
    try:
        return asyncio.run(run())
    except HeadwaterError as exc:
        _err().print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


async def _list_direct(
    store: Any, source_id: str | None, limit: int, pending: bool
) -> list[dict[str, Any]]:
    from headwater.server.json_shapes import rejected_json

    found = await store.list_rejected(source_id, limit, pending_only=pending)
    return [rejected_json(r) for r in found]


async def _replay_direct(
    store: Any, ids: list[int], job_input: dict[str, Any] | None, workspace: Path | None
) -> list[dict[str, Any]]:
    from headwater.dispatch.dispatcher import Dispatcher
    from headwater.sdk.dead_letters import replay_dead_letters
    from headwater.workspace import load_workspace
    from headwater.workspace.models import Workspace

    ws = load_workspace(workspace) if workspace is not None else Workspace()
    outcomes = await replay_dead_letters(store, Dispatcher(store, lambda: ws), ids, job_input)
    result = [o.to_api() for o in outcomes]
    if workspace is None:
        for item in result:
            if item["status"] == "still_invalid" and "is not defined" in (item["reason"] or ""):
                item["reason"] += " (pass --workspace PATH to replay a trigger's dead letter)"
    return result
