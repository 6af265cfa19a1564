"""``headwater approve JOB STEP`` and ``headwater reject JOB STEP``: decide an approval
step through the server's API (``/api/jobs/{id}/steps/{step}/approve|reject``)."""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer

from headwater.cli import app
from headwater.cli.client_cmds import (
    JsonOpt,
    ServerOpt,
    TokenOpt,
    _client,
    _print_json,
    _status,
)
from headwater.defaults import DEFAULT_SERVER

__all__ = ["approve", "reject"]

JobArg = Annotated[str, typer.Argument(help="The job's id, or 8+ of its first or last characters.")]
StepArg = Annotated[str, typer.Argument(help="The approval step's name.")]
ApproverOpt = Annotated[
    str | None,
    typer.Option("--as", help="Who decides (recorded as approved_by). Default: your login."),
]


def _who(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def _show(data: dict[str, Any], step: str, as_json: bool) -> None:
    if as_json:
        _print_json(data)
        return
    found: dict[str, Any] = next((s for s in data.get("steps", []) if s["name"] == step), {})
    from rich.console import Console
    from rich.markup import escape

    out = Console(highlight=False)
    out.print(
        f"job {escape(data['id'])} step {escape(step)} {_status(found.get('status', '?'))};"
        f" job {_status(data['status'])}"
    )


@app.command(rich_help_panel="Server")
def approve(
    job_id: JobArg,
    step: StepArg,
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input", help="JSON object: the approver's input (the step's output.input)."
        ),
    ] = None,
    approver: ApproverOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Approve a step waiting for approval; the job goes on."""
    body: dict[str, Any] = {"approved": True, "approver": _who(approver)}
    if input_json is not None:
        try:
            given = json.loads(input_json)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
        if not isinstance(given, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--input")
        body["input"] = given
    with _client(server, token) as client:
        data = client.decide_step(job_id, step, "approve", body)
    _show(data, step, as_json)


@app.command(rich_help_panel="Server")
def reject(
    job_id: JobArg,
    step: StepArg,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (the step's error).")] = None,
    approver: ApproverOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Reject a step waiting for approval; it fails (as any failed step)."""
    body: dict[str, Any] = {"approver": _who(approver)}
    if reason is not None:
        body["reason"] = reason
    with _client(server, token) as client:
        data = client.decide_step(job_id, step, "reject", body)
    _show(data, step, as_json)
