"""The limited lane of the claim (``store.flow``) on PostgreSQL: one transaction on the
asyncpg connection, five round trips (BEGIN, the key locks, one read, the claim,
COMMIT).

The locks (one per key, waited for) come first and alone: under READ COMMITTED each
statement reads a fresh snapshot, so the read that follows them sees everything a
previous holder of a lock committed. The read returns, per candidate (each key's head,
plus the held jobs without a concurrency key), the running jobs of its key and its
key's starts in the window.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from headwater.store.base import Channel, JobRecord, StepRecord
from headwater.store.fastpath import (
    JOB_COLUMNS,
    NOT_PAUSED,
    STEP_COLUMNS,
    hint,
    job_record,
    step_record,
)
from headwater.store.flow import Candidate, LimitedClaim, decide
from headwater.store.rows import HeldRow

__all__ = ["pg_lane"]

# Waits for each key's lock, taken in the order of the lock ids (the same order in every
# claimer, so two claims never wait for each other in a cycle). A claim that found a hot
# key busy and gave up would come back empty and leave its worker idle until a wake-up.
_LOCKS = """
SELECT count(pg_advisory_xact_lock(h))
  FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS l
"""
_FLOW = (
    "id, priority, created_at, concurrency_key, concurrency_limit, concurrency_strategy, "
    "rate_key, rate_limit, rate_per"
)
# A key's head is read here, not taken from the fast path's picks: a paused task's jobs
# must be left out here too (their key's other jobs go on, as in the fast path).
# $1 concurrency keys, $6 how many of each the fast path held (a bound on what this round
# takes of it), $2 signatures, $3 room, $4 held ids without a key, $5 now.
_READ = f"""
WITH cand AS (
    SELECT h.* FROM unnest($1::text[], $6::int[]) AS k(key, n)
     CROSS JOIN LATERAL (
            SELECT {_FLOW} FROM jobs
             WHERE concurrency_key = k.key AND status = 'pending' AND tags = ANY($2::text[])
               AND {NOT_PAUSED}
             ORDER BY priority DESC, created_at, id
             LIMIT least(k.n, $3)
               FOR UPDATE) AS h
    UNION ALL
    SELECT l.* FROM (SELECT {_FLOW} FROM jobs
                      WHERE id = ANY($4::text[]) AND status = 'pending' AND {NOT_PAUSED}
                        FOR UPDATE) AS l
),
keys AS (SELECT DISTINCT concurrency_key AS key FROM cand WHERE concurrency_key IS NOT NULL),
running AS (  -- once per key; the IS NOT NULL picks the partial index of running keyed jobs
    SELECT k.key, (SELECT count(*) FROM jobs r
                    WHERE r.concurrency_key = k.key AND r.concurrency_key IS NOT NULL
                      AND r.status = 'running') AS n
      FROM keys AS k
), rates AS (
    SELECT DISTINCT rate_key, rate_per FROM cand WHERE rate_key IS NOT NULL
), windows AS (
    SELECT w.rate_key, w.rate_per, x.n, x.oldest FROM rates AS w
     CROSS JOIN LATERAL (
            SELECT count(*) AS n, min(s.started_at) AS oldest FROM jobs s
             WHERE s.rate_key = w.rate_key
               AND s.started_at > $5::timestamptz - make_interval(secs => w.rate_per)) AS x
)
SELECT c.*, coalesce(r.n, 0), w.n, w.oldest
  FROM cand AS c
  LEFT JOIN running AS r ON r.key = c.concurrency_key
  LEFT JOIN windows AS w ON w.rate_key = c.rate_key AND w.rate_per = c.rate_per
"""
_JOB_OUT = ", ".join(f"c.{c.strip()}" for c in JOB_COLUMNS.split(","))
_STEP_OUT = ", ".join(f"s.{c.strip()}" for c in STEP_COLUMNS.split(","))
_CLAIM = f"""
WITH claimed AS (
    UPDATE jobs SET status = 'running', worker_id = $1, attempt = attempt + 1, started_at = $3
     WHERE id = ANY($2::text[]) AND status = 'pending'
    RETURNING jobs.*
)
SELECT {_JOB_OUT}, {_STEP_OUT} FROM claimed AS c LEFT JOIN steps AS s ON s.job_id = c.id
 ORDER BY c.created_at, c.id, s.started_at NULLS LAST, s.name
"""
_SKIP = (
    "UPDATE jobs SET status = 'cancelled', error = $2, finished_at = $3 "
    "WHERE id = $1 AND status = 'pending'"
)
_CANCEL = (
    "UPDATE jobs SET cancel_requested = true WHERE concurrency_key = $1 AND status = 'running' "
    "AND NOT cancel_requested AND worker_id IS NOT NULL RETURNING id"
)
_LOG = "INSERT INTO logs (job_id, step, stream, line, ts) VALUES ($1, NULL, 'system', $2, $3)"
_NOTIFY = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"


async def pg_lane(
    db: Any,
    worker_id: str,
    signatures: Sequence[str],
    held: Sequence[HeldRow],
    room: int,
    now_fn: Callable[[], datetime],
) -> LimitedClaim:
    result = LimitedClaim()
    ckeys = sorted({c for _, c, _ in held if c is not None})
    rkeys = sorted({r for _, _, r in held if r is not None})
    async with db.transaction():
        names = [f"c:{k}" for k in ckeys] + [f"r:{k}" for k in rkeys]
        if names:
            await db.fetchval(_LOCKS, names)
        window_end = now_fn()  # after the locks: later than any start they protect
        held_per_key = Counter(c for _, c, _ in held if c is not None)
        loose = [i for i, c, _ in held if c is None]
        rows = await db.fetch(
            _READ,
            ckeys,
            list(signatures),
            room,
            loose,
            window_end,
            [held_per_key[k] for k in ckeys],
        )
        # The claims' start time: after the read, so after every finish it saw (a start
        # stamped earlier could seem to overlap the run whose end made room for it).
        # Windows counted up to the earlier instant can only count more: never over.
        now = now_fn()
        mine_r = set(rkeys)
        candidates: list[Candidate] = []
        running: dict[str, int] = {}
        windows: dict[str, tuple[int, datetime | None]] = {}
        for row in rows:
            candidate = Candidate(*row[:9])
            # A head whose rate key no held row brought is not locked by us: its turn
            # comes when it is in a claim's window itself.
            if candidate.rate_key is not None and candidate.rate_key not in mine_r:
                continue
            candidates.append(candidate)
            if candidate.concurrency_key is not None:
                running[candidate.concurrency_key] = int(row[9])
            if candidate.rate_key is not None:
                windows[candidate.rate_key] = (int(row[10] or 0), row[11])
        decision = decide(candidates, running, windows, window_end, room)
        result.full_keys |= decision.full_keys
        result.full_rates |= decision.full_rates
        result.retry_at = decision.retry_at
        if decision.claim:
            result.claimed = _records(await db.fetch(_CLAIM, worker_id, decision.claim, now))
        for job_id, reason in decision.skip.items():
            if (await db.execute(_SKIP, job_id, reason, now)).endswith(" 1"):
                result.skipped.append(job_id)
                await db.execute(_LOG, job_id, reason, now)
        for key, reason in decision.cancel_keys.items():
            for (job_id,) in await db.fetch(_CANCEL, key):
                result.cancel_requested.append(str(job_id))
                await db.execute(_LOG, job_id, reason, now)
        if result.skipped:
            await db.execute(_NOTIFY, Channel.FINISHED.value, [hint(result.skipped)])
        if result.cancel_requested:
            await db.execute(_NOTIFY, Channel.CANCEL.value, result.cancel_requested)
        ended = [*result.skipped, *result.cancel_requested]
        if ended:
            await db.execute(_NOTIFY, Channel.LOGS.value, ended)
    return result


def _decode(value: Any) -> Any:
    # SQLAlchemy's asyncpg codec hands jsonb over as text; decode whatever arrives.
    return json.loads(value) if isinstance(value, str | bytes) else value


def _records(rows: Sequence[Any], decode: Callable[[Any], Any] = _decode) -> list[JobRecord]:
    jobs: list[JobRecord] = []
    current: list[Any] | None = None
    steps: list[StepRecord] = []
    for row in rows:  # ordered by job: consecutive rows of one job carry its steps
        if current is None or row[0] != current[0]:
            if current is not None:
                jobs.append(job_record(current, steps, decode))
            current, steps = list(row[:19]), []
        if row[19] is not None:
            steps.append(step_record(row[19:], decode))
    if current is not None:
        jobs.append(job_record(current, steps, decode))
    return jobs
