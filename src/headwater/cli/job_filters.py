"""The job filters ``headwater retry`` and ``headwater cancel`` take for bulk actions
(typer option types only: this module loads with those commands, so it stays light)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = [
    "DryRunOpt",
    "LimitOpt",
    "SinceOpt",
    "SourceIdOpt",
    "SourceTypeOpt",
    "StatusOpt",
    "TaskOpt",
    "UntilOpt",
]

_PANEL = "Bulk (instead of a job id)"

TaskOpt = Annotated[
    str | None, typer.Option("--task", help="Jobs of this task.", rich_help_panel=_PANEL)
]
StatusOpt = Annotated[
    str | None,
    typer.Option(
        "--status",
        help="Jobs in this status (cancel: pending or running, default both; retry: a final "
        "status, default failed).",
        rich_help_panel=_PANEL,
    ),
]
SourceTypeOpt = Annotated[
    str | None,
    typer.Option(
        "--source-type", help="Jobs from this source type (webhook, scheduler…).",
        rich_help_panel=_PANEL,
    ),
]  # fmt: skip
SourceIdOpt = Annotated[
    str | None,
    typer.Option("--source-id", help="Jobs from this source id.", rich_help_panel=_PANEL),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Jobs created at or after: an ISO 8601 time, or an age such as 30m, 2h, 1d.",
        rich_help_panel=_PANEL,
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until", help="Jobs created before: an ISO 8601 time or an age.", rich_help_panel=_PANEL
    ),
]
LimitOpt = Annotated[
    int,
    typer.Option("--limit", min=1, max=10_000, help="Touch at most this many jobs.",
                 rich_help_panel=_PANEL),
]  # fmt: skip
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Only show the jobs that would be touched.", rich_help_panel=_PANEL
    ),
]
