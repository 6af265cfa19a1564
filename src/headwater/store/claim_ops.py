"""The claim on SQLite and PostgreSQL: the dialect's fast path, then, for jobs with flow
limits that it held back, the limited lane (``store.flow``) in rounds. SQLite runs the
whole claim in one transaction of its fast path and never hands jobs back as held; on
PostgreSQL the lane is ``store.flow_pg``."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store.base import JobRecord
from headwater.store.fastpath import FastPath, HeldRow, driver_connection
from headwater.store.flow import MAX_ROUNDS, LimitedClaim, WakeTimer
from headwater.store.flow_pg import pg_lane
from headwater.store.ids import utcnow

__all__ = ["ClaimOps"]

log = structlog.get_logger(__name__)


class ClaimOps:
    """Mixed into SqlStore: needs ``_fast``, ``_engine`` and ``_rate_wake``."""

    _fast: FastPath
    _engine: AsyncEngine
    _rate_wake: WakeTimer

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
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            lane = await pg_lane(db, worker_id, signatures, held, room, utcnow)
        self._rate_wake.wake_at(lane.retry_at)
        for job_id in lane.skipped:
            log.info("store.job_skipped", job_id=job_id, reason="concurrency skip_new")
        if lane.cancel_requested:
            log.info("store.cancel_running", job_ids=lane.cancel_requested)
        return lane
