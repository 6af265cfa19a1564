"""``headwater prune``: delete old finished jobs, logs and rejected events once.

The same batches as the running retention (``up``/``server --retention``): each batch is
one short transaction, so it can run next to a live headwater. Pending and running jobs
are never deleted.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from headwater.cli import app
from headwater.cli.run_cmds import DbOpt, default_db_url
from headwater.errors import ConfigError, HeadwaterError

if TYPE_CHECKING:  # imported where used, so that ``headwater --help`` stays fast
    from rich.console import Console

    from headwater.store.base import PruneCounts
    from headwater.store.retention import RetentionPolicy

__all__ = ["prune_cmd"]


def _policy(older_than: str, statuses: list[str] | None, logs: str | None) -> RetentionPolicy:
    from headwater.store.retention import FINAL_STATUSES, RetentionPolicy, parse_age

    age = parse_age(older_than)
    wanted = [s.strip().lower() for v in statuses or [] for s in v.split(",") if s.strip()]
    known = {s.value: s for s in FINAL_STATUSES}
    for name in wanted:
        if name not in known and name != "rejected":
            raise ConfigError(
                f"--status {name!r}: choose completed, failed, cancelled or rejected "
                "(pending and running jobs are never deleted)"
            )
    chosen = wanted or [*known, "rejected"]
    jobs = {known[n]: age for n in chosen if n in known}
    return RetentionPolicy(
        jobs,
        logs=parse_age(logs) if logs else None,
        rejected=age if "rejected" in chosen else None,
    )


@app.command("prune", rich_help_panel="Server")
def prune_cmd(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete what finished longer ago than this: 30d, 12h, 2w."
        ),
    ],
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Only these: completed, failed, cancelled, rejected (repeat or comma-"
            "separate). Default: all of them.",
        ),
    ] = None,
    log_older_than: Annotated[
        str | None,
        typer.Option("--logs-older-than", help="Also delete log lines older than this."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per transaction.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
    db: DbOpt = None,
) -> None:
    """Delete finished jobs (with their steps and logs) and rejected events older than
    --older-than, in batches; prints progress, then the counts."""
    import asyncio

    from rich.console import Console

    from headwater.logging_setup import configure_logging

    configure_logging("warning")
    err = Console(stderr=True, highlight=False)
    try:
        policy = _policy(older_than, status, log_older_than)
        total = asyncio.run(_prune(db or default_db_url(), policy, batch, dry_run, as_json, err))
    except HeadwaterError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    counts = {
        "dry_run": dry_run,
        "jobs": total.jobs,
        "steps": total.steps,
        "logs": total.logs,
        "rejected_events": total.rejected,
    }
    if as_json:
        typer.echo(json.dumps(counts))
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {total.jobs} jobs ({total.steps} steps, {total.logs} log lines) "
        f"and {total.rejected} rejected events"
    )


async def _prune(
    url: str, policy: RetentionPolicy, batch: int, dry_run: bool, quiet: bool, err: Console
) -> PruneCounts:
    from headwater.store.base import PruneCounts
    from headwater.store.retention import prune
    from headwater.store.sql import open_store

    store = await open_store(url)
    done = PruneCounts()

    def progress(kind: str, counts: PruneCounts) -> None:
        nonlocal done
        done = done + counts
        if not quiet and not dry_run:
            err.print(
                f"\r{kind}: {done.jobs} jobs, {done.logs} log lines, "
                f"{done.rejected} rejected events deleted…",
                end="",
                markup=False,
            )

    try:
        return await prune(store, policy, batch=batch, dry_run=dry_run, on_batch=progress)
    finally:
        if not quiet and not dry_run:
            err.print("", markup=False)
        await store.close()
