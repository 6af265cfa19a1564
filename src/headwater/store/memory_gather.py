"""Debounce and batch buffers for ``InMemoryStore`` (the rules of ``store.gather_ops``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from headwater.core.gather import BufferedEvent, BufferOutcome, FlushedBuffer, GatherRule
from headwater.store.base import CursorRecord, InsertOutcome, JobRecord, NewJob
from headwater.store.gather_ops import gathered_input
from headwater.store.ids import utcnow
from headwater.store.jsoncopy import json_copy

__all__ = ["MemoryGatherOps"]


@dataclass(slots=True)
class _Buffer:
    rule: GatherRule
    job: NewJob  # the newest event's: the task, tags and source of the gathered job
    first_at: datetime
    due_at: datetime
    events: list[tuple[str | None, Any, datetime]] = field(default_factory=list)


class MemoryGatherOps:
    """Mixed into InMemoryStore."""

    jobs: dict[str, JobRecord]
    cursors: dict[str, CursorRecord]
    # (trigger, key) → its buffer; (trigger, dedup key) → job id (None: still buffered)
    gather_buffers: dict[tuple[str, str], _Buffer]
    gather_seen: dict[tuple[str, str], str | None]

    async def insert_jobs(
        self, jobs: Sequence[NewJob], cursor: tuple[str, str] | None = None
    ) -> list[InsertOutcome]:
        raise NotImplementedError  # provided by InMemoryStore

    async def buffer_events(
        self, events: Sequence[BufferedEvent], cursor: tuple[str, str] | None = None
    ) -> list[BufferOutcome]:
        inputs = [json_copy(dict(e.job.input)) for e in events]  # strict: fails them all
        by_key = {j.dedup_key: j.id for j in self.jobs.values() if j.dedup_key is not None}
        now = utcnow()
        outcomes: list[BufferOutcome] = []
        for event, job_input in zip(events, inputs, strict=True):
            source, dedup = event.job.source_id or "", event.job.dedup_key
            if dedup is not None:
                seen = (source, dedup)
                if seen in self.gather_seen and self._live(seen):
                    outcomes.append(BufferOutcome(False, self.gather_seen[seen]))
                    continue
                if dedup in by_key:
                    outcomes.append(BufferOutcome(False, by_key[dedup]))
                    continue
                self.gather_seen[seen] = None
            buffer = self.gather_buffers.get((source, event.key))
            if buffer is None:
                buffer = _Buffer(event.rule, event.job, now, now)
                self.gather_buffers[(source, event.key)] = buffer
            buffer.events.append((dedup, job_input, now))
            buffer.rule, buffer.job = event.rule, event.job
            buffer.due_at = event.rule.due(buffer.first_at, now, len(buffer.events))
            outcomes.append(BufferOutcome(True))
        if cursor is not None:
            self.cursors[cursor[0]] = CursorRecord(cursor[0], cursor[1], now)
        return outcomes

    def _live(self, seen: tuple[str, str]) -> bool:
        """A flushed event counts while its job exists (SQL: ON DELETE CASCADE)."""
        job_id = self.gather_seen[seen]
        return job_id is None or job_id in self.jobs

    async def flush_buffers(self, now: datetime, limit: int = 100) -> list[FlushedBuffer]:
        due = sorted((b.due_at, k) for k, b in self.gather_buffers.items() if b.due_at <= now)[
            :limit
        ]
        flushed: list[FlushedBuffer] = []
        for _, (source, key) in due:
            buffer = self.gather_buffers[(source, key)]
            taken = buffer.events[: buffer.rule.limit]
            job = dataclasses.replace(
                buffer.job,
                input=gathered_input(key, [e[1] for e in taken]),
                dedup_key=None,
                parent_job_id=None,
                id=None,
            )
            (outcome,) = await self.insert_jobs([job])
            for dedup, _, _ in taken:
                if dedup is not None:
                    self.gather_seen[(source, dedup)] = outcome.id
            rest = buffer.events[len(taken) :]
            if rest:
                buffer.events, buffer.first_at = rest, rest[0][2]
                buffer.due_at = buffer.rule.due(buffer.first_at, now, len(rest))
            else:
                del self.gather_buffers[(source, key)]
            flushed.append(
                FlushedBuffer(outcome.id, source, key, job.task, job.source_type, len(taken))
            )
        return flushed

    async def next_buffer_due(self) -> datetime | None:
        return min((b.due_at for b in self.gather_buffers.values()), default=None)

    async def count_buffered(self, source_id: str) -> int:
        return sum(len(b.events) for (s, _), b in self.gather_buffers.items() if s == source_id)
