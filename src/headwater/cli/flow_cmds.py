"""``headwater pause`` / ``headwater resume``: stop a task's jobs from starting (they
queue) or a trigger from reading its source (events stay in the broker or the source),
on every server and worker, until resumed; kept in the store across restarts."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from headwater.cli import app
from headwater.cli.client_cmds import JsonOpt, ServerOpt, TokenOpt, _client
from headwater.defaults import DEFAULT_SERVER

__all__ = ["pause", "resume"]


class Kind(StrEnum):
    TASK = "task"
    TRIGGER = "trigger"


KindArg = Annotated[Kind, typer.Argument(help="task or trigger", show_default=False)]
NameArg = Annotated[str, typer.Argument(help="Its name in the workspace.", show_default=False)]


def _set(
    kind: Kind, name: str, paused: bool, as_json: bool, server: str, token: str | None
) -> None:
    with _client(server, token) as client:
        result = client.set_paused(kind.value, name, paused)
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    state = "paused" if paused else "resumed"
    already = "" if result.get("changed") else f" (it was {'paused' if paused else 'not paused'})"
    typer.echo(f"{kind.value} {result.get('name', name)} {state}{already}")


@app.command(rich_help_panel="Server")
def pause(
    kind: KindArg,
    name: NameArg,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Pause a task (its jobs queue but do not start) or a trigger (it stops reading).

    \b
    headwater pause task nightly-report
    headwater pause trigger orders-queue
    """
    _set(kind, name, True, as_json, server, token)


@app.command(rich_help_panel="Server")
def resume(
    kind: KindArg,
    name: NameArg,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Resume a paused task (its queued jobs start) or trigger (it reads again)."""
    _set(kind, name, False, as_json, server, token)
