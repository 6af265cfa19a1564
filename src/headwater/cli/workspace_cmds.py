"""``headwater validate``, ``headwater tasks``, ``headwater triggers``: read a workspace.

Exit codes: 0 valid, 1 the workspace has errors, 2 usage errors (no such path...).
Problems print as ``file:line:col: severity: message``, one per problem, all at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from headwater.cli import app
from headwater.cli.client_cmds import ServerOpt, TokenOpt
from headwater.defaults import DEFAULT_SERVER
from headwater.errors import Problem, Severity

if TYPE_CHECKING:  # the workspace models load where used, so --help stays fast
    from rich.console import Console

    from headwater.workspace.loader import Report
    from headwater.workspace.models import Task, Workspace

__all__ = ["task_rows", "trigger_rows"]

EXIT_INVALID = 1
EXIT_USAGE = 2

PathArg = Annotated[
    Path,
    typer.Argument(
        help="A workspace: a YAML file, a directory of *.yaml files, a Strøm folder"
        " (with .workflows/), or a config listing several (`workspaces:`).",
        metavar="PATH",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _check(path: Path, worker_tags: frozenset[str] = frozenset()) -> Report:
    from headwater.workspace.loader import check_workspace

    if not path.exists():
        _usage_error(f"{path}: no such file or directory")
    return check_workspace(path, worker_tags=worker_tags)


def _summary(problems: list[Problem]) -> str:
    counts = {s: sum(1 for p in problems if p.severity is s) for s in Severity}
    parts = [f"{n} {s.value}{'s' if n != 1 else ''}" for s, n in counts.items() if n]
    return ", ".join(parts)


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        typer.echo(problem.format())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


@app.command()
def validate(
    path: PathArg,
    as_json: JsonOpt = False,
    tags: Annotated[
        list[str] | None,
        typer.Option(
            "--tags",
            help="The tags `headwater up` will be given: steps needing other tags warn.",
        ),
    ] = None,
) -> None:
    """Check a workspace and print every problem at once (exit 1 when it has errors)."""
    wanted = frozenset(t.strip() for v in tags or [] for t in v.split(",") if t.strip())
    report = _check(path, wanted)
    if as_json:
        payload = {"valid": report.valid, "problems": [p.to_dict() for p in report.problems]}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        raise typer.Exit(0 if report.valid else EXIT_INVALID)
    _print_problems(report.problems)
    ws = report.workspace
    if ws is None:
        typer.echo(f"✗ {path}: {_summary(report.problems)}")
        raise typer.Exit(EXIT_INVALID)
    counts = ", ".join(
        (
            _plural(len(ws.actions), "action"),
            _plural(len(ws.tasks), "task"),
            _plural(len(ws.triggers), "trigger"),
        )
    )
    typer.echo(f"✓ {path}: {counts}")


def _valid_workspace(path: Path, as_json: bool) -> Workspace:
    report = _check(path)
    if report.workspace is None:
        out = sys.stderr if as_json else sys.stdout
        for problem in report.problems:
            print(problem.format(), file=out)
        raise typer.Exit(EXIT_INVALID)
    return report.workspace


def _input_schema(task: Task) -> dict[str, Any]:
    return {
        name: field.model_dump(mode="json", exclude_defaults=True) | {"type": field.type.value}
        for name, field in task.input.items()
    }


def task_rows(ws: Workspace) -> list[dict[str, Any]]:
    """What ``headwater tasks --json`` prints: one object per task."""
    rows = []
    for name, task in ws.tasks.items():
        steps = [
            {
                "name": step_name,
                "action": step.action,
                "inline": step.inline.type.value if step.inline is not None else None,
                "depends_on": list(step.depends_on),
            }
            for step_name, step in task.flow.items()
        ]
        rows.append(
            {
                "name": name,
                "description": task.description,
                "folder": task.folder,
                "mode": task.mode.value,
                "inputs": _input_schema(task),
                "steps": steps,
            }
        )
    return rows


def trigger_rows(ws: Workspace) -> list[dict[str, Any]]:
    """What ``headwater triggers PATH --json`` prints: one object per trigger."""
    from headwater.workspace.models import EventSourceTrigger, SchedulerTrigger, WebhookTrigger

    rows: list[dict[str, Any]] = []
    for name, trigger in ws.triggers.items():
        row: dict[str, Any] = {
            "name": name,
            "type": trigger.type,
            "task": trigger.task,
            "target_task": None,
            "enabled": trigger.enabled,
            "description": trigger.description,
        }
        if isinstance(trigger, SchedulerTrigger):
            row.update(cron=trigger.cron, timezone=trigger.timezone, catch_up=trigger.catch_up)
        elif isinstance(trigger, WebhookTrigger):
            hook = trigger.name or name
            row.update(
                path=f"/hooks/{hook}",
                mode=trigger.mode.value,
                authenticated=trigger.secret is not None,
            )
        elif isinstance(trigger, EventSourceTrigger):
            row.update(
                target_task=trigger.target_task,
                restart_policy=trigger.restart_policy.value,
                backoff_secs=trigger.backoff_secs,
                max_in_flight=trigger.max_in_flight,
            )
        else:  # a built-in receiver: it feeds its target task directly
            row.update(target_task=trigger.target_task, max_in_flight=trigger.max_in_flight)
        rows.append(row)
    return rows


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@app.command()
def tasks(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A workspace to read; without it, the running server's tasks (with "
            "whether each is paused).",
            metavar="[PATH]",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List the tasks a workspace defines (or a running server serves)."""
    from rich.table import Table
    from rich.text import Text

    if path is None:
        _server_tasks(server, token, as_json)
        return
    rows = task_rows(_valid_workspace(path, as_json))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("task", "mode", "inputs", "steps", title=None, box=None, pad_edge=False)
    for row in rows:
        inputs = ", ".join(
            f"{k}: {v['type']}{'' if not v.get('required') else '*'}"
            for k, v in row["inputs"].items()
        )
        steps = " → ".join(s["name"] for s in row["steps"])
        table.add_row(Text(row["name"]), Text(row["mode"]), Text(inputs), Text(steps))
    _console().print(table)


def _server_tasks(server: str, token: str | None, as_json: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from headwater.cli.client_cmds import _client

    with _client(server, token) as client:
        rows = client.list_tasks()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("task", "mode", "state", "steps", title=None, box=None, pad_edge=False)
    for row in rows:
        state = Text("paused", style="yellow") if row.get("paused") else Text("active")
        steps = " → ".join(s["name"] for s in row.get("steps", []))
        table.add_row(Text(row["name"]), Text(str(row.get("mode", ""))), state, Text(steps))
    _console().print(table)


def _trigger_detail(row: dict[str, Any]) -> str:
    if row["type"] == "scheduler":
        return f"cron {row['cron']} ({row['timezone']})"
    if row["type"] == "webhook":
        return f"POST {row['path']} ({row['mode']})"
    in_flight = row["max_in_flight"] if row["max_in_flight"] is not None else "∞"
    return (
        f"→ {row['target_task']}, restart {row['restart_policy']},"
        f" backoff {row['backoff_secs']:g}s, max_in_flight {in_flight}"
    )


_TRIGGER_ACTIONS = ("restart", "release")


@app.command()
def triggers(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A workspace PATH to read; or 'restart'/'release' followed by a trigger "
            "NAME; without it, the running server's triggers with their live state.",
            metavar="[PATH | restart NAME | release NAME]",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Argument(hidden=True, show_default=False)] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List triggers (of a workspace, or of a running server), or act on one.

    \b
    headwater triggers examples/orders      what the workspace defines
    headwater triggers --json               live state from the server
    headwater triggers restart NAME         start an idle or backing-off event source
    headwater triggers release NAME         release a quarantined event source
    """
    from headwater.cli.server_triggers import list_server_triggers, trigger_action

    if target in _TRIGGER_ACTIONS:
        if not name:
            _usage_error(f"which trigger? write: headwater triggers {target} NAME")
        trigger_action(server, token, target, name, as_json)
        return
    if name is not None:
        _usage_error(f"unexpected argument {name!r}; write: headwater triggers [PATH] [--json]")
    if target is None:
        list_server_triggers(server, token, as_json)
        return
    path = Path(target)
    if not path.exists():
        _usage_error(f"{target!r} is not a workspace file or directory")
    rows = trigger_rows(_valid_workspace(path, as_json))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("trigger", "type", "task", "enabled", "detail", box=None, pad_edge=False)
    for row in rows:
        table.add_row(
            Text(row["name"]),
            Text(row["type"]),
            Text(row["task"]),
            Text("yes" if row["enabled"] else "no"),
            Text(_trigger_detail(row)),
        )
    _console().print(table)
