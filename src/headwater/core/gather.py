"""Records of gathered events: a trigger's ``debounce`` or ``batch`` (workspace.flow).

An event of such a trigger is buffered in the store (``BufferedEvent``) instead of
becoming a job; the flush turns a due buffer into one job (``FlushedBuffer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from headwater.core.records import NewJob

__all__ = ["BufferOutcome", "BufferedEvent", "FlushedBuffer", "GatherKind", "GatherRule"]

# A debounced key gathers at most this many events per job; the rest make the next one
# (a job's input stays bounded however long the stream keeps the key busy).
MAX_DEBOUNCE_EVENTS = 10_000


class GatherKind(StrEnum):
    DEBOUNCE = "debounce"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class GatherRule:
    """When a buffer is due. Debounce: ``wait`` (the period) after its last event, at the
    latest ``max_wait`` after its first. Batch: ``wait`` (the window) after its first
    event, or at once when it holds ``size`` events."""

    kind: GatherKind
    wait: float
    max_wait: float | None = None
    size: int | None = None

    @property
    def limit(self) -> int:
        """The most events one job receives."""
        return self.size if self.size is not None else MAX_DEBOUNCE_EVENTS

    def due(self, first_at: datetime, now: datetime, count: int) -> datetime:
        """When a buffer opened at ``first_at``, holding ``count`` events after one
        arrived at ``now``, is due."""
        if self.kind is GatherKind.BATCH:
            if count >= self.limit:
                return now
            return first_at + timedelta(seconds=self.wait)
        due = now + timedelta(seconds=self.wait)
        if self.max_wait is not None:
            due = min(due, first_at + timedelta(seconds=self.max_wait))
        return now if count >= self.limit else due


@dataclass(frozen=True, slots=True)
class BufferedEvent:
    """One event to buffer. ``job``: what its own job would have been (its input, dedup
    key, and the task, tags and source the gathered job takes); ``key``: the rendered
    debounce/batch key."""

    rule: GatherRule
    key: str
    job: NewJob


@dataclass(frozen=True, slots=True)
class BufferOutcome:
    """``buffered``: stored now. Otherwise a duplicate of an event already buffered
    (``job_id`` None while its buffer waits) or already in job ``job_id``."""

    buffered: bool
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class FlushedBuffer:
    """A due buffer that became job ``job_id`` holding ``events`` events."""

    job_id: str
    source_id: str
    key: str
    task: str
    source_type: str
    events: int
