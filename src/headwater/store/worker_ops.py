"""Distributed mode's store operations: worker tokens and reconciling a remote worker's
job list, shared by SqlStore on both dialects."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store import queries as q
from headwater.store.base import Channel, WorkerJobsReconciled, WorkerTokenRecord
from headwater.store.fastpath import chunks, hint
from headwater.store.ids import utcnow
from headwater.store.tables import jobs, worker_tokens

__all__ = ["WorkerOps"]

_ORPHAN_STEP_ERROR = "interrupted: the worker never received this job"


class WorkerOps:
    """Mixed into SqlStore: needs ``_write()`` and ``_reader``."""

    _reader: AsyncEngine

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def reconcile_worker_jobs(
        self, worker_id: str, active: Sequence[str], grace_secs: float
    ) -> WorkerJobsReconciled:
        now = utcnow()
        known = set(active)
        async with self._write() as tx:
            # No row locks: a job another transaction is writing (its steps, its finish)
            # is still the worker's, and SKIP LOCKED would wrongly call it lost.
            rows = (
                await tx.conn.execute(
                    select(jobs.c.id, jobs.c.started_at, jobs.c.tags).where(
                        jobs.c.worker_id == worker_id, jobs.c.status == "running"
                    )
                )
            ).all()
            running = {r.id for r in rows}
            cutoff = now - timedelta(seconds=grace_secs)
            candidates = [
                r
                for r in rows
                if r.id not in known and (r.started_at is None or r.started_at < cutoff)
            ]
            orphans: list[Any] = []
            for chunk in chunks(candidates, q.MAX_PARAMS):
                # Only if still running as this worker's (the guard makes it race-free).
                requeued = await tx.conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id.in_([r.id for r in chunk]),
                        jobs.c.status == "running",
                        jobs.c.worker_id == worker_id,
                    )
                    .values(status="pending", worker_id=None)
                    .returning(jobs.c.id)
                )
                done = set(requeued.scalars())
                orphans.extend(r for r in chunk if r.id in done)
            if orphans:
                ids = [r.id for r in orphans]
                for chunk_ids in chunks(ids, q.MAX_PARAMS):
                    await tx.conn.execute(q.interrupt_steps(chunk_ids, _ORPHAN_STEP_ERROR, now))
                line = f"worker {worker_id} never received this job (lost answer); requeued"
                await tx.conn.execute(
                    q.insert_logs(),
                    [
                        {"job_id": i, "step": None, "stream": "system", "line": line, "ts": now}
                        for i in ids
                    ],
                )
                signatures = sorted({r.tags for r in orphans})
                await tx.notify(Channel.JOBS, (hint([s]) for s in signatures))
                await tx.notify(Channel.LOGS, ids)
        lost = tuple(i for i in active if i not in running)
        return WorkerJobsReconciled(requeued=tuple(r.id for r in orphans), lost=lost)

    # -- worker tokens -------------------------------------------------------------------
    async def insert_worker_token(self, token: WorkerTokenRecord) -> None:
        async with self._write() as tx:
            await tx.conn.execute(
                worker_tokens.insert().values(
                    id=token.id,
                    name=token.name,
                    secret_sha256=token.secret_sha256,
                    created_at=token.created_at,
                    revoked_at=token.revoked_at,
                    last_used_at=token.last_used_at,
                )
            )

    async def get_worker_token(self, token_id: str) -> WorkerTokenRecord | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(select(worker_tokens).where(worker_tokens.c.id == token_id))
            ).first()
        return _token(row) if row is not None else None

    async def list_worker_tokens(self) -> list[WorkerTokenRecord]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(worker_tokens).order_by(worker_tokens.c.created_at, worker_tokens.c.id)
            )
            return [_token(r) for r in rows]

    async def revoke_worker_token(self, token_id: str) -> bool:
        stmt = (
            update(worker_tokens)
            .where(worker_tokens.c.id == token_id, worker_tokens.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(worker_tokens.c.id)
        )
        async with self._write() as tx:
            return (await tx.conn.execute(stmt)).first() is not None

    async def touch_worker_token(self, token_id: str) -> None:
        stmt = (
            update(worker_tokens)
            .where(worker_tokens.c.id == token_id)
            .values(last_used_at=utcnow())
        )
        async with self._write() as tx:
            await tx.conn.execute(stmt)


def _token(row: Any) -> WorkerTokenRecord:
    return WorkerTokenRecord(
        id=row.id,
        name=row.name,
        secret_sha256=row.secret_sha256,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
