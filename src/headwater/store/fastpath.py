"""The hot paths' interface, shared by the SQLite and PostgreSQL implementations.

Measured first (bench/store_ingest.py): for a 500-job insert, a 50-job claim and a
500-job finish, SQLAlchemy's per-row parameter and result processing cost several times
the database's own work. These operations (insert, claim, the worker's step and finish
writes, log appends) therefore talk to the driver connection
(asyncpg, checked out of SQLAlchemy's pool; on SQLite a dedicated writer thread, see
``sqlite.SqliteWriter``) with fixed statement texts; everything else stays SQLAlchemy
Core. The statements live next to their dialect (``sqlite.py``, ``postgres.py``) and are
all parameterised. Also here: the small helpers the store and both paths share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from headwater.store.base import (
    Channel,
    JobRecord,
    JobStatus,
    LogLine,
    StepRecord,
    StepStatus,
)
from headwater.store.ids import parse_tags
from headwater.store.job_writes import WritePlan
from headwater.store.queries import PG_NOTIFY
from headwater.store.rows import FinishRequest, HeldRow, NewJobRow, StepRow

T = TypeVar("T")

__all__ = [
    "JOB_COLUMNS",
    "NOT_PAUSED",
    "STEP_COLUMNS",
    "FastPath",
    "FinishRequest",
    "HeldRow",
    "NewJobRow",
    "NoLock",
    "StepRow",
    "Transaction",
    "chunks",
    "driver_connection",
    "hint",
    "job_record",
    "step_record",
]

# Pause and resume (``headwater pause task``): the claim's one predicate for it, kept
# apart from the ordering and limits so each dialect's claim adds it as one ``AND``. A
# paused task's pending jobs stay pending (and keep their place) until it is resumed.
NOT_PAUSED = "task NOT IN (SELECT task FROM paused_tasks)"

# NOTIFY payloads must stay under 8000 bytes; longer hints degrade to "re-read all".
PAYLOAD_LIMIT = 7900

# Column order of the raw SELECT/RETURNING lists the decoders below expect.
JOB_COLUMNS = (
    "id, workspace, task, status, input, output, error, source_type, source_id, dedup_key, "
    "tags, parent_job_id, worker_id, attempt, max_attempts, cancel_requested, created_at, "
    "started_at, finished_at"
)
STEP_COLUMNS = (
    "job_id, name, action, status, exit_code, output, error, attempts, started_at, finished_at"
)


class FastPath(Protocol):
    async def insert_jobs(
        self,
        rows: Sequence[NewJobRow],
        now: datetime,
        caller_ids: Sequence[str],
        cursor: tuple[str, str] | None = None,
    ) -> tuple[set[str], dict[str, str]]:
        """Insert rows whose ids and dedup keys are distinct (``caller_ids``: the ids that
        were not generated here, so may exist already); returns (created ids, dedup key →
        existing id for rows that clashed). ``cursor`` (trigger, value): stored as the
        trigger's event cursor in the same transaction. Wakes ``Channel.JOBS``."""
        ...

    async def claim(
        self,
        worker_id: str,
        signatures: Sequence[str],
        limit: int,
        now: datetime,
        set_aside: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> tuple[list[JobRecord], list[HeldRow]]:
        """Of the ``limit`` best pending jobs (highest priority, then oldest), claims
        those without flow limits (returned oldest first, with their steps) and returns
        the others unclaimed ("held", for ``store.flow``). ``set_aside``: concurrency and
        rate keys whose jobs are left out entirely (found full by this claim)."""
        ...

    async def write(self, plan: WritePlan, now: datetime) -> set[str]:
        """In one transaction: ``plan.steps``, then ``plan.finishes`` (stamped ``now``), then
        ``plan.finish_steps`` of the jobs that changed; returns those job ids. Raises on a
        step of a job that does not exist. Wakes ``Channel.FINISHED``."""
        ...

    async def append_logs(self, lines: Sequence[LogLine]) -> None: ...

    async def close(self) -> None: ...


async def driver_connection(conn: AsyncConnection) -> Any:
    """The aiosqlite/asyncpg connection under a SQLAlchemy connection (same transaction
    on SQLite, where BEGIN is ours; no transaction yet on PostgreSQL)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection


def hint(values: Iterable[str]) -> str:
    joined = ",".join(values)
    return joined if len(joined.encode()) <= PAYLOAD_LIMIT else "*"


def job_record(v: Sequence[Any], steps: Sequence[StepRecord], decode: Any) -> JobRecord:
    """A JobRecord from JOB_COLUMNS values; ``decode`` turns JSON text into values."""
    output = v[5]
    return JobRecord(
        id=v[0],
        workspace=v[1],
        task=v[2],
        status=JobStatus(v[3]),
        input=decode(v[4]) if v[4] is not None else {},
        output=decode(output) if output is not None else None,
        error=v[6],
        source_type=v[7],
        source_id=v[8],
        dedup_key=v[9],
        tags=parse_tags(v[10]),
        parent_job_id=v[11],
        worker_id=v[12],
        attempt=v[13],
        max_attempts=v[14],
        cancel_requested=bool(v[15]),
        created_at=v[16],
        started_at=v[17],
        finished_at=v[18],
        steps=tuple(steps),
    )


def step_record(v: Sequence[Any], decode: Any) -> StepRecord:
    """A StepRecord from STEP_COLUMNS values."""
    return StepRecord(
        job_id=v[0],
        name=v[1],
        action=v[2],
        status=StepStatus(v[3]),
        exit_code=v[4],
        output=decode(v[5]) if v[5] is not None else None,
        error=v[6],
        attempts=v[7],
        started_at=v[8],
        finished_at=v[9],
    )


class NoLock:
    """Stands in for the SQLite write lock on PostgreSQL (row locks do the work)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class Transaction:
    """A write transaction's connection plus its wake-ups (sent on commit only)."""

    __slots__ = ("_pg", "conn", "published")

    def __init__(self, conn: AsyncConnection, pg: bool) -> None:
        self.conn = conn
        self._pg = pg
        self.published: list[tuple[str, str]] = []

    async def notify(self, channel: Channel, payloads: Iterable[str]) -> None:
        payloads = list(payloads)
        if not payloads:
            return
        if self._pg:  # delivered by PostgreSQL at commit, to every listening process
            await self.conn.execute(PG_NOTIFY, {"channel": channel.value, "payloads": payloads})
        else:
            self.published.extend((channel.value, p) for p in payloads)


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
