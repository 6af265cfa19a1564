"""The ``headwater`` command line (typer). Each group of commands lives in its own module
and registers itself on ``app``; this module only assembles them.

Start-up time matters (``headwater jobs`` is typed all day): a command module imports at
its top only typer and small headwater modules; rich, asyncio, the store, the HTTP client
and pydantic load inside the commands that use them. Help is click's plain text, grouped
by panel here, because typer's rich help costs a quarter of a second to import.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

_DEFAULT_PANEL = "Commands"


class _PanelGroup(TyperGroup):
    """Plain help that still lists the commands by their ``rich_help_panel``."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        panels: dict[str, list[tuple[str, Any]]] = {_DEFAULT_PANEL: []}
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            panel = getattr(command, "rich_help_panel", None) or _DEFAULT_PANEL
            panels.setdefault(panel, []).append((name, command))
        widest = max((len(name) for rows in panels.values() for name, _ in rows), default=0)
        limit = formatter.width - 6 - widest
        for title, rows in panels.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl([(name, c.get_short_help_str(limit)) for name, c in rows])


app = typer.Typer(
    name="headwater",
    cls=_PanelGroup,
    rich_markup_mode=None,
    help="Event-driven job orchestrator: turn events into durable, observable jobs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from headwater import __version__

        typer.echo(f"headwater {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Event-driven job orchestrator: turn events into durable, observable jobs."""


def _register() -> None:
    from headwater.cli.fast_params import install

    install()
    # Imported for their side effect of adding commands to ``app``.
    from headwater.cli import (  # noqa: F401
        client_cmds,
        cluster_cmds,
        dlq_cmds,
        open_cmds,
        outbox_cmds,
        prune_cmds,
        run_cmds,
        sdk_cmds,
        submit_cmds,
        workspace_cmds,
    )


def main() -> None:
    import sys

    if sys.argv[1:] == ["--version"]:  # answered before the commands are even loaded
        from headwater import __version__

        print(f"headwater {__version__}")
        return
    _register()
    app()
