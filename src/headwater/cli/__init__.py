"""The ``headwater`` command line (typer). Each group of commands lives in its own module
and registers itself on ``app``; this module only assembles them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="headwater",
    help="Event-driven job orchestrator: turn events into durable, observable jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from headwater.cli import client_cmds, run_cmds, workspace_cmds  # noqa: F401


def main() -> None:
    _register()
    app()
