"""Workflow step records, group-committed: concurrent workflows' records share one
statement (one round trip on PostgreSQL, one transaction on SQLite).

A step's record must be durable before the step returns its result, so each caller
waits for the commit of the batch that holds its row (``group_commit.GroupCommit``):
durable as if written alone, but 32 workflows recording at once need one commit, not
32 (each with BEGIN, INSERT and COMMIT through SQLAlchemy: three round trips).

The statement inserts the rows bound as one JSON array and skips those whose
``(job_id, seq)`` exists (``ON CONFLICT DO NOTHING``), returning the rows it inserted:
a row that is not returned lost to a record written first (a replay racing a stale
run), which the caller then reads. Anything else (a job that is gone: a foreign key)
fails the statement; the group commit then writes each caller's row alone, and the
caller whose row fails takes the Core path, which raises as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.core.workflows import WorkflowStep
from headwater.store.fastpath import driver_connection
from headwater.store.ids import utcnow
from headwater.store.queries import dumps
from headwater.store.sqlite import to_text
from headwater.store.sqlite_writer import SqliteWriter

__all__ = ["RecordRow", "encode_record", "insert_records_pg", "insert_records_sqlite"]

# (job_id, seq, name, kind, status, output JSON text or None, error, attempts,
#  started_at text, finished_at text): one record, encoded for the dialect.
RecordRow = tuple[str, int, str, str, str, str | None, str | None, int, str | None, str]

_COLUMNS = "job_id, seq, name, kind, status, output, error, attempts, started_at, finished_at"

_PG_INSERT = f"""
INSERT INTO workflow_steps ({_COLUMNS})
SELECT e->>0, CAST(e->>1 AS int), e->>2, e->>3, e->>4, CAST(e->>5 AS jsonb), e->>6,
       CAST(e->>7 AS int), CAST(e->>8 AS timestamptz), CAST(e->>9 AS timestamptz)
  FROM json_array_elements(CAST($1 AS json)) AS e
ON CONFLICT (job_id, seq) DO NOTHING
RETURNING job_id, seq
"""

# "WHERE true" lets the parser tell ON CONFLICT from a join constraint.
_SQLITE_INSERT = (
    f"INSERT INTO workflow_steps ({_COLUMNS}) SELECT value ->> 0, value ->> 1, value ->> 2,"
    " value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8,"
    " value ->> 9 FROM json_each(?) WHERE true ON CONFLICT (job_id, seq) DO NOTHING"
    " RETURNING job_id, seq"
)


def _pg_ts(value: datetime) -> str:
    text = value.isoformat()
    return text if value.tzinfo is not None else text + "+00:00"


def encode_record(job_id: str, step: WorkflowStep, pg: bool) -> RecordRow:
    """The row of ``step`` (raises JsonValueError for an output JSON cannot hold)."""
    ts: Callable[[datetime], str] = _pg_ts if pg else to_text
    return (
        job_id,
        step.seq,
        step.name,
        step.kind.value,
        step.status,
        None if step.output is None else dumps(step.output),
        step.error,
        step.attempts,
        None if step.started_at is None else ts(step.started_at),
        ts(step.finished_at or utcnow()),
    )


async def insert_records_pg(engine: AsyncEngine, rows: Sequence[RecordRow]) -> list[bool]:
    """One self-committing statement; per row whether it was inserted."""
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        found = await db.fetch(_PG_INSERT, dumps(rows))
    return _inserted(rows, {(r[0], r[1]) for r in found})


async def insert_records_sqlite(
    writer: SqliteWriter, lock: AbstractAsyncContextManager[Any], rows: Sequence[RecordRow]
) -> list[bool]:
    """One transaction on the fast path's writer (inline for small batches)."""
    encoded = dumps(rows)

    def work(db: Any) -> set[tuple[str, int]]:
        return {(r[0], r[1]) for r in db.execute(_SQLITE_INSERT, (encoded,))}

    async with lock:
        inserted = await writer.transaction(work, len(rows))
    return _inserted(rows, inserted)


def _inserted(rows: Sequence[RecordRow], inserted: set[tuple[str, int]]) -> list[bool]:
    """Per row whether it is the record now stored. Two rows of one call in a batch
    (two runs of a workflow racing): neither is known to have won, both read it back."""
    counts = Counter((r[0], r[1]) for r in rows)
    return [(r[0], r[1]) in inserted and counts[(r[0], r[1])] == 1 for r in rows]
