"""Store throughput: durable event→job ingest, claim and finish, next to the bare driver.

    python bench/store_ingest.py [--db URL ...] [--n 50000] [--batch 500] [--claimers 4]

Without ``--db`` it runs on a temporary SQLite file and on a fresh PostgreSQL database
(created on ``HEADWATER_TEST_PG``'s server and dropped afterwards). Figures:

- ``insert_jobs``: ``Store.insert_jobs`` in batches (dedup key and source set, as an
  event source sends them), one transaction per batch, committed.
- ``raw insert``: the same rows with the bare driver (asyncpg multi-VALUES ``INSERT … ON
  CONFLICT DO NOTHING RETURNING id`` / aiosqlite ``executemany``), one transaction per
  batch, into a table of the same shape (same columns and indexes): the ceiling.
- ``claim``: ``claim_jobs`` 50 per claim by N concurrent claimers until the queue is
  empty; jobs claimed per second. On PostgreSQL each claimer has its own store (as N
  worker processes would); on SQLite they share the one embedded store.
- ``finish_jobs``: the claimed jobs finished in batches.

Targets (PEERS.md): ingest ≥ 30,000/s on PostgreSQL, ≥ 60,000/s on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import create_pg_database, drop_pg_database

from headwater.store.base import JobStatus, NewJob
from headwater.store.ids import UuidV7Generator
from headwater.store.queries import dumps
from headwater.store.sql import SqlStore, normalise_url, open_store

CLAIM_BATCH = 50


@dataclass
class Result:
    db: str
    what: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def make_jobs(n: int, run: str) -> list[NewJob]:
    return [
        NewJob(
            workspace="bench",
            task="ingest",
            input={"seq": i, "payload": {"user": f"u{i % 97}", "amount": i * 3}},
            source_type="event_source",
            source_id="bench-source",
            dedup_key=f"{run}:{i}",
        )
        for i in range(n)
    ]


async def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def bench_store(label: str, url: str, n: int, batch: int, claimers: int) -> list[Result]:
    store = await open_store(url)
    results: list[Result] = []
    try:
        jobs = make_jobs(n, uuid.uuid4().hex[:8])

        async def ingest() -> None:
            for start in range(0, n, batch):
                await store.insert_jobs(jobs[start : start + batch])

        results.append(Result(label, f"insert_jobs ({batch}/batch)", n, await timed(ingest)))

        # Two producers at once (e.g. two event sources): encoding one batch overlaps
        # the database writing the other.
        more = make_jobs(n, uuid.uuid4().hex[:8])

        async def producer(part: list[NewJob]) -> None:
            for start in range(0, len(part), batch):
                await store.insert_jobs(part[start : start + batch])

        async def ingest_two() -> None:
            half = n // 2
            await asyncio.gather(producer(more[:half]), producer(more[half:]))

        seconds = await timed(ingest_two)
        results.append(Result(label, f"insert_jobs ({batch}/batch, 2 producers)", n, seconds))

        # PostgreSQL: one store per claimer, as N worker processes would be. SQLite: the
        # embedded mode is one process, so the claim loops share its store (separate
        # stores would contend through SQLite's busy handler, which sleeps).
        if store.dialect == "sqlite":
            stores = [store] * claimers
        else:
            stores = [store] + [await open_store(url) for _ in range(claimers - 1)]
        claimed: list[list[str]] = [[] for _ in stores]

        async def claimer(i: int) -> None:
            while batch_ := await stores[i].claim_jobs(f"w{i}", ["script"], CLAIM_BATCH):
                claimed[i].extend(j.id for j in batch_)

        async def claim_all() -> None:
            await asyncio.gather(*(claimer(i) for i in range(claimers)))

        seconds = await timed(claim_all)
        for extra in stores[1:]:
            if extra is not store:
                await extra.close()
        total = sum(len(c) for c in claimed)
        assert total == 2 * n, f"claimed {total} of {2 * n}"
        results.append(
            Result(label, f"claim ({CLAIM_BATCH}/claim, {claimers} claimers)", total, seconds)
        )

        async def finish() -> None:
            for i, ids in enumerate(claimed):
                for start in range(0, len(ids), batch):
                    chunk = ids[start : start + batch]
                    done = [(j, f"w{i}", JobStatus.COMPLETED, {"ok": True}, None) for j in chunk]
                    await store.finish_jobs(done)

        results.append(Result(label, f"finish_jobs ({batch}/batch)", total, await timed(finish)))
        results.append(await bench_raw(label, store, jobs, batch))
    finally:
        await store.close()
    return results


def raw_rows(jobs: Sequence[NewJob]) -> list[tuple[Any, ...]]:
    """The same rows, encoded once up front (the ceiling pays no encoding)."""
    now = datetime.now(UTC)
    new_id = UuidV7Generator()  # time-ordered, like the store's ids
    rows = []
    for j in jobs:
        head = (new_id(), j.workspace, j.task, "pending", dumps(dict(j.input)))
        rows.append((*head, j.source_type, j.source_id, j.dedup_key, "script", j.max_attempts, now))
    return rows


_RAW_COLUMNS = (
    "id, workspace, task, status, input, source_type, source_id, dedup_key, tags, "
    "max_attempts, created_at"
)


async def bench_raw(label: str, store: SqlStore, jobs: Sequence[NewJob], batch: int) -> Result:
    rows = raw_rows(jobs)
    url = store.engine.url
    if store.dialect == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password,
            database=url.database,
        )  # fmt: skip
        try:
            await conn.execute("CREATE TABLE jobs_raw (LIKE jobs INCLUDING ALL)")
            width = 11

            async def insert() -> None:
                for start in range(0, len(rows), batch):
                    chunk = rows[start : start + batch]
                    values = ", ".join(
                        "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                        for r in range(len(chunk))
                    )
                    sql = (
                        f"INSERT INTO jobs_raw ({_RAW_COLUMNS}) VALUES {values} "
                        "ON CONFLICT DO NOTHING RETURNING id"
                    )
                    async with conn.transaction():
                        await conn.fetch(sql, *(v for row in chunk for v in row))

            seconds = await timed(insert)
        finally:
            await conn.close()
        return Result(label, f"raw asyncpg multi-VALUES ({batch}/txn)", len(rows), seconds)

    import aiosqlite

    sqlite_rows = [(*r[:-1], r[-1].strftime("%Y-%m-%d %H:%M:%S.%f")) for r in rows]
    async with aiosqlite.connect(url.database or "") as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        # Same shape: the table and every index of ``jobs``.
        cursor = await db.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'jobs' AND sql IS NOT NULL "
            "ORDER BY type DESC"  # table first
        )
        for (ddl,) in await cursor.fetchall():
            ddl = ddl.replace("CREATE TABLE jobs", "CREATE TABLE jobs_raw", 1)
            ddl = ddl.replace(" ON jobs ", " ON jobs_raw ").replace("INDEX ix_", "INDEX raw_ix_")
            await db.execute(ddl)
        marks = ", ".join("?" * 11)
        sql = f"INSERT INTO jobs_raw ({_RAW_COLUMNS}) VALUES ({marks}) ON CONFLICT DO NOTHING"

        async def insert() -> None:
            for start in range(0, len(sqlite_rows), batch):
                await db.executemany(sql, sqlite_rows[start : start + batch])
                await db.commit()

        seconds = await timed(insert)
    return Result(label, f"raw aiosqlite executemany ({batch}/txn)", len(rows), seconds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", help="database URL (repeatable)")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--claimers", type=int, default=4)
    args = parser.parse_args()

    results: list[Result] = []
    if args.db:
        for url in args.db:
            label = normalise_url(url).get_backend_name()
            results += await bench_store(label, url, args.n, args.batch, args.claimers)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            results += await bench_store("sqlite", url, args.n, args.batch, args.claimers)
        pg = await create_pg_database("hw_bench")
        try:
            results += await bench_store("postgresql", pg, args.n, args.batch, args.claimers)
        finally:
            await drop_pg_database(pg)

    print(f"\n{'db':<11} {'what':<44} {'rows':>8} {'seconds':>8} {'rows/s':>10}")
    for r in results:
        print(f"{r.db:<11} {r.what:<44} {r.rows:>8} {r.seconds:>8.3f} {r.rate:>10,.0f}")


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(main())
