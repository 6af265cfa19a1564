"""The ``headwater`` command line (typer). Each group of commands lives in its own module
and registers itself on ``app``; this module only assembles them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="headwater",
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
    # Imported for their side effect of adding commands to ``app``.
    from headwater.cli import (  # noqa: F401
        approval_cmds,
        client_cmds,
        cluster_cmds,
        dlq_cmds,
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
