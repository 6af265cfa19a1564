"""``SqlStore``: the one Store implementation, on SQLite (aiosqlite) or PostgreSQL (asyncpg).

Construct it with ``await open_store(url)``. The Core statements live in ``queries``; the
dialect specifics are the engine setup and the four hot paths (``sqlite``/``postgres``,
behind ``fastpath.FastPath``), and how wake-ups travel: SQLite publishes in-process after
commit, PostgreSQL sends ``pg_notify`` inside the transaction and hears it back on its
LISTEN connection (so nothing is published twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headwater import jsonsafe
from headwater.errors import ConfigError, ConflictError, NotFoundError
from headwater.store import handoff, job_writes, listing
from headwater.store import migrate as migrations
from headwater.store import queries as q
from headwater.store.activity_ops import ActivityOps
from headwater.store.approval_ops import ApprovalOps
from headwater.store.base import (
    NO_FLOW,
    Channel,
    InsertOutcome,
    JobFilter,
    JobRecord,
    JobStatus,
    LogLine,
    LogRecord,
    NewJob,
    RecoveredJob,
    StepRecord,
    StepUpdate,
    Store,
    Subscription,
    WorkerRecord,
)
from headwater.store.claim_ops import ClaimOps
from headwater.store.dead_letter_ops import DeadLetterOps
from headwater.store.fastpath import (
    FastPath,
    NewJobRow,
    NoLock,
    Transaction,
    chunks,
    hint,
)
from headwater.store.flow import WakeTimer
from headwater.store.flow_ops import FlowOps
from headwater.store.gather_ops import GatherOps
from headwater.store.group_commit import GroupCommit
from headwater.store.handoff import LocalSlots
from headwater.store.ids import UuidV7Generator, tag_signature, utcnow
from headwater.store.job_writes import JobWrite, step_rows
from headwater.store.lease_ops import LeaseOps
from headwater.store.notify import Broadcaster
from headwater.store.postgres import (
    PgFastPath,
    PgListener,
    asyncpg_connect_kwargs,
    create_pg_engine,
)
from headwater.store.rows import flow_row
from headwater.store.sqlite import (
    BEGIN_OPTION,
    SqliteFastPath,
    SqliteWriter,
    create_sqlite_engine,
    sqlite_path,
)
from headwater.store.state_ops import StateOps
from headwater.store.upkeep_ops import UpkeepOps
from headwater.store.urls import default_sqlite_url, normalise_url, unreachable_message
from headwater.store.worker_ops import WorkerOps
from headwater.store.workflow_ops import WorkflowOps
from headwater.store.write_lock import WriteLock

__all__ = ["SqlStore", "default_sqlite_url", "normalise_url", "open_store"]

log = structlog.get_logger(__name__)

_LOST_STEP_ERROR = "interrupted: worker lost"


async def open_store(
    url: str,
    *,
    migrate: bool = True,
    pool_size: int = 10,
    busy_timeout: float = 30.0,
    connect_timeout: float = 10.0,
    echo: bool = False,
) -> SqlStore:
    """A ready store: engine configured, reachable, schema migrated to head.

    Raises ``ConfigError`` for an unsupported URL, an unreachable database or a schema
    newer than this code.
    """
    sa_url = normalise_url(url)
    shown = sa_url.render_as_string(hide_password=True)
    if sa_url.get_backend_name() == "sqlite":
        try:
            engine = create_sqlite_engine(
                sa_url, busy_timeout=busy_timeout, pool_size=pool_size,
                json_serializer=q.dumps, echo=echo,
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(f"cannot create the directory of {shown}: {exc}") from exc
    else:
        engine = create_pg_engine(
            sa_url, pool_size=pool_size, connect_timeout=connect_timeout,
            json_serializer=q.dumps, echo=echo,
        )  # fmt: skip
    store = SqlStore(engine, connect_timeout=connect_timeout, busy_timeout=busy_timeout)
    try:
        if migrate:
            await _migrate(store)
        else:
            await store.ping()
    except migrations.SchemaVersionError as exc:
        await store.close()
        raise ConfigError(
            f"cannot migrate {shown}: {exc}. Was the database created by a newer headwater?"
        ) from exc
    except (DBAPIError, OSError, TimeoutError) as exc:
        await store.close()
        raise ConfigError(unreachable_message(sa_url, exc)) from exc
    log.info("store.opened", url=shown, dialect=engine.dialect.name)
    return store


async def _migrate(store: SqlStore, attempts: int = 8) -> None:
    """Migrate; on SQLite retry a "database is locked" with backoff. SQLite reports it at
    once, without its busy handler, when connections to a fresh database race to switch
    it to WAL or to upgrade a read lock, as processes starting together do."""
    for attempt in range(attempts):
        try:
            await store.migrate()
            return
        except DBAPIError as exc:
            locked = store.dialect == "sqlite" and "locked" in str(exc).lower()
            if not locked or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)


class SqlStore(
    ActivityOps,
    ClaimOps,
    ApprovalOps,
    StateOps,
    LeaseOps,
    DeadLetterOps,
    WorkerOps,
    UpkeepOps,
    FlowOps,
    GatherOps,
    WorkflowOps,
    Store,
):
    """The Store on SQLite or PostgreSQL. Use ``open_store``; one instance per process."""

    def __init__(
        self, engine: AsyncEngine, *, connect_timeout: float = 10.0, busy_timeout: float = 30.0
    ) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._pg = self._dialect == "postgresql"
        self._broadcaster = Broadcaster()
        self._rate_wake = WakeTimer(self._broadcaster.publish)
        self._new_id = UuidV7Generator()
        self._signatures: dict[frozenset[str], str] = {}  # tags → tag signature
        self._closed = False
        self._listener: PgListener | None = None
        self._local_slots: LocalSlots | None = None
        self._write_lock: WriteLock | NoLock
        if self._pg:
            self._writer = engine
            # Single statements need no transaction: skip BEGIN/ROLLBACK round trips.
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._snapshot = self._reader  # READ COMMITTED would not add consistency
            self._write_lock = NoLock()
            self._listener = PgListener(
                asyncpg_connect_kwargs(engine.url, connect_timeout),
                self._broadcaster,
                [channel.value for channel in Channel],
            )
        else:
            self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            self._reader = engine.execution_options(**{BEGIN_OPTION: None})
            self._snapshot = engine.execution_options(**{BEGIN_OPTION: "DEFERRED"})
            # SQLite has one writer. Queueing our own writers here is far cheaper than
            # letting them poll SQLite's busy handler (which sleeps up to 100 ms a try);
            # other processes still wait through the busy timeout. Job inserts queue
            # behind the worker's writes (see write_lock).
            self._write_lock = WriteLock()
        self._fast: FastPath
        self._sqlite_writer: SqliteWriter | None = None
        if self._pg:
            self._fast = PgFastPath(engine)
        else:
            writer = self._sqlite_writer = SqliteWriter(sqlite_path(engine.url), busy_timeout)
            assert isinstance(self._write_lock, WriteLock)
            self._fast = SqliteFastPath(
                writer, self._write_lock, self._broadcaster.publish, self._rate_wake
            )
        # Step records and finishes of concurrent jobs share one transaction (job_writes).
        self._job_writes: GroupCommit[JobWrite, Any] = GroupCommit(self._write_jobs)
        self._init_workflow_records()
        self._insert_rejected = q.insert_rejected(self._dialect)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def write_engine(self) -> AsyncEngine:
        """The engine for a transaction that writes. On SQLite it begins IMMEDIATE: a
        transaction that reads first and writes later would otherwise fail at once with
        "database is locked" whenever another process committed in between (WAL cannot
        upgrade a stale read snapshot, and SQLite's busy handler is not asked)."""
        return self._writer

    @property
    def dialect(self) -> str:
        return self._dialect

    # -- plumbing ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Transaction]:
        async with self._write_lock, self._writer.begin() as conn:
            tx = Transaction(conn, self._pg)
            yield tx
        for channel, payload in tx.published:  # committed: now wake in-process waiters
            self._broadcaster.publish(channel, payload)

    async def _steps_by_job(
        self, conn: AsyncConnection, job_ids: Sequence[str]
    ) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = defaultdict(list)
        for chunk in chunks(job_ids, q.MAX_PARAMS):
            for row in await conn.execute(q.steps_of(chunk)):
                found[row.job_id].append(q.step_from_row(row))
        return found

    # -- lifecycle -----------------------------------------------------------------------
    async def migrate(self) -> None:
        await migrations.upgrade(self._writer)

    async def ping(self) -> None:
        """Fail unless the database answers."""
        async with self._reader.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            await self._listener.close()
        await self._job_writes.close()
        await self._workflow_records.close()
        self._rate_wake.cancel()
        self._broadcaster.close_all()
        await self._fast.close()
        await self._engine.dispose()

    # -- jobs ----------------------------------------------------------------------------
    async def insert_jobs(
        self, jobs: Sequence[NewJob], cursor: tuple[str, str] | None = None
    ) -> list[InsertOutcome]:
        if not jobs:
            if cursor is not None:
                await self.save_cursor(*cursor)
            return []
        rows: list[NewJobRow] = []
        caller_ids: list[str] = []
        first_input: list[int] = []  # per row: the input index it came from
        row_of: list[int] = []  # per input: the row that stands for it
        by_key: dict[str, int] = {}
        by_id: dict[str, int] = {}
        new_ids = self._new_id.take(len(jobs))  # one each; a duplicate's goes unused
        signatures = self._signatures
        # Strict: NaN, a NUL or a lone surrogate raises JsonValueError before the database
        # sees the batch (the dispatcher then finds the bad rows, see Dispatcher._isolate).
        dumps = jsonsafe.encode
        for i, job in enumerate(jobs):
            # Duplicates inside the batch are resolved here: later ones share the first
            # one's outcome (created=False), exactly as if they came in a later batch.
            key = job.dedup_key
            index = by_key.get(key) if key is not None else None
            if index is None and job.id is not None:
                index = by_id.get(job.id)
            if index is None:
                index = len(rows)
                if job.id is None:
                    job_id = new_ids[i]
                else:
                    job_id = job.id
                    by_id[job_id] = index
                    caller_ids.append(job_id)
                signature = signatures.get(job.tags)
                if signature is None:
                    if len(signatures) > 1_000:  # a bound, not a policy: tag sets are few
                        signatures.clear()
                    signature = signatures[job.tags] = tag_signature(job.tags)
                job_input = job.input
                text = dumps(job_input if type(job_input) is dict else dict(job_input))
                if job.priority == 0 and job.flow is NO_FLOW:  # the usual job: no splat
                    rows.append(
                        (
                            job_id, job.workspace, job.task, text, job.source_type,
                            job.source_id, key, signature, job.parent_job_id, job.max_attempts,
                            0, None, None, None, None, None, None,
                        )
                    )  # fmt: skip
                else:
                    rows.append(
                        (
                            job_id, job.workspace, job.task, text, job.source_type,
                            job.source_id, key, signature, job.parent_job_id, job.max_attempts,
                            *flow_row(job.priority, job.flow),
                        )
                    )  # fmt: skip
                first_input.append(i)
                if key is not None:
                    by_key[key] = index
            row_of.append(index)

        created, existing = await handoff.insert_rows(
            self._fast, self._engine, self._local_slots, rows, caller_ids, cursor
        )
        if len(created) == len(rows) == len(jobs):  # the usual case: every job is new
            return [InsertOutcome(row[0], True) for row in rows]
        outcomes: list[InsertOutcome] = []
        for i, index in enumerate(row_of):
            job_id, key = rows[index][0], rows[index][6]
            if job_id in created:
                outcomes.append(InsertOutcome(job_id, created=first_input[index] == i))
            else:  # clashed on dedup_key, or on a caller-chosen id that already exists
                found = existing.get(key, job_id) if key is not None else job_id
                outcomes.append(InsertOutcome(found, created=False))
        return outcomes

    def set_local_slots(self, slots: LocalSlots | None) -> None:
        """PostgreSQL: new jobs may go straight to this worker's idle slots (see
        ``store.handoff``); None stops that. SQLite claims inline, without a round trip
        to save: there it changes nothing."""
        self._local_slots = slots

    async def get_job(self, job_id: str) -> JobRecord | None:
        async with self._snapshot.connect() as conn:
            row = (await conn.execute(q.job_by_id(job_id))).first()
            if row is None:
                return None
            found = await self._steps_by_job(conn, [job_id])
        return q.job_from_row(row, found.get(job_id, ()))

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        records: list[JobRecord] = []
        async with self._reader.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(job_ids)), q.MAX_PARAMS):
                records.extend(q.job_from_row(r) for r in await conn.execute(q.jobs_by_ids(chunk)))
        return records

    async def find_job_ids(self, fragment: str, limit: int = 10) -> list[str]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(q.job_ids_matching(fragment, limit))
            return [str(r[0]) for r in rows]

    async def list_jobs(self, flt: JobFilter) -> list[JobRecord]:
        async with self._reader.connect() as conn:
            # SQLite has no statistics to choose between sorting the queue and walking
            # the jobs newest first: it is asked how long the queue is (PostgreSQL knows).
            long_queue = False
            if self._dialect == "sqlite" and listing.reads_queue(flt):
                long_queue = bool((await conn.execute(listing.queue_is_long())).scalar())
            stmt = listing.list_jobs(flt, self._dialect, long_queue)
            return [q.job_from_row(r) for r in await conn.execute(stmt)]

    async def finish_job(
        self,
        job_id: str,
        worker_id: str | None,
        status: JobStatus,
        output: Any = None,
        error: str | None = None,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        if not JobStatus(status).is_terminal:
            raise ValueError(f"finish_job needs a final status, not {status!r}")
        write = JobWrite(step_rows(job_id, steps), (job_id, worker_id, status, output, error))
        (changed,) = await self._job_writes.submit([write])
        return bool(changed)

    async def finish_jobs(
        self, results: Sequence[tuple[str, str | None, JobStatus, Any, str | None]]
    ) -> list[bool]:
        if not results:
            return []
        return await self._write_jobs([JobWrite(finish=r) for r in results])

    async def upsert_steps(self, job_id: str, steps: Sequence[StepUpdate]) -> None:
        if not steps:
            return
        try:
            await self._job_writes.submit([JobWrite(step_rows(job_id, steps))])
        except Exception as exc:
            if await self.get_job(job_id) is None:
                raise NotFoundError(f"job {job_id} not found") from exc
            raise

    async def release_job(
        self,
        job_id: str,
        worker_id: str,
        tags: frozenset[str],
        reason: str,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        await self.upsert_steps(job_id, steps)
        signature = tag_signature(tags)
        async with self._write() as tx:
            result = await tx.conn.execute(q.release(job_id, worker_id, signature, reason))
            changed = bool(result.rowcount)
            if changed:
                await tx.notify(Channel.JOBS, [hint([signature])])
        log.info("store.job_released", job_id=job_id, tags=sorted(tags), changed=changed)
        return changed

    async def _write_jobs(self, batch: Sequence[JobWrite]) -> list[Any]:
        planned = job_writes.plan(batch)
        changed = await self._fast.write(planned, utcnow())
        return job_writes.results(batch, planned, changed)

    async def request_cancel(self, job_id: str) -> JobRecord:
        async with self._write() as tx:
            row = (await tx.conn.execute(q.request_cancel(job_id, utcnow()))).first()
            if row is None:
                status = (await tx.conn.execute(q.job_status(job_id))).scalar()
                if status is None:
                    raise NotFoundError(f"job {job_id} not found")
                raise ConflictError(f"job {job_id} is already {status}")
            finished = row.status == JobStatus.CANCELLED
            if finished:  # a suspended job's waiting steps end with it
                await tx.conn.execute(q.cancel_waiting_steps(job_id, utcnow()))
            found = await self._steps_by_job(tx.conn, [job_id])
            await tx.notify(Channel.FINISHED if finished else Channel.CANCEL, [job_id])
        log.info("store.cancel_requested", job_id=job_id, cancelled_at_once=finished)
        return q.job_from_row(row, found.get(job_id, ()))

    async def count_in_flight(self, source_id: str) -> int:
        async with self._reader.connect() as conn:
            return int((await conn.execute(q.count_in_flight(source_id))).scalar_one())

    async def count_jobs_by_status(
        self, statuses: Collection[JobStatus] | None = None
    ) -> dict[str, int]:
        wanted = list(JobStatus) if statuses is None else list(statuses)
        counts = {status.value: 0 for status in wanted}
        async with self._reader.connect() as conn:
            for stmt in q.count_by_status(self._dialect, wanted):
                for status, count in await conn.execute(stmt):
                    counts[status] = int(count)
        return counts

    # -- logs ----------------------------------------------------------------------------
    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        await self._fast.append_logs(lines)

    async def get_logs(
        self, job_id: str, after_seq: int = 0, limit: int = 1000, step: str | None = None
    ) -> list[LogRecord]:
        async with self._reader.connect() as conn:
            result = await conn.execute(q.get_logs(job_id, after_seq, limit, step))
            return [q.log_from_row(r) for r in result]

    # -- workers and recovery ------------------------------------------------------------
    async def register_worker(self, worker_id: str, name: str, tags: frozenset[str]) -> None:
        now = utcnow()
        row = {
            "id": worker_id,
            "name": name,
            "tags": tag_signature(tags),
            "started_at": now,
            "last_heartbeat": now,
        }
        async with self._write() as tx:
            await tx.conn.execute(q.register_worker(self._dialect, row))
        log.info("store.worker_registered", worker_id=worker_id, name=name, tags=row["tags"])

    async def heartbeat(self, worker_id: str) -> list[str]:
        async with self._write() as tx:
            await tx.conn.execute(q.touch_worker(worker_id, utcnow()))
            return list((await tx.conn.execute(q.cancel_requested_of(worker_id))).scalars())

    async def deregister_worker(self, worker_id: str) -> None:
        async with self._write() as tx:
            await tx.conn.execute(q.delete_worker(worker_id))
        log.info("store.worker_deregistered", worker_id=worker_id)

    async def list_workers(self) -> list[WorkerRecord]:
        async with self._reader.connect() as conn:
            return [q.worker_from_row(r) for r in await conn.execute(q.list_workers())]

    async def recover_stale_jobs(self, stale_after: float) -> list[RecoveredJob]:
        # Approval steps past their timeout are failed by the same sweep.
        return [*await self._recover_stale(stale_after), *await self.expire_approvals()]

    async def _recover_stale(self, stale_after: float) -> list[RecoveredJob]:
        now = utcnow()
        recovered: list[RecoveredJob] = []
        async with self._write() as tx:
            cutoff = now - timedelta(seconds=stale_after)
            stale = (await tx.conn.execute(q.stale_jobs(cutoff))).all()
            if not stale:
                return []
            requeued: list[str] = []
            signatures: set[str] = set()
            ended: list[dict[str, str]] = []
            lines: list[dict[str, Any]] = []
            for job in stale:
                lost = f"worker {job.worker_id or '<none>'} stopped heartbeating"
                if job.cancel_requested:
                    reason = f"{lost}; cancelled as requested"
                    ended.append({"b_id": job.id, "b_status": "cancelled", "b_error": reason})
                elif job.attempt < job.max_attempts:
                    reason = f"{lost}; requeued for attempt {job.attempt + 1} of {job.max_attempts}"
                    requeued.append(job.id)
                    signatures.add(job.tags)
                else:
                    reason = f"{lost}; gave up after {job.attempt} attempts"
                    ended.append({"b_id": job.id, "b_status": "failed", "b_error": reason})
                recovered.append(RecoveredJob(job.id, job.task, job.id in requeued, reason))
                lines.append(
                    {"job_id": job.id, "step": None, "stream": "system", "line": reason, "ts": now}
                )
            ids = [job.id for job in stale]
            for chunk in chunks(ids, q.MAX_PARAMS):
                await tx.conn.execute(q.interrupt_steps(chunk, _LOST_STEP_ERROR, now))
            for chunk in chunks(requeued, q.MAX_PARAMS):
                await tx.conn.execute(q.requeue(chunk))
            if ended:
                await tx.conn.execute(q.give_up(now), ended)
            for chunk in chunks(lines, q.MAX_PARAMS // 5):
                await tx.conn.execute(q.insert_logs(), list(chunk))
            await tx.notify(Channel.JOBS, (hint([s]) for s in sorted(signatures)))
            if ended:
                await tx.notify(Channel.FINISHED, [hint(e["b_id"] for e in ended)])
            await tx.notify(Channel.LOGS, ids)
        for job in recovered:
            log.warning(
                "store.job_recovered", job_id=job.id, requeued=job.requeued, reason=job.reason
            )
        return recovered

    # -- wake-ups ------------------------------------------------------------------------
    def subscribe(self, channel: Channel) -> Subscription:
        subscription = self._broadcaster.subscribe(Channel(channel).value)
        if self._listener is not None:
            self._listener.ensure_started()
        return subscription

    async def wait_listening(self, timeout: float | None = None) -> None:
        """PostgreSQL: wait until the LISTEN connection is up (tests, benchmarks)."""
        if self._listener is not None:
            self._listener.ensure_started()
            await asyncio.wait_for(self._listener.connected.wait(), timeout)
