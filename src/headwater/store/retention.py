"""Retention: finished jobs (with their steps and logs), log lines and rejected events
older than a policy's ages are deleted in small batches.

A policy is written ``30d`` (every final status), or per status and kind,
``completed=7d,failed=30d,cancelled=7d,rejected=30d`` (a bare age in the list is the
default for the rest: ``30d,completed=7d``); log lines have their own age
(``--log-retention 7d``), so a failed job can be kept for a month and its log for a week.
Ages take ``s``, ``m``, ``h``, ``d`` or ``w``. Pending and running jobs are never deleted,
whatever their age. Each batch (``batch`` rows, 1,000 by default) is one short
transaction; the loop yields between batches, so ingest never waits long behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from headwater.errors import ConfigError
from headwater.store.base import JobStatus, PruneCounts, Store
from headwater.store.ids import utcnow

__all__ = [
    "FINAL_STATUSES",
    "RetentionPolicy",
    "parse_age",
    "parse_retention",
    "prune",
    "run_retention",
]

log = structlog.get_logger(__name__)

FINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_age(text: str) -> timedelta:
    """``30d`` → 30 days; ``s``/``m``/``h``/``d``/``w``. Raises ConfigError."""
    match = _AGE.match(text)
    if match is None:
        raise ConfigError(f"retention age {text!r}: write a number and a unit, e.g. 30d or 12h")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How old each kind of row may get; None keeps it forever."""

    jobs: dict[JobStatus, timedelta] = field(default_factory=dict)
    logs: timedelta | None = None
    rejected: timedelta | None = None

    @property
    def empty(self) -> bool:
        return not self.jobs and self.logs is None and self.rejected is None

    def describe(self) -> str:
        parts = [f"{s.value}={_fmt(age)}" for s, age in self.jobs.items()]
        if self.rejected is not None:
            parts.append(f"rejected={_fmt(self.rejected)}")
        if self.logs is not None:
            parts.append(f"logs={_fmt(self.logs)}")
        return ",".join(parts) or "keep everything"


def _fmt(age: timedelta) -> str:
    seconds = age.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def parse_retention(text: str | None, log_text: str | None = None) -> RetentionPolicy:
    """``--retention`` (and ``--log-retention``) → a policy. Raises ConfigError."""
    jobs: dict[JobStatus, timedelta] = {}
    rejected: timedelta | None = None
    default: timedelta | None = None
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            default = parse_age(key)
            continue
        key = key.strip().lower()
        if key == "rejected":
            rejected = parse_age(value)
            continue
        try:
            status = JobStatus(key)
        except ValueError:
            status = None
        if status is None or status not in FINAL_STATUSES:
            raise ConfigError(
                f"retention {key!r}: choose completed, failed, cancelled or rejected "
                "(pending and running jobs are never deleted)"
            )
        jobs[status] = parse_age(value)
    if default is not None:
        for status in FINAL_STATUSES:
            jobs.setdefault(status, default)
        rejected = rejected if rejected is not None else default
    logs = parse_age(log_text) if log_text else None
    return RetentionPolicy(jobs, logs, rejected)


async def prune(
    store: Store,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    batch: int = 1000,
    dry_run: bool = False,
    pause: float = 0.0,
    on_batch: Callable[[str, PruneCounts], None] | None = None,
) -> PruneCounts:
    """Apply ``policy`` once, batch after batch, until nothing is left to delete; returns
    the total. ``pause`` seconds between batches (0: just yield). ``on_batch(kind, counts)``
    after each batch (progress). A dry run counts what would go, in one query per kind."""
    now = now or utcnow()
    total = PruneCounts()

    async def step(kind: str, counts: PruneCounts) -> bool:
        nonlocal total
        total = total + counts
        if on_batch is not None:
            on_batch(kind, counts)
        more = counts.jobs + counts.logs + counts.rejected > 0 and not dry_run
        await asyncio.sleep(pause if more else 0)
        return more

    for status, age in policy.jobs.items():
        while await step(status.value, await store.prune_jobs(status, now - age, batch, dry_run)):
            pass
    if policy.rejected is not None:
        cutoff = now - policy.rejected
        while await step(
            "rejected", PruneCounts(rejected=await store.prune_rejected(cutoff, batch, dry_run))
        ):
            pass
    if policy.logs is not None:
        cutoff = now - policy.logs
        while await step("logs", PruneCounts(logs=await store.prune_logs(cutoff, batch, dry_run))):
            pass
    return total


async def run_retention(
    store: Store,
    policy: RetentionPolicy,
    stop: asyncio.Event,
    interval: float = 300.0,
    batch: int = 1000,
    pause: float = 0.05,
) -> None:
    """Apply ``policy`` now and every ``interval`` seconds until ``stop``."""
    log.info("retention_started", policy=policy.describe(), interval=interval)
    while not stop.is_set():
        try:
            total = await prune(store, policy, batch=batch, pause=pause)
            if total.jobs or total.logs or total.rejected:
                log.info(
                    "retention_pruned",
                    jobs=total.jobs,
                    steps=total.steps,
                    logs=total.logs,
                    rejected=total.rejected,
                )
        except Exception:
            log.exception("retention_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
