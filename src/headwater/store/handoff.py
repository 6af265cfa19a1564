"""Hand-off: a new job goes straight to an idle slot of this process's own worker.

On PostgreSQL a job inserted while the embedded worker waits for work would otherwise
take two more steps before it runs: the insert's NOTIFY travelling to the LISTEN
connection, then a claim (a round trip that finds, locks and updates the row just
written). When the worker has idle slots and its last claim found the queue empty, the
insert writes the job as claimed by that worker instead (``running``, its ``worker_id``,
attempt 1, ``started_at`` = ``created_at``), in the same statement, and once it has
committed the job is started here: durable before it runs, exactly as a claimed job. A
crash after the commit leaves a running job of a worker that stops heartbeating, which
the recovery sweep requeues like any other.

Only jobs that a claim would have taken at once are handed: no concurrency key and no
rate limit (those go through ``store.flow``), a tag signature the worker claims, and a
task that is not paused (the statement checks that). A job whose input holds a secret
reference is not handed either: the worker's control plane fills those in as it claims
(``worker.secret_guard``). Everything else is inserted pending and announced as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store.base import Channel, JobRecord, JobStatus
from headwater.store.fastpath import PAYLOAD_LIMIT, FastPath, driver_connection
from headwater.store.ids import parse_tags, utcnow
from headwater.store.postgres import (
    _EXISTING_KEYS,
    _UPSERT_CURSOR,
    COPY_MIN_ROWS,
    PgFastPath,
)
from headwater.store.queries import dumps
from headwater.store.rows import NewJobRow
from headwater.workspace.secret_refs import REFERENCE_PREFIX

__all__ = ["LocalSlots", "candidates", "handed_job", "insert_rows"]


class LocalSlots(Protocol):
    """The embedded worker, as the store sees it for hand-offs."""

    @property
    def id(self) -> str: ...

    def reserve(self, signatures: Sequence[str | None]) -> list[int]:
        """Reserve idle slots for some of the new jobs (given by tag signature, None for
        one that cannot be handed); returns their indexes (none unless the worker is idle
        and its queue was found empty). Every reservation ends in ``deliver``."""
        ...

    def deliver(self, jobs: Sequence[JobRecord], reserved: int) -> None:
        """Start ``jobs`` (committed as claimed by this worker) and give back the other
        ``reserved - len(jobs)`` slots (their rows clashed, or their task is paused)."""
        ...


def candidates(rows: Sequence[NewJobRow]) -> list[str | None]:
    """Per row, its tag signature if it may be handed (no flow limits, no secret
    reference anywhere in its input's JSON text)."""
    return [
        r[7] if r[11] is None and r[14] is None and REFERENCE_PREFIX not in r[3] else None
        for r in rows
    ]


def handed_job(row: NewJobRow, worker_id: str, now: datetime) -> JobRecord:
    """The record a claim of this freshly inserted row would have returned."""
    return JobRecord(
        id=row[0],
        workspace=row[1],
        task=row[2],
        status=JobStatus.RUNNING,
        input=json.loads(row[3]),
        output=None,
        error=None,
        source_type=row[4],
        source_id=row[5],
        dedup_key=row[6],
        tags=parse_tags(row[7]),
        parent_job_id=row[8],
        worker_id=worker_id,
        attempt=1,
        max_attempts=row[9],
        cancel_requested=False,
        created_at=now,
        started_at=now,
        finished_at=None,
    )


# ``postgres._INSERT_JOBS`` with the rows whose ids are in $3 written as claimed by worker $4
# unless their task is paused; only the pending rows are announced.
_INSERT_HANDING = f"""
WITH ins AS (
    INSERT INTO jobs (id, workspace, task, input, source_type, source_id, dedup_key, tags,
                      parent_job_id, max_attempts, priority, concurrency_key,
                      concurrency_limit, concurrency_strategy, rate_key, rate_limit,
                      rate_per, status, created_at, attempt, cancel_requested, worker_id,
                      started_at)
    SELECT e->>0, e->>1, e->>2, CAST(e->>3 AS jsonb), e->>4, e->>5, e->>6, e->>7, e->>8,
           CAST(e->>9 AS int), CAST(e->>10 AS int), e->>11, CAST(e->>12 AS int), e->>13,
           e->>14, CAST(e->>15 AS int), CAST(e->>16 AS float8),
           CASE WHEN h.take THEN 'running' ELSE 'pending' END, CAST($2 AS timestamptz),
           CASE WHEN h.take THEN 1 ELSE 0 END, false,
           CASE WHEN h.take THEN CAST($4 AS text) END,
           CASE WHEN h.take THEN CAST($2 AS timestamptz) END
      FROM json_array_elements(CAST($1 AS json)) AS e
     CROSS JOIN LATERAL (
            SELECT e->>0 = ANY($3::text[])
                   AND e->>2 NOT IN (SELECT task FROM paused_tasks) AS take) AS h
    ON CONFLICT DO NOTHING
    RETURNING id, tags, status
), woke AS (
    SELECT pg_notify('{Channel.JOBS.value}',
                     CASE WHEN octet_length(s.tags) > {PAYLOAD_LIMIT} THEN '*' ELSE s.tags END)
      FROM (SELECT DISTINCT tags FROM ins WHERE status = 'pending') AS s
)
SELECT ins.id, ins.status = 'running' FROM ins, (SELECT count(*) FROM woke) AS n
"""


async def insert_rows(
    fast: FastPath,
    engine: AsyncEngine,
    slots: LocalSlots | None,
    rows: Sequence[NewJobRow],
    caller_ids: Sequence[str],
    cursor: tuple[str, str] | None,
) -> tuple[set[str], dict[str, str]]:
    """``fast.insert_jobs``, handing what it can to ``slots`` on PostgreSQL (a large
    batch is COPYed: the worker is busy then anyway)."""
    now = utcnow()
    if slots is None or not isinstance(fast, PgFastPath) or len(rows) >= COPY_MIN_ROWS:
        return await fast.insert_jobs(rows, now, caller_ids, cursor)
    picked = slots.reserve(candidates(rows))
    if not picked:
        return await fast.insert_jobs(rows, now, caller_ids, cursor)
    handed: list[JobRecord] = []
    try:
        ids = [rows[i][0] for i in picked]
        async with engine.connect() as conn:
            db = await driver_connection(conn)
            args = (dumps(rows), now, ids, slots.id)
            created, existing, running = await _insert(db, rows, cursor, *args)
        handed = [handed_job(r, slots.id, now) for r in rows if r[0] in running]
    finally:
        slots.deliver(handed, len(picked))
    return created, existing


async def _insert(
    db: Any, rows: Sequence[NewJobRow], cursor: tuple[str, str] | None, *args: Any
) -> tuple[set[str], dict[str, str], set[str]]:
    """(created ids, dedup key → existing id for the rows that clashed, ids handed)."""
    if cursor is None:
        found = await db.fetch(_INSERT_HANDING, *args)
    else:  # the event-source cursor commits with its jobs
        async with db.transaction():
            found = await db.fetch(_INSERT_HANDING, *args)
            await db.execute(_UPSERT_CURSOR, cursor[0], cursor[1], args[1])
    created = {r[0] for r in found}
    running = {r[0] for r in found if r[1]}
    existing: dict[str, str] = {}
    if len(created) < len(rows):  # clashes: look the existing jobs up
        keys = [r[6] for r in rows if r[0] not in created and r[6] is not None]
        if keys:
            existing = {key: job_id for job_id, key in await db.fetch(_EXISTING_KEYS, keys)}
    return created, existing, running
