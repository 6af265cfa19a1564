"""The claim on SQLite and PostgreSQL: the dialect's fast path, then, for jobs with flow
limits, the limited lane of ``store.flow`` in rounds (see that module's doc)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headwater.store import queries as q
from headwater.store.base import Channel, JobRecord, StepRecord
from headwater.store.fastpath import FastPath, HeldRow, hint
from headwater.store.flow import MAX_ROUNDS, LimitedClaim, WakeTimer, claim_limited, wake_ups
from headwater.store.ids import utcnow

__all__ = ["ClaimOps"]

log = structlog.get_logger(__name__)


class ClaimOps:
    """Mixed into SqlStore: needs ``_fast``, ``_pg``, ``_write()``, ``_reader`` and
    ``_steps_by_job``."""

    _fast: FastPath
    _pg: bool
    _reader: AsyncEngine
    _rate_wake: WakeTimer

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def _steps_by_job(
        self, conn: AsyncConnection, job_ids: Sequence[str]
    ) -> dict[str, list[StepRecord]]:
        raise NotImplementedError

    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]:
        if limit <= 0 or not tag_signatures:
            return []
        signatures = list(dict.fromkeys(tag_signatures))
        claimed, held = await self._fast.claim(worker_id, signatures, limit, utcnow())
        if not held:  # the usual case: no flow limits in the window
            return claimed
        full: tuple[set[str], set[str]] = (set(), set())
        for _ in range(MAX_ROUNDS):
            room = limit - len(claimed)
            if not held or room <= 0:
                break
            lane = await self._claim_limited(worker_id, signatures, held, room)
            claimed += lane.claimed
            new_keys = lane.full_keys - full[0], lane.full_rates - full[1]
            if not lane.claimed and not new_keys[0] and not new_keys[1]:
                break  # nothing moved: another round would see the same
            full[0].update(lane.full_keys)
            full[1].update(lane.full_rates)
            room = limit - len(claimed)
            if room <= 0:
                break
            aside = (sorted(full[0]), sorted(full[1]))
            more, held = await self._fast.claim(worker_id, signatures, room, utcnow(), aside)
            claimed += more
        claimed.sort(key=lambda j: (j.created_at, j.id))
        return claimed

    async def _claim_limited(
        self, worker_id: str, signatures: list[str], held: list[HeldRow], room: int
    ) -> LimitedClaim:
        async with self._write() as tx:
            lane = await claim_limited(tx.conn, self._pg, worker_id, signatures, held, room, utcnow)
            if lane.lines:
                await tx.conn.execute(q.insert_logs(), lane.lines)
            for channel, ids in wake_ups(lane):
                if channel is Channel.FINISHED:
                    await tx.notify(channel, [hint(ids)])
                else:
                    await tx.notify(channel, ids)
        self._rate_wake.wake_at(lane.retry_at)
        for job_id in lane.skipped:
            log.info("store.job_skipped", job_id=job_id, reason="concurrency skip_new")
        if lane.cancel_requested:
            log.info("store.cancel_running", job_ids=lane.cancel_requested)
        return lane
