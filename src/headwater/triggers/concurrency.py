"""Strøm's scheduler ``concurrency`` policy: what a tick does while the trigger's previous
job is still pending or running.

- ``allow`` (the default): every tick starts a job.
- ``skip``: a tick does not start a job while one of this trigger's jobs is pending or
  running; it is recorded as a rejected event with the reason (``headwater dlq list``;
  ``dlq replay`` runs it with the replay's input), whose key marks the tick as handled.
- ``cancel_previous``: the trigger's pending and running jobs are cancelled (as
  ``headwater cancel`` does), then the tick's job starts.

The count comes from the store (jobs of the trigger's ``source_id``), so it holds across
restarts and whichever process owns the trigger. Several ticks due at once (``catch_up``)
count as consecutive: under ``skip`` only the first may start, under ``cancel_previous``
only the newest (the others would be cancelled at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from headwater.errors import ConflictError, NotFoundError
from headwater.store.base import JobFilter, JobStatus, Store
from headwater.workspace.models import SchedulerConcurrency

__all__ = ["Admission", "admit_ticks"]

log = structlog.get_logger(__name__)

_CANCEL_BATCH = 1000


@dataclass(slots=True)
class Admission:
    """The due ticks split into those that start a job and those that are skipped."""

    fire: list[datetime]
    skipped: list[datetime] = field(default_factory=list)
    reason: str = ""
    cancelled: list[str] = field(default_factory=list)


async def admit_ticks(
    store: Store,
    policy: SchedulerConcurrency,
    trigger: str,
    source_id: str,
    ticks: Sequence[datetime],
) -> Admission:
    """Apply ``policy`` to the trigger's due ``ticks`` (oldest first)."""
    ticks = list(ticks)
    if policy is SchedulerConcurrency.ALLOW or not ticks:
        return Admission(ticks)
    if policy is SchedulerConcurrency.SKIP:
        active = await store.count_in_flight(source_id)
        if active > 0:
            reason = (
                f"concurrency: skip: {active} job(s) of trigger {trigger!r} still pending or"
                " running"
            )
            log.info("scheduler_tick_skipped", trigger=trigger, active=active, ticks=len(ticks))
            return Admission([], ticks, reason)
        if len(ticks) > 1:
            reason = (
                f"concurrency: skip: the job of an earlier tick of trigger {trigger!r} starts"
                " in the same pass"
            )
            return Admission(ticks[:1], ticks[1:], reason)
        return Admission(ticks)
    cancelled = await _cancel_active(store, trigger, source_id)
    reason = (
        f"concurrency: cancel_previous: a newer tick of trigger {trigger!r} started in the"
        " same pass"
    )
    return Admission(ticks[-1:], ticks[:-1], reason, cancelled)


async def _cancel_active(store: Store, trigger: str, source_id: str) -> list[str]:
    cancelled: list[str] = []
    for status in (JobStatus.PENDING, JobStatus.RUNNING):
        jobs = await store.list_jobs(
            JobFilter(source_id=source_id, status=status, limit=_CANCEL_BATCH)
        )
        for job in jobs:
            try:
                await store.request_cancel(job.id)
            except (ConflictError, NotFoundError):
                continue  # it finished (or went) meanwhile
            cancelled.append(job.id)
            log.info(
                "scheduler_cancelled_previous",
                trigger=trigger,
                job_id=job.id,
                hint="concurrency: cancel_previous",
            )
    return cancelled
