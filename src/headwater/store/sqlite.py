"""SQLite specifics: the engine, its pragmas, explicit transaction modes, and the hot
paths (``SqliteFastPath``, run by ``sqlite_writer.SqliteWriter``).

pysqlite's own transaction handling begins a DEFERRED transaction lazily before the
first write, so a transaction that reads and then writes can fail with SQLITE_BUSY
without waiting for the busy timeout (WAL cannot upgrade a stale read snapshot). We turn
the driver's handling off and emit BEGIN ourselves: ``BEGIN IMMEDIATE`` for writes (the
write lock is taken up front, waits obey the busy timeout), ``BEGIN`` for reads that span
several statements, nothing for single-statement reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from headwater.jsonsafe import fast_text
from headwater.store.base import Channel, JobRecord, LogLine, StepRecord
from headwater.store.fastpath import (
    JOB_COLUMNS,
    NOT_PAUSED,
    STEP_COLUMNS,
    HeldRow,
    NewJobRow,
    StepRow,
    hint,
    job_record,
    step_record,
)
from headwater.store.flow import MAX_ROUNDS, WakeTimer
from headwater.store.flow_sqlite import FLOW_COLUMNS, LaneOutcome, RateWindows, sqlite_lane
from headwater.store.ids import utcnow
from headwater.store.queries import dumps

if TYPE_CHECKING:
    from headwater.store.job_writes import WritePlan
from headwater.store.sqlite_writer import SqliteWriter
from headwater.store.write_lock import WriteLock

__all__ = [
    "BEGIN_OPTION",
    "SqliteFastPath",
    "SqliteWriter",
    "create_sqlite_engine",
    "sqlite_path",
    "to_text",
]

# Execution option read by the "begin" hook: "IMMEDIATE", "DEFERRED" or None (autocommit).
BEGIN_OPTION = "headwater_sqlite_begin"


def sqlite_path(url: URL) -> Path:
    return Path(url.database or "")


def create_sqlite_engine(
    url: URL, *, busy_timeout: float, pool_size: int, json_serializer: Any, echo: bool
) -> AsyncEngine:
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        json_serializer=json_serializer,
        echo=echo,
    )
    busy_ms = int(busy_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see module doc
        cursor = dbapi_connection.cursor()
        try:
            # WAL: readers never block the writer; NORMAL: durable at checkpoints, safe
            # against corruption, and an order of magnitude faster than FULL.
            # The busy timeout first: switching to WAL needs a lock that a concurrent
            # migrator may hold, and without a timeout that fails at once.
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        if mode:
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


# -- hot paths on a dedicated writer thread ---------------------------------------------------
# SQLAlchemy stores SQLite datetimes as this text (UTC here); the raw paths write the same.
_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

_EXISTING_KEYS = (
    "SELECT id, dedup_key FROM jobs WHERE dedup_key IN (SELECT value FROM json_each(?))"
)
_UPSERT_CURSOR = (
    "INSERT INTO event_cursors (trigger, cursor, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (trigger) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at"
)
_EXISTING_IDS = "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
# Every multi-row write is ONE statement over a JSON array of rows (json_each): SQLite
# unpacks it in C, and the GIL is handed over once per statement, not once per row (see
# sqlite_writer). "WHERE true" lets the parser tell ON CONFLICT from a join constraint.
_INSERT_JOBS = (
    "INSERT INTO jobs (id, workspace, task, input, source_type, source_id, dedup_key, tags, "
    "parent_job_id, max_attempts, priority, concurrency_key, concurrency_limit, "
    "concurrency_strategy, rate_key, rate_limit, rate_per, "
    "created_at, status, attempt, cancel_requested) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, "
    "value ->> 12, value ->> 13, value ->> 14, value ->> 15, value ->> 16, "
    "?, 'pending', 0, 0 FROM json_each(?) WHERE true ON CONFLICT DO NOTHING"
)
# The same insert for a batch whose rows differ only in id, input and dedup key (an event
# source's batch, a receiver's): the other columns are bound once, and the JSON holds
# three strings per row. SQLite's work per row halves (each ``->>`` walks the row's
# array: 17 of them cost more than the row's seven index inserts), and so does encoding.
_INSERT_SHARED = (
    "INSERT INTO jobs (id, input, dedup_key, workspace, task, source_type, source_id, tags, "
    "parent_job_id, max_attempts, priority, concurrency_key, concurrency_limit, "
    "concurrency_strategy, rate_key, rate_limit, rate_per, "
    "created_at, status, attempt, cancel_requested) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, "
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, 'pending', 0, 0 FROM json_each(?) WHERE true ON CONFLICT DO NOTHING"
)
# The columns of a NewJobRow besides id (0), input (3) and dedup key (6).
_SHARED_COLUMNS = itemgetter(1, 2, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
_ROW_KEY = itemgetter(0, 3, 6)
_STEPS_OF = (
    f"SELECT {STEP_COLUMNS} FROM steps WHERE job_id IN (SELECT value FROM json_each(?)) "
    "ORDER BY job_id, started_at IS NULL, started_at, name"
)
# The unary + keeps SQLite from driving the join through the status index (scanning the
# JSON once per live job): the batch must drive it, through the primary key.
_FINISH = """
    UPDATE jobs
       SET status = v.value ->> '$.status', output = v.value -> '$.output',
           error = v.value ->> '$.error', finished_at = ?
      FROM json_each(?) AS v
     WHERE jobs.id = v.value ->> '$.id'
       AND +jobs.status IN ('pending', 'running')
       AND (v.value ->> '$.worker_id' IS NULL OR jobs.worker_id = v.value ->> '$.worker_id')
    RETURNING jobs.id, jobs.tags, jobs.concurrency_key
"""
_INSERT_LOGS = (
    "INSERT INTO logs (job_id, step, stream, line, ts) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?)"
)


def to_text(value: datetime) -> str:
    """The text SQLAlchemy stores (``_TS_FORMAT``), in UTC. ``isoformat`` with a fixed
    precision writes exactly that and is four times faster than ``strftime``."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


_SET_ASIDE = (
    "AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(?))) "
    "AND (rate_key IS NULL OR rate_key NOT IN (SELECT value FROM json_each(?))) "
)


def _picks(count: int, columns: str, extra: str = "") -> str:
    """The best pending jobs of ``count`` signatures (highest priority, then oldest). One
    ordered, limited sub-select per signature, so each walks the partial claim index in
    order and stops after ``limit`` rows, however long the queue (an IN list would sort
    every pending match first)."""
    one = (
        f"SELECT * FROM (SELECT {columns} FROM jobs WHERE status = 'pending' AND tags = ? "
        f"AND {NOT_PAUSED} {_SET_ASIDE}{extra}ORDER BY priority DESC, created_at, id LIMIT ?)"
    )
    return " UNION ALL ".join([one] * count)


def _claim_sql(count: int) -> str:
    """Claims the jobs without flow limits among the best ``limit`` (see ``_picks``)."""
    picks = _picks(count, "id, priority, created_at, concurrency_key, rate_key")
    return (
        "UPDATE jobs SET status = 'running', worker_id = ?, attempt = attempt + 1, "
        f"started_at = ? WHERE id IN (SELECT id FROM ({picks}) "
        "ORDER BY priority DESC, created_at, id LIMIT ?) "
        "AND concurrency_key IS NULL AND rate_key IS NULL "
        f"RETURNING {JOB_COLUMNS}"
    )


def _held_sql(count: int) -> str:
    """The best pending jobs with flow limits, unclaimed, with their limits (for
    ``store.flow``)."""
    picks = _picks(
        count,
        FLOW_COLUMNS,
        "AND (concurrency_key IS NOT NULL OR rate_key IS NOT NULL) ",
    )
    return f"SELECT * FROM ({picks}) ORDER BY priority DESC, created_at, id LIMIT ?"


def _pick_sql(count: int) -> str:
    """The best pending jobs, limited or not, with their limits (while limited jobs are
    about, this one pick replaces the fast path's claim and its held read)."""
    picks = _picks(count, FLOW_COLUMNS)
    return f"SELECT * FROM ({picks}) ORDER BY priority DESC, created_at, id LIMIT ?"


def _shared(rows: Sequence[NewJobRow]) -> tuple[Any, ...] | None:
    """The columns every row has in common (all but id, input and dedup key), or None
    when the rows differ in one of them."""
    shared = {_SHARED_COLUMNS(r) for r in rows}
    return shared.pop() if len(shared) == 1 else None


def _encode_keys(rows: Sequence[tuple[str, str, str | None]]) -> str:
    """(id, input, dedup key) rows, all strings or None, as one JSON array; a string
    orjson refuses (a lone surrogate) goes through the standard encoder, whose text then
    fails as it always did."""
    return fast_text(rows) or dumps(rows)


def _insert_jobs(
    db: sqlite3.Connection,
    rows: Sequence[NewJobRow],
    encoded: str | None,
    created_at: str,
    caller_ids: Sequence[str],
    cursor: tuple[str, str] | None = None,
    shared: tuple[Any, ...] | None = None,
) -> tuple[set[str], dict[str, str], set[str]]:
    # BEGIN IMMEDIATE holds the write lock: nothing changes between these statements. A
    # caller-chosen id may exist already: leave such rows out.
    if cursor is not None:  # the event-source cursor commits with its jobs
        db.execute(_UPSERT_CURSOR, (cursor[0], cursor[1], created_at))
    if caller_ids:
        found = db.execute(_EXISTING_IDS, (dumps(list(caller_ids)),))
        taken = {found_id for (found_id,) in found}
        if taken:
            rows = [r for r in rows if r[0] not in taken]
            encoded = None
    before = db.total_changes
    # The change count tells whether any dedup key clashed (RETURNING would hand the GIL
    # over once per row).
    if shared is not None and encoded is not None:  # ``encoded`` holds (id, input, key)s
        db.execute(_INSERT_SHARED, (*shared, created_at, encoded))
    else:
        db.execute(_INSERT_JOBS, (created_at, dumps(rows) if encoded is None else encoded))
    existing: dict[str, str] = {}
    if db.total_changes - before == len(rows):
        created = {r[0] for r in rows}
    else:  # some keys existed: look up which job holds each
        keys = [r[6] for r in rows if r[6] is not None]
        existing = dict(
            (key, found_id) for found_id, key in db.execute(_EXISTING_KEYS, (dumps(keys),))
        )
        created = {r[0] for r in rows if r[6] is None or existing.get(r[6]) == r[0]}
        existing = {key: found_id for key, found_id in existing.items() if found_id not in created}
    signatures = {r[7] for r in rows if r[0] in created}
    return created, existing, signatures


_CLAIM_IDS = (
    "UPDATE jobs SET status = 'running', worker_id = ?, attempt = attempt + 1, started_at = ? "
    "WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending' "
    f"RETURNING {JOB_COLUMNS}"
)


def _claim(
    db: sqlite3.Connection,
    sqls: tuple[str, str, str],
    worker_id: str,
    signatures: Sequence[str],
    limit: int,
    now: datetime,
    outcome: LaneOutcome,
    windows: RateWindows,
) -> list[JobRecord]:
    """The fast path, then the limited lane for the held jobs, in rounds that set full
    keys aside (see ``store.flow``), all in this one transaction."""
    # Stamped under the write lock: later than the end of every run whose finish
    # committed before (a start stamped earlier could seem to overlap it).
    now = max(now, utcnow())
    now_text = to_text(now)
    rows: list[Any] = []
    aside = ("[]", "[]")
    windows.new_transaction()

    def take(ids: list[str]) -> int:
        claimed = db.execute(_CLAIM_IDS, (worker_id, now_text, dumps(ids))).fetchall()
        rows.extend(claimed)
        return len(claimed)

    for _ in range(MAX_ROUNDS):
        room = limit - len(rows)
        params: list[Any] = [worker_id, now_text]
        held_params: list[Any] = []
        for signature in signatures:
            params += (signature, *aside, room)
            held_params += (signature, *aside, room)
        free: list[str] = []
        if outcome.flow_mode:  # limited jobs came up last time: one pick for all
            picked = db.execute(sqls[2], [*held_params, room]).fetchall()
            held = [r for r in picked if r[3] is not None or r[6] is not None]
            free = [r[0] for r in picked if r[3] is None and r[6] is None]
            if not held:
                if free:
                    take(free)
                if aside == ("[]", "[]"):
                    outcome.flow_mode = False  # none in the window: the fast path again
                break
        else:
            got = db.execute(sqls[0], [*params, room]).fetchall()
            rows.extend(got)
            if len(got) >= room:  # the window held no job with limits, or the queue ran dry
                break
            held = db.execute(sqls[1], [*held_params, room - len(got)]).fetchall()
            if not held:
                break
            outcome.flow_mode = True
        before, full = len(rows), (len(outcome.full_keys), len(outcome.full_rates))
        heads_known = aside[1] == "[]"  # no rate key set aside: the held rows are the heads
        sqlite_lane(
            db, signatures, held, heads_known, free, limit - len(rows), now, now_text, take,
            outcome, windows,
        )  # fmt: skip
        if len(rows) == before and full == (len(outcome.full_keys), len(outcome.full_rates)):
            break  # nothing moved: another round would see the same
        if len(rows) >= limit:
            break
        aside = (dumps(sorted(outcome.full_keys)), dumps(sorted(outcome.full_rates)))
    if not rows:
        return []
    steps: dict[str, list[StepRecord]] = {}
    for s in db.execute(_STEPS_OF, (dumps([r[0] for r in rows]),)):
        values = (*s[:8], _ts(s[8]), _ts(s[9]))
        steps.setdefault(s[0], []).append(step_record(values, json.loads))
    jobs = [
        job_record((*r[:16], _ts(r[16]), _ts(r[17]), _ts(r[18])), steps.get(r[0], ()), json.loads)
        for r in rows
    ]
    jobs.sort(key=lambda j: (j.created_at, j.id))  # RETURNING has no order
    return jobs


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
_UPSERT_STEPS = (
    "INSERT INTO steps (job_id, name, action, status, exit_code, output, error, attempts,"
    " started_at, finished_at) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3,"
    " value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9"
    " FROM json_each(?) WHERE true ON CONFLICT (job_id, name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STEP_FIELDS)
)


# Claims and finishes return a row per job (RETURNING): on the writer thread each row is
# a GIL hand-off, so they stay inline up to here (a claim of 1,000 jobs: ~10 ms).
_RETURNING_INLINE_MAX = 1_000


def _encode_steps(rows: Sequence[StepRow]) -> str:
    return dumps(
        [
            (*row[:8], to_text(row[8]) if row[8] else None, to_text(row[9]) if row[9] else None)
            for row in rows
        ]
    )


class SqliteFastPath:
    """The hot paths on SQLite: one writer-thread transaction each, under the store's
    write lock (so they never wait on our own Core writes through the busy handler);
    wake-ups are published in-process after the commit."""

    def __init__(
        self,
        writer: SqliteWriter,
        lock: WriteLock,
        publish: Callable[[str, str], None],
        wake: WakeTimer | None = None,
    ) -> None:
        self._wake = wake
        self._writer = writer
        self._lock = lock
        self._publish = publish
        self._claim_sql: dict[int, tuple[str, str, str]] = {}
        self._flow_seen = False  # the last claim met jobs with limits
        self._windows = RateWindows()  # the claim's rate windows, kept between claims

    async def insert_jobs(
        self,
        rows: Sequence[NewJobRow],
        now: datetime,
        caller_ids: Sequence[str],
        cursor: tuple[str, str] | None = None,
    ) -> tuple[set[str], dict[str, str]]:
        created_at = to_text(now)
        # Encoded here, while the loop holds the GIL.
        shared = None if caller_ids else _shared(rows)
        if caller_ids:
            encoded = None
        elif shared is not None:
            encoded = _encode_keys(list(map(_ROW_KEY, rows)))
        else:
            encoded = dumps(rows)
        async with self._lock.ingest():  # after the worker's waiting writes
            created, existing, signatures = await self._writer.transaction(
                lambda db: _insert_jobs(db, rows, encoded, created_at, caller_ids, cursor, shared),
                len(rows),
            )
        for signature in sorted(signatures):
            self._publish(Channel.JOBS.value, hint([signature]))
        return created, existing

    async def claim(
        self,
        worker_id: str,
        signatures: Sequence[str],
        limit: int,
        now: datetime,
        set_aside: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> tuple[list[JobRecord], list[HeldRow]]:
        """Everything in one transaction: nothing is ever handed back as held."""
        sqls = self._claim_sql.get(len(signatures))
        if sqls is None:
            count = len(signatures)
            sqls = self._claim_sql[count] = (_claim_sql(count), _held_sql(count), _pick_sql(count))
        outcome = LaneOutcome(self._flow_seen)
        windows = self._windows
        async with self._lock:
            try:
                jobs = await self._writer.transaction(
                    lambda db: _claim(
                        db, sqls, worker_id, signatures, limit, now, outcome, windows
                    ),
                    limit,
                    inline_max=_RETURNING_INLINE_MAX,
                )
            except BaseException:
                windows.forget()
                raise
        self._flow_seen = outcome.flow_mode
        if outcome.skipped:
            self._publish(Channel.FINISHED.value, hint(outcome.skipped))
        for job_id in outcome.cancel_requested:
            self._publish(Channel.CANCEL.value, job_id)
        for job_id in (*outcome.skipped, *outcome.cancel_requested):
            self._publish(Channel.LOGS.value, job_id)
        if self._wake is not None:
            self._wake.wake_at(outcome.retry_at)
        return jobs, []

    async def write(self, plan: WritePlan, now: datetime) -> set[str]:
        steps = _encode_steps(plan.steps) if plan.steps else None
        finishes = None
        if plan.finishes:
            batch = []
            for job_id, worker_id, status, output, error in plan.finishes:
                item: dict[str, Any] = {"id": job_id, "worker_id": worker_id, "status": status}
                if output is not None:  # a missing key reads as SQL NULL; JSON null would not
                    item["output"] = output
                item["error"] = error
                batch.append(item)
            finishes = (to_text(now), dumps(batch))
        carried = plan.finish_steps

        freed: set[str] = set()  # tag signatures of keyed jobs that ended

        def work(db: sqlite3.Connection) -> set[str]:
            if steps is not None:
                db.execute(_UPSERT_STEPS, (steps,))
            if finishes is None:
                return set()
            changed: set[str] = set()
            for job_id, tags, key in db.execute(_FINISH, finishes):
                changed.add(job_id)
                if key is not None:
                    freed.add(tags)
            rows = [r for r in carried if r[0] in changed]
            if rows:
                db.execute(_UPSERT_STEPS, (_encode_steps(rows),))
            return changed

        size = len(plan.steps) + len(plan.finishes) + len(carried)
        async with self._lock:
            changed = await self._writer.transaction(work, size, _RETURNING_INLINE_MAX)
        if changed:
            self._publish(Channel.FINISHED.value, hint(sorted(changed)))
        for signature in sorted(freed):  # room for the next job of its key: wake claimers
            self._publish(Channel.JOBS.value, hint([signature]))
        return changed

    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        encoded = dumps([(x.job_id, x.step, x.stream.value, x.line, to_text(x.ts)) for x in lines])
        async with self._lock:
            await self._writer.transaction(
                lambda db: db.execute(_INSERT_LOGS, (encoded,)), len(lines)
            )
        for job_id in dict.fromkeys(x.job_id for x in lines):
            self._publish(Channel.LOGS.value, job_id)

    async def close(self) -> None:
        await self._writer.close()
