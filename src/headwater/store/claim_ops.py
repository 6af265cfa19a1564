"""The claim on SQLite and PostgreSQL: the dialect's fast path and, for jobs with flow
limits, ``store.flow``'s decision. SQLite runs the whole claim in one transaction of its
fast path and never hands jobs back as held. On PostgreSQL the claim with limits is one
call of the function ``headwater_claim_flow`` (``store.flow_pg``), in rounds that set
full keys aside.

The fast path stays the claim while no job with limits comes up; once one does, this
store claims through the function (one round trip, like the fast path, which would only
pass the limited jobs over and cost a second), until a call finds none in its window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store.base import JobRecord
from headwater.store.fastpath import FastPath, driver_connection
from headwater.store.flow import MAX_ROUNDS, WakeTimer
from headwater.store.flow_pg import FlowClaim, pg_claim_flow
from headwater.store.ids import utcnow

__all__ = ["ClaimOps"]

log = structlog.get_logger(__name__)

# A round that only met keys another claimer held waits this long before the next
# (that claimer commits within a round trip or two).
BUSY_PAUSE = 0.001


class ClaimOps:
    """Mixed into SqlStore: needs ``_fast``, ``_engine`` and ``_rate_wake``."""

    _fast: FastPath
    _engine: AsyncEngine
    _rate_wake: WakeTimer
    _flow_seen: bool = False  # the last claim met jobs with limits (PostgreSQL)

    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]:
        if limit <= 0 or not tag_signatures:
            return []
        signatures = list(dict.fromkeys(tag_signatures))
        claimed: list[JobRecord] = []
        if not self._flow_seen:
            claimed, held = await self._fast.claim(worker_id, signatures, limit, utcnow())
            if not held:  # the usual case: no flow limits in the window
                return claimed
            self._flow_seen = True
        full: tuple[set[str], set[str]] = (set(), set())
        for round_ in range(MAX_ROUNDS):
            room = limit - len(claimed)
            if room <= 0:
                break
            aside = (sorted(full[0]), sorted(full[1]))
            lane = await self._claim_flow(worker_id, signatures, room, aside)
            claimed += lane.claimed
            if not lane.held:
                if not aside[0] and not aside[1]:
                    self._flow_seen = False  # back to the fast path
                break
            new_keys = lane.full_keys - full[0], lane.full_rates - full[1]
            full[0].update(lane.full_keys)
            full[1].update(lane.full_rates)
            if not lane.claimed and not new_keys[0] and not new_keys[1]:
                if not lane.busy_keys or round_ == MAX_ROUNDS - 1:
                    break  # nothing moved: another round would see the same
                await asyncio.sleep(BUSY_PAUSE)
        claimed.sort(key=lambda j: (j.created_at, j.id))
        return claimed

    async def _claim_flow(
        self,
        worker_id: str,
        signatures: list[str],
        room: int,
        aside: tuple[Sequence[str], Sequence[str]],
    ) -> FlowClaim:
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            lane = await pg_claim_flow(db, worker_id, signatures, room, aside)
        self._rate_wake.wake_at(lane.retry_at)
        for job_id in lane.skipped:
            log.info("store.job_skipped", job_id=job_id, reason="concurrency skip_new")
        if lane.cancel_requested:
            log.info("store.cancel_running", job_ids=lane.cancel_requested)
        return lane
