"""PostgreSQL specifics: the engine, the LISTEN connection feeding the Broadcaster, and
the hot paths (``PgFastPath``).

Writers call ``pg_notify`` inside their transaction (``queries.PG_NOTIFY``, or a CTE of
the hot-path statement itself), so a wake-up is delivered exactly when the change is
visible. Every store keeps one dedicated
LISTEN connection (outside the pool: a pooled connection would be reset and reused) that
republishes what it hears, its own notifications included, to in-process subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

import structlog
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from headwater.store.base import Channel, JobRecord, JobStatus, LogLine, StepRecord
from headwater.store.fastpath import (
    JOB_COLUMNS,
    NOT_PAUSED,
    PAYLOAD_LIMIT,
    STEP_COLUMNS,
    HeldRow,
    NewJobRow,
    StepRow,
    driver_connection,
    job_record,
    step_record,
)
from headwater.store.job_writes import WritePlan
from headwater.store.notify import Broadcaster
from headwater.store.queries import dumps

__all__ = [
    "LISTEN_APPLICATION",
    "MIGRATION_LOCK_KEY",
    "PgFastPath",
    "PgListener",
    "asyncpg_connect_kwargs",
    "create_pg_engine",
]

log = structlog.get_logger(__name__)

# pg_advisory_xact_lock key serialising concurrent migrations ("headwatr" in ASCII).
MIGRATION_LOCK_KEY = 0x6865616477617472

# application_name of the LISTEN connections (visible in pg_stat_activity).
LISTEN_APPLICATION = "headwater-listen"

# URL query options that SQLAlchemy's asyncpg dialect consumes itself.
_SQLALCHEMY_ONLY = {"prepared_statement_cache_size", "prepared_statement_name_func"}


def asyncpg_connect_kwargs(url: URL, connect_timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = url.translate_connect_args(username="user", database="database")
    kwargs.update({k: v for k, v in url.query.items() if k not in _SQLALCHEMY_ONLY})
    kwargs["timeout"] = connect_timeout
    return kwargs


def create_pg_engine(
    url: URL,
    *,
    pool_size: int,
    connect_timeout: float,
    json_serializer: Any,
    echo: bool,
) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        json_serializer=json_serializer,
        echo=echo,
        connect_args={
            # asyncpg waits 60 s by default; an unreachable server should fail fast.
            "timeout": connect_timeout,
            # Operators see who holds connections in pg_stat_activity.
            "server_settings": {"application_name": "headwater"},
        },
    )


class PgListener:
    """One LISTEN connection, reconnecting with backoff, republishing into ``broadcaster``.

    After every (re)connect it publishes ``"*"`` on each channel: notifications sent while
    nobody listened are lost, so waiters must re-read the store.
    """

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        broadcaster: Broadcaster,
        channels: Sequence[str],
        *,
        keepalive: float = 30.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._connect_kwargs = connect_kwargs
        self._broadcaster = broadcaster
        self._channels = tuple(channels)
        self._keepalive = keepalive
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()

    def ensure_started(self) -> None:
        """Start listening (idempotent); needs a running event loop."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="headwater-pg-listen"
            )

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._broadcaster.publish(channel, payload)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._listen_once()
                backoff = 0.05  # the connection was up: start over with short waits
            except Exception as exc:  # any failure means: reconnect after a pause
                log.warning(
                    "store.listen_lost", error=f"{type(exc).__name__}: {exc}", retry_in=backoff
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _listen_once(self) -> None:
        import asyncpg  # here: a process on SQLite never needs it

        conn = await asyncpg.connect(
            **self._connect_kwargs, server_settings={"application_name": LISTEN_APPLICATION}
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            for channel in self._channels:
                await conn.add_listener(channel, self._on_notification)
            self.connected.set()
            log.debug("store.listening", channels=self._channels)
            for channel in self._channels:
                self._broadcaster.publish(channel, "*")
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self._keepalive)
                except TimeoutError:
                    # A peer that vanished without a FIN is only noticed when we talk.
                    await conn.execute("SELECT 1", timeout=self._keepalive)
            raise ConnectionError("LISTEN connection closed")
        finally:
            self.connected.clear()
            conn.terminate()  # close() could wait on a dead socket; nothing to flush here


# -- hot paths on the asyncpg connection -----------------------------------------------------
# Each is ONE statement, run outside an explicit transaction (so it commits by itself: one
# round trip, no BEGIN/COMMIT), with its NOTIFY in a CTE of the same statement, hence in
# the same transaction as the change. The rows are bound as ONE JSON array (of arrays),
# unpacked by PostgreSQL, so one prepared statement serves every batch size. (Bound as
# one array per column, asyncpg checks every element against three ABCs: 3.4-8.7 us of
# event-loop time per row, against 1.2 us for encoding the JSON.)

_INSERT_JOBS = f"""
WITH ins AS (
    INSERT INTO jobs (id, workspace, task, input, source_type, source_id, dedup_key, tags,
                      parent_job_id, max_attempts, priority, concurrency_key,
                      concurrency_limit, concurrency_strategy, rate_key, rate_limit,
                      rate_per, status, created_at, attempt, cancel_requested)
    SELECT e->>0, e->>1, e->>2, CAST(e->>3 AS jsonb), e->>4, e->>5, e->>6, e->>7, e->>8,
           CAST(e->>9 AS int), CAST(e->>10 AS int), e->>11, CAST(e->>12 AS int), e->>13,
           e->>14, CAST(e->>15 AS int), CAST(e->>16 AS float8),
           'pending', CAST($2 AS timestamptz), 0, false
      FROM json_array_elements(CAST($1 AS json)) AS e
    ON CONFLICT DO NOTHING
    RETURNING id, tags
), woke AS (
    SELECT pg_notify('{Channel.JOBS.value}',
                     CASE WHEN octet_length(s.tags) > {PAYLOAD_LIMIT} THEN '*' ELSE s.tags END)
      FROM (SELECT DISTINCT tags FROM ins) AS s
)
SELECT ins.id FROM ins, (SELECT count(*) FROM woke) AS n
"""

_UPSERT_CURSOR = (
    "INSERT INTO event_cursors (trigger, cursor, updated_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (trigger) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at"
)
_EXISTING_KEYS = "SELECT id, dedup_key FROM jobs WHERE dedup_key = ANY($1::text[])"

# One ordered, limited, locking sub-select per signature (LATERAL): each walks the
# partial claim index in order and stops after ``limit`` rows however long the queue; an
# ``= ANY`` over several signatures would sort every pending match first. Rows another
# claimer holds are skipped. Steps come back joined (most claimed jobs have none). Jobs
# with flow limits in the window are not claimed here: they come back as "held" rows
# (store/flow.py claims them); $5/$6 are keys the claim found full and sets aside.
_JOB_OUT = ", ".join(f"c.{c.strip()}" for c in JOB_COLUMNS.split(","))
_STEP_OUT = ", ".join(f"s.{c.strip()}" for c in STEP_COLUMNS.split(","))
_NULLS = ", ".join(["NULL"] * (len(JOB_COLUMNS.split(",")) + len(STEP_COLUMNS.split(",")) - 1))
_CLAIM = f"""
WITH picked AS (
    SELECT p.id, p.held, p.concurrency_key, p.rate_key
      FROM unnest($2::text[]) AS s(signature)
     CROSS JOIN LATERAL (
            SELECT id, priority, created_at, concurrency_key, rate_key,
                   (concurrency_key IS NOT NULL OR rate_key IS NOT NULL) AS held
              FROM jobs
             WHERE status = 'pending' AND tags = s.signature
               AND {NOT_PAUSED}
               AND (concurrency_key IS NULL OR concurrency_key <> ALL($5::text[]))
               AND (rate_key IS NULL OR rate_key <> ALL($6::text[]))
             ORDER BY priority DESC, created_at, id
             LIMIT $3
               FOR UPDATE SKIP LOCKED) AS p
     ORDER BY p.priority DESC, p.created_at, p.id
     LIMIT $3
), claimed AS (
    UPDATE jobs SET status = 'running', worker_id = $1, attempt = jobs.attempt + 1,
                    started_at = $4
      FROM picked
     WHERE jobs.id = picked.id AND NOT picked.held
    RETURNING jobs.*
)
SELECT {_JOB_OUT}, {_STEP_OUT}, false AS held, NULL::text AS held_c, NULL::text AS held_r
  FROM claimed AS c LEFT JOIN steps AS s ON s.job_id = c.id
UNION ALL
SELECT id, {_NULLS}, true, concurrency_key, rate_key FROM picked WHERE held
 ORDER BY 30, 17, 1, 28 NULLS LAST, 21
"""
_HELD = len(JOB_COLUMNS.split(",")) + len(STEP_COLUMNS.split(","))  # index of "held"

_APPEND_LOGS = f"""
WITH ins AS (
    INSERT INTO logs (job_id, step, stream, line, ts)
    SELECT e->>0, e->>1, e->>2, e->>3, CAST(e->>4 AS timestamptz)
      FROM json_array_elements(CAST($1 AS json)) AS e
    RETURNING job_id
), woke AS (
    SELECT pg_notify('{Channel.LOGS.value}', j.job_id) FROM (SELECT DISTINCT job_id FROM ins) AS j
)
SELECT count(*) FROM woke
"""


def _json_text(value: Any) -> Any:
    # SQLAlchemy's asyncpg codec hands jsonb over as text; decode whatever arrives.
    return json.loads(value) if isinstance(value, str | bytes) else value


_STEP_FIELDS = (
    "action",
    "status",
    "exit_code",
    "output",
    "error",
    "attempts",
    "started_at",
    "finished_at",
)


def _steps_from(param: int) -> str:
    """An upsert of the step rows bound as one JSON array in ``$param``."""
    return f"""
    INSERT INTO steps (job_id, name, action, status, exit_code, output, error, attempts,
                       started_at, finished_at)
    SELECT e->>0, e->>1, e->>2, e->>3, CAST(e->>4 AS int), CAST(e->>5 AS jsonb), e->>6,
           CAST(e->>7 AS int), CAST(e->>8 AS timestamptz), CAST(e->>9 AS timestamptz)
      FROM json_array_elements(CAST(${param} AS json)) AS e"""


_CONFLICT = "ON CONFLICT (job_id, name) DO UPDATE SET " + ", ".join(
    f"{c} = EXCLUDED.{c}" for c in _STEP_FIELDS
)

# The worker's writes of one group commit (see job_writes): plain step rows, finishes,
# and the steps that go with a finish, only for the jobs it changed. The plan never lets
# two parts touch one step row (one statement may not modify a row twice).
_WRITE = f"""
WITH plain AS (
    {_steps_from(1)}
    {_CONFLICT}
), done AS (
    UPDATE jobs
       SET status = e->>2, output = CAST(e->>3 AS jsonb), error = e->>4, finished_at = $3
      FROM json_array_elements(CAST($2 AS json)) AS e
     WHERE jobs.id = e->>0
       AND jobs.status IN ('pending', 'running')
       AND (e->>1 IS NULL OR jobs.worker_id = e->>1)
    RETURNING jobs.id, jobs.tags, jobs.concurrency_key
), carried AS (
    {_steps_from(4)}
     WHERE e->>0 IN (SELECT id FROM done)
    {_CONFLICT}
), woke AS (
    SELECT pg_notify('{Channel.FINISHED.value}',
                     CASE WHEN sum(octet_length(id) + 1) > {PAYLOAD_LIMIT} THEN '*'
                          ELSE string_agg(id, ',') END)
      FROM done
    HAVING count(*) > 0
), freed AS (  -- a keyed job's end makes room for the next of its key: wake claimers
    SELECT pg_notify('{Channel.JOBS.value}',
                     CASE WHEN octet_length(k.tags) > {PAYLOAD_LIMIT} THEN '*' ELSE k.tags END)
      FROM (SELECT DISTINCT tags FROM done WHERE concurrency_key IS NOT NULL) AS k
)
SELECT done.id FROM done, (SELECT count(*) FROM woke) AS n, (SELECT count(*) FROM freed) AS f
"""


def _ts(value: datetime | None) -> str | None:
    """ISO text PostgreSQL reads as the same instant (naive values are UTC, as asyncpg
    takes them)."""
    if value is None:
        return None
    text = value.isoformat()
    return text if value.tzinfo is not None else text + "+00:00"


def _encode_steps(rows: Sequence[StepRow]) -> str:
    return dumps([(*r[:8], _ts(r[8]), _ts(r[9])) for r in rows])


# A batch at least this large is first tried with COPY (measured: 2x the rows/s of one
# INSERT ... SELECT; a COPY costs four round trips instead of one, so not for small ones).
COPY_MIN_ROWS = 200

_COPY_COLUMNS = [
    "id", "workspace", "task", "input", "source_type", "source_id", "dedup_key", "tags",
    "parent_job_id", "max_attempts", "priority", "concurrency_key", "concurrency_limit",
    "concurrency_strategy", "rate_key", "rate_limit", "rate_per",
    "created_at", "status", "attempt", "cancel_requested",
]  # fmt: skip

# Rows without a parent, a priority or flow limits leave those columns (and attempt and
# cancel_requested) to their defaults: asyncpg encodes half the fields per row.
_DEFAULTED = itemgetter(8, 10, 11, 12, 13, 14, 15, 16)
_DEFAULTS = (None, 0, None, None, None, None, None, None)
_SHORT = itemgetter(0, 1, 2, 3, 4, 5, 6, 7, 9)
_COPY_SHORT = [*(_COPY_COLUMNS[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 9)), "created_at", "status"]

_NOTIFY_JOBS = "SELECT pg_notify($1, s) FROM unnest($2::text[]) AS s"


async def _copy_jobs(
    db: Any, rows: Sequence[NewJobRow], now: datetime, cursor: tuple[str, str] | None
) -> bool:
    """COPY the rows in, with their wake-ups, in one transaction. COPY has no ON CONFLICT:
    when a dedup key (or id) exists already it fails as a whole and nothing is written;
    returns False then, and the caller inserts the batch with ON CONFLICT instead."""
    import asyncpg  # loaded already: ``db`` is its connection

    if {_DEFAULTED(r) for r in rows} == {_DEFAULTS}:  # the usual batch: 11 columns, not 21
        columns = _COPY_SHORT
        records = [(*_SHORT(r), now, "pending") for r in rows]
    else:
        columns = _COPY_COLUMNS
        records = [(*r, now, "pending", 0, False) for r in rows]
    signatures = sorted({r[7] if len(r[7]) <= PAYLOAD_LIMIT else "*" for r in rows})
    try:
        async with db.transaction():
            await db.copy_records_to_table("jobs", records=records, columns=columns)
            if cursor is not None:
                await db.execute(_UPSERT_CURSOR, cursor[0], cursor[1], now)
            await db.execute(_NOTIFY_JOBS, Channel.JOBS.value, signatures)
    except asyncpg.UniqueViolationError:
        return False
    return True


class PgFastPath:
    """The hot paths on PostgreSQL, each a single self-committing statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert_jobs(
        self,
        rows: Sequence[NewJobRow],
        now: datetime,
        caller_ids: Sequence[str],
        cursor: tuple[str, str] | None = None,
    ) -> tuple[set[str], dict[str, str]]:
        existing: dict[str, str] = {}
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            if (
                len(rows) >= COPY_MIN_ROWS
                and not caller_ids
                and await _copy_jobs(db, rows, now, cursor)
            ):
                return {r[0] for r in rows}, existing
            if cursor is None:
                created = {r[0] for r in await db.fetch(_INSERT_JOBS, dumps(rows), now)}
            else:  # the event-source cursor commits with its jobs
                async with db.transaction():
                    created = {r[0] for r in await db.fetch(_INSERT_JOBS, dumps(rows), now)}
                    await db.execute(_UPSERT_CURSOR, cursor[0], cursor[1], now)
            if len(created) < len(rows):  # clashes: look the existing jobs up
                keys = [r[6] for r in rows if r[0] not in created and r[6] is not None]
                if keys:
                    existing = {key: found for found, key in await db.fetch(_EXISTING_KEYS, keys)}
        return created, existing

    async def claim(
        self,
        worker_id: str,
        signatures: Sequence[str],
        limit: int,
        now: datetime,
        set_aside: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> tuple[list[JobRecord], list[HeldRow]]:
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            rows = await db.fetch(
                _CLAIM,
                worker_id,
                list(signatures),
                limit,
                now,
                list(set_aside[0]),
                list(set_aside[1]),
            )
        jobs: list[JobRecord] = []
        held: list[HeldRow] = []
        current: list[Any] | None = None
        steps: list[StepRecord] = []
        for row in rows:  # ordered by job: consecutive rows of one job carry its steps
            if row[_HELD]:  # held rows come last
                held.append((row[0], row[_HELD + 1], row[_HELD + 2]))
                continue
            if current is None or row[0] != current[0]:
                if current is not None:
                    jobs.append(job_record(current, steps, _json_text))
                current, steps = list(row[:19]), []
            if row[19] is not None:
                steps.append(step_record(row[19:_HELD], _json_text))
        if current is not None:
            jobs.append(job_record(current, steps, _json_text))
        return jobs, held

    async def write(self, plan: WritePlan, now: datetime) -> set[str]:
        finishes = dumps(
            [
                (r[0], r[1], JobStatus(r[2]).value, None if r[3] is None else dumps(r[3]), r[4])
                for r in plan.finishes
            ]
        )
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            rows = await db.fetch(
                _WRITE,
                _encode_steps(plan.steps),
                finishes,
                now,
                _encode_steps(plan.finish_steps),
            )
        return {r[0] for r in rows}

    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        encoded = dumps([(x.job_id, x.step, x.stream.value, x.line, _ts(x.ts)) for x in lines])
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            await db.fetchval(_APPEND_LOGS, encoded)

    async def close(self) -> None:
        return None  # its connections belong to the engine's pool
