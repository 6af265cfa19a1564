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


# The module that registers each command. A command loads only its own module: the
# others cost a third of ``headwater jobs``. ``--help``, completion and unknown names
# load them all (tests/unit/test_cli_root.py checks this table against the modules).
COMMAND_MODULES = {
    "run": "run_cmds",
    "up": "run_cmds",
    "server": "cluster_cmds",
    "worker": "cluster_cmds",
    "worker-tokens": "cluster_cmds",
    "validate": "workspace_cmds",
    "tasks": "workspace_cmds",
    "triggers": "workspace_cmds",
    "jobs": "client_cmds",
    "job": "client_cmds",
    "logs": "client_cmds",
    "cancel": "client_cmds",
    "approve": "approval_cmds",
    "reject": "approval_cmds",
    "open": "open_cmds",
    "prune": "prune_cmds",
    "submit": "submit_cmds",
    "retry": "submit_cmds",
    "workers": "submit_cmds",
    "dlq": "dlq_cmds",
    "send-event": "outbox_cmds",
    "migrate": "outbox_cmds",
    "publisher": "outbox_cmds",
    "consumers": "sdk_cmds",
    "consumer": "sdk_cmds",
    "quarantine": "sdk_cmds",
    "pause": "flow_cmds",
    "resume": "flow_cmds",
}
_ALL_MODULES = (
    "approval_cmds",
    "run_cmds",
    "cluster_cmds",
    "workspace_cmds",
    "client_cmds",
    "open_cmds",
    "prune_cmds",
    "submit_cmds",
    "dlq_cmds",
    "outbox_cmds",
    "sdk_cmds",
    "flow_cmds",
)


def _register(command: str | None = None) -> None:
    """Add the commands to ``app``: only ``command``'s module when it is a known
    command, else all of them."""
    import importlib

    from headwater.cli.fast_params import install

    install()
    module = COMMAND_MODULES.get(command or "")
    for name in (module,) if module else _ALL_MODULES:
        importlib.import_module(f"headwater.cli.{name}")  # registers its commands


# The commands that run a store, a server or workers: they log through structlog.
_LOGGING_MODULES = frozenset(
    {"run_cmds", "cluster_cmds", "sdk_cmds", "outbox_cmds", "dlq_cmds", "prune_cmds"}
)


def _import_structlog_plain() -> None:
    """Import structlog without rich's traceback and pretty-printer modules.

    When rich is installed, structlog imports them (and pygments and attrs) at import
    time for its own exception rendering; our processors turn exceptions into text with
    ``format_exc_info`` before the renderer (logging_setup), so they would never be used,
    and loading them cost 0.1-0.2 s of CPU in every server, worker and supervisor. They
    import normally afterwards for anyone who asks."""
    import sys

    if "structlog" in sys.modules:
        return
    blocked = [name for name in ("rich.traceback", "rich.pretty") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def main() -> None:
    import os
    import sys

    args = sys.argv[1:]
    if args == ["--version"]:  # answered before the commands are even loaded
        from headwater import __version__

        print(f"headwater {__version__}")
        return
    completing = any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)
    command = None if completing or not args else args[0]
    if COMMAND_MODULES.get(command or "") in _LOGGING_MODULES:
        _import_structlog_plain()
    _register(command)
    app()
