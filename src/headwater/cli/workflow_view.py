"""``headwater job ID`` for a workflow run: its recorded calls, in call order."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["is_workflow_wait", "print_workflow_steps"]


def is_workflow_wait(step: Mapping[str, Any]) -> bool:
    """A suspended step that is a workflow waiting (not an approval)."""
    output = step.get("output")
    return isinstance(output, Mapping) and output.get("workflow") == "waiting"


def print_workflow_steps(
    out: Console,
    calls: Sequence[Mapping[str, Any]],
    status: Callable[[str], str],
    duration: Callable[[Any, Any], str],
) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for column in ("#", "CALL", "KIND", "STATUS", "ATTEMPTS", "DURATION", "OUTPUT / ERROR"):
        table.add_column(column, no_wrap=column != "OUTPUT / ERROR")
    for c in calls:
        shown = c.get("error") or json.dumps(c.get("output"), ensure_ascii=False)
        table.add_row(
            str(c["seq"]),
            escape(str(c["name"])),
            escape(str(c["kind"])),
            status(str(c["status"])),
            str(c.get("attempts", 1)),
            duration(c.get("started_at"), c.get("finished_at")),
            escape(shown[:200]),
        )
    out.print()
    out.print("[bold]workflow calls[/bold]")
    out.print(table)
