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
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from headwater.store.base import Channel, JobRecord, JobStatus, LogLine, StepRecord
from headwater.store.fastpath import (
    JOB_COLUMNS,
    PAYLOAD_LIMIT,
    STEP_COLUMNS,
    NewJobRow,
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
# the same transaction as the change. Arrays are bound whole (unnest), so one prepared
# statement serves every batch size.

_INSERT_JOBS = f"""
WITH ins AS (
    INSERT INTO jobs (id, workspace, task, input, source_type, source_id, dedup_key, tags,
                      parent_job_id, max_attempts, status, created_at, attempt,
                      cancel_requested)
    SELECT u.id, u.workspace, u.task, CAST(u.input AS jsonb), u.source_type, u.source_id,
           u.dedup_key, u.tags, u.parent_job_id, u.max_attempts, 'pending',
           CAST($11 AS timestamptz), 0, false
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::text[], $9::text[], $10::int[])
           AS u(id, workspace, task, input, source_type, source_id, dedup_key, tags,
                parent_job_id, max_attempts)
    ON CONFLICT DO NOTHING
    RETURNING id, tags
), woke AS (
    SELECT pg_notify('{Channel.JOBS.value}',
                     CASE WHEN octet_length(s.tags) > {PAYLOAD_LIMIT} THEN '*' ELSE s.tags END)
      FROM (SELECT DISTINCT tags FROM ins) AS s
)
SELECT ins.id FROM ins, (SELECT count(*) FROM woke) AS n
"""

_EXISTING_KEYS = "SELECT id, dedup_key FROM jobs WHERE dedup_key = ANY($1::text[])"

# One ordered, limited, locking sub-select per signature (LATERAL): each walks the
# partial claim index in order and stops after ``limit`` rows however long the queue; an
# ``= ANY`` over several signatures would sort every pending match first. Rows another
# claimer holds are skipped. Steps come back joined (most claimed jobs have none).
_CLAIM = f"""
WITH picked AS (
    SELECT p.id
      FROM unnest($2::text[]) AS s(signature)
     CROSS JOIN LATERAL (
            SELECT id, created_at FROM jobs
             WHERE status = 'pending' AND tags = s.signature
             ORDER BY created_at, id
             LIMIT $3
               FOR UPDATE SKIP LOCKED) AS p
     ORDER BY p.created_at, p.id
     LIMIT $3
), claimed AS (
    UPDATE jobs SET status = 'running', worker_id = $1, attempt = jobs.attempt + 1,
                    started_at = $4
      FROM picked
     WHERE jobs.id = picked.id
    RETURNING jobs.*
)
SELECT {", ".join(f"c.{c.strip()}" for c in JOB_COLUMNS.split(","))},
       {", ".join(f"s.{c.strip()}" for c in STEP_COLUMNS.split(","))}
  FROM claimed AS c LEFT JOIN steps AS s ON s.job_id = c.id
 ORDER BY c.created_at, c.id, s.started_at NULLS LAST, s.name
"""

_APPEND_LOGS = f"""
WITH ins AS (
    INSERT INTO logs (job_id, step, stream, line, ts)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
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


def _steps_from(first: int) -> str:
    """An upsert of the step rows bound as ten arrays from ``$first``."""
    a = [f"${first + i}" for i in range(10)]
    return f"""
    INSERT INTO steps (job_id, name, action, status, exit_code, output, error, attempts,
                       started_at, finished_at)
    SELECT u.job_id, u.name, u.action, u.status, u.exit_code, CAST(u.output AS jsonb),
           u.error, u.attempts, u.started_at, u.finished_at
      FROM unnest({a[0]}::text[], {a[1]}::text[], {a[2]}::text[], {a[3]}::text[],
                  {a[4]}::int[], {a[5]}::text[], {a[6]}::text[], {a[7]}::int[],
                  {a[8]}::timestamptz[], {a[9]}::timestamptz[])
           AS u(job_id, name, action, status, exit_code, output, error, attempts,
                started_at, finished_at)"""


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
       SET status = v.status, output = CAST(v.output AS jsonb), error = v.error,
           finished_at = $16
      FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
           AS v(id, worker_id, status, output, error)
     WHERE jobs.id = v.id
       AND jobs.status IN ('pending', 'running')
       AND (v.worker_id IS NULL OR jobs.worker_id = v.worker_id)
    RETURNING jobs.id
), carried AS (
    {_steps_from(17)}
     WHERE u.job_id IN (SELECT id FROM done)
    {_CONFLICT}
), woke AS (
    SELECT pg_notify('{Channel.FINISHED.value}',
                     CASE WHEN sum(octet_length(id) + 1) > {PAYLOAD_LIMIT} THEN '*'
                          ELSE string_agg(id, ',') END)
      FROM done
    HAVING count(*) > 0
)
SELECT done.id FROM done, (SELECT count(*) FROM woke) AS n
"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


class PgFastPath:
    """The hot paths on PostgreSQL, each a single self-committing statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert_jobs(
        self, rows: Sequence[NewJobRow], now: datetime, caller_ids: Sequence[str]
    ) -> tuple[set[str], dict[str, str]]:
        columns = list(zip(*rows, strict=True))
        existing: dict[str, str] = {}
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            created = {r[0] for r in await db.fetch(_INSERT_JOBS, *columns, now)}
            if len(created) < len(rows):  # clashes: look the existing jobs up
                keys = [r[6] for r in rows if r[0] not in created and r[6] is not None]
                if keys:
                    existing = {key: found for found, key in await db.fetch(_EXISTING_KEYS, keys)}
        return created, existing

    async def claim(
        self, worker_id: str, signatures: Sequence[str], limit: int, now: datetime
    ) -> list[JobRecord]:
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            rows = await db.fetch(_CLAIM, worker_id, list(signatures), limit, now)
        jobs: list[JobRecord] = []
        current: list[Any] | None = None
        steps: list[StepRecord] = []
        for row in rows:  # ordered by job: consecutive rows of one job carry its steps
            if current is None or row[0] != current[0]:
                if current is not None:
                    jobs.append(job_record(current, steps, _json_text))
                current, steps = list(row[:19]), []
            if row[19] is not None:
                steps.append(step_record(row[19:], _json_text))
        if current is not None:
            jobs.append(job_record(current, steps, _json_text))
        return jobs

    async def write(self, plan: WritePlan, now: datetime) -> set[str]:
        finishes = [
            (r[0], r[1], JobStatus(r[2]).value, None if r[3] is None else dumps(r[3]), r[4])
            for r in plan.finishes
        ]
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            rows = await db.fetch(
                _WRITE,
                *_columns(plan.steps, 10),
                *_columns(finishes, 5),
                now,
                *_columns(plan.finish_steps, 10),
            )
        return {r[0] for r in rows}

    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        columns = (
            [x.job_id for x in lines],
            [x.step for x in lines],
            [x.stream.value for x in lines],
            [x.line for x in lines],
            [x.ts for x in lines],
        )
        async with self._engine.connect() as conn:
            db = await driver_connection(conn)
            await db.fetchval(_APPEND_LOGS, *columns)

    async def close(self) -> None:
        return None  # its connections belong to the engine's pool
