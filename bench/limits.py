"""The machine's own limits, measured in the same run as headwater: process spawns of the
same shell command, batched INSERTs into the same PostgreSQL and SQLite, and a
LISTEN/NOTIFY round trip.

- spawns of ``sh -c true`` from asyncio, concurrency 1 and 8, with asyncio's default
  child watcher and with ``PidfdChildWatcher`` (the faster one; the best is the limit);
- batched INSERT, 500 rows per transaction, into a bare 3-column table (the database's
  ceiling) and into headwater's own ``jobs`` table with all its indexes, with the bare
  driver (sqlite3 ``executemany``; asyncpg multi-VALUES ``ON CONFLICT DO NOTHING
  RETURNING`` and ``COPY``): what any implementation of durable ingest could reach here;
- LISTEN/NOTIFY round trip.

    python bench/limits.py [--n 2000] [--rows 50000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def spawn_rate(n: int, concurrency: int, pidfd: bool = False) -> float:
    if pidfd:  # Python 3.11: the watcher is process-wide policy state; fine in a script
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.get_event_loop_policy().set_child_watcher(watcher)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", "true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            await proc.communicate()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    rate = n / (time.perf_counter() - started)
    if pidfd:
        asyncio.get_event_loop_policy().set_child_watcher(asyncio.ThreadedChildWatcher())
    return rate


def job_rows(n: int, tag: str) -> list[tuple[Any, ...]]:
    """Rows shaped like an event source's jobs (dedup key, source, small JSON input)."""
    from headwater.store.ids import UuidV7Generator

    new_id = UuidV7Generator()
    return [
        (new_id(), "ws", "target", f'{{"n": {i}}}', "event_source", "ws/firehose",
         f"es:{tag}:1:produce:1:{i}", "script", None, 3)
        for i in range(n)
    ]  # fmt: skip


_JOB_COLUMNS = (
    "id, workspace, task, input, source_type, source_id, dedup_key, tags, parent_job_id, "
    "max_attempts, created_at, status, attempt, cancel_requested"
)


async def pg_jobs_table(url: str, rows: int) -> dict[str, float]:
    """Raw inserts into headwater's migrated ``jobs`` table (every index), 500 per txn."""
    import asyncpg

    from headwater.store.sql import open_store

    store = await open_store(url)
    await store.close()
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        now = datetime.now(UTC)
        result = {}
        data = job_rows(rows, "values")
        started = time.perf_counter()
        for start in range(0, rows, 500):
            chunk = data[start : start + 500]
            marks = ", ".join(
                "(" + ", ".join(f"${r * 11 + c + 1}" for c in range(11)) + ", 'pending', 0, false)"
                for r in range(len(chunk))
            )
            sql = (
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES {marks} ON CONFLICT DO NOTHING "
                "RETURNING id"
            )
            await conn.fetch(sql, *(v for row in chunk for v in (*row, now)))
        result["pg_jobs_insert_per_s"] = rows / (time.perf_counter() - started)
        data = job_rows(rows, "copy")
        started = time.perf_counter()
        for start in range(0, rows, 500):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "jobs",
                    records=[(*r, now, "pending", 0, False) for r in data[start : start + 500]],
                    columns=[c.strip() for c in _JOB_COLUMNS.split(",")],
                )
        result["pg_jobs_copy_per_s"] = rows / (time.perf_counter() - started)
        return result
    finally:
        await conn.close()


async def sqlite_jobs_table(rows: int) -> float:
    from headwater.store.sql import open_store

    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(f"sqlite:///{tmp}/jobs.db")
        await store.close()
        db = sqlite3.connect(f"{tmp}/jobs.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        data = [(*r, now) for r in job_rows(rows, "sqlite")]
        sql = (
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "'pending', 0, 0) ON CONFLICT DO NOTHING"
        )
        started = time.perf_counter()
        for start in range(0, rows, 500):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, data[start : start + 500])
            db.execute("COMMIT")
        rate = rows / (time.perf_counter() - started)
        db.close()
        return rate


async def pg_limits(rows: int) -> dict[str, float]:
    import asyncpg

    url = (await create_pg_database("hw_limits")).replace("+asyncpg", "")
    try:
        conn = await asyncpg.connect(url)
        listener = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE t (id text PRIMARY KEY, body jsonb, ts timestamptz)")
        started = time.perf_counter()
        for start in range(0, rows, 500):
            batch = [(f"r{i}", '{"n": 1}') for i in range(start, min(rows, start + 500))]
            await conn.executemany(
                "INSERT INTO t (id, body, ts) VALUES ($1, $2::jsonb, now())", batch
            )
        insert = rows / (time.perf_counter() - started)
        got: asyncio.Queue[float] = asyncio.Queue()
        await listener.add_listener("rtt", lambda *_: got.put_nowait(time.perf_counter()))
        rtts = []
        for _ in range(200):
            sent = time.perf_counter()
            await conn.execute("NOTIFY rtt")
            rtts.append((await got.get() - sent) * 1000)
        await conn.close()
        await listener.close()
        return {
            "pg_insert_per_s": insert,
            **(await pg_jobs_table(url, rows)),
            "notify_p50_ms": pct(rtts, 50),
            "notify_p99_ms": pct(rtts, 99),
        }
    finally:
        await drop_pg_database(url)


def sqlite_insert(rows: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(f"{tmp}/limits.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT, ts TEXT)")
        started = time.perf_counter()
        for start in range(0, rows, 500):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO t VALUES (?, ?, datetime('now'))",
                [(f"r{i}", '{"n": 1}') for i in range(start, min(rows, start + 500))],
            )
            db.execute("COMMIT")
        rate = rows / (time.perf_counter() - started)
        db.close()
        return rate


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="spawns")
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result: dict[str, Any] = {
        "spawn_per_s_c1": await spawn_rate(args.n // 2, 1),
        "spawn_per_s_c8": await spawn_rate(args.n, 8),
        "spawn_pidfd_per_s_c1": await spawn_rate(args.n // 2, 1, pidfd=True),
        "spawn_pidfd_per_s_c8": await spawn_rate(args.n, 8, pidfd=True),
        "sqlite_insert_per_s": sqlite_insert(args.rows),
        "sqlite_jobs_insert_per_s": await sqlite_jobs_table(args.rows),
        **(await pg_limits(args.rows)),
    }
    # The spawn limit is the faster of the two watchers.
    result["spawn_best_per_s_c8"] = max(result["spawn_per_s_c8"], result["spawn_pidfd_per_s_c8"])
    print("\nmachine limits")
    for key, value in result.items():
        print(f"  {key:22} {value:>12,.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
