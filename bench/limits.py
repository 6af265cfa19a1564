"""The machine's own limits, measured in the same run as headwater: process spawns of the
same shell command, batched INSERTs into the same PostgreSQL and SQLite, and a
LISTEN/NOTIFY round trip.

    python bench/limits.py [--n 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def spawn_rate(n: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", "true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            await proc.communicate()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


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
        "sqlite_insert_per_s": sqlite_insert(args.rows),
        **(await pg_limits(args.rows)),
    }
    print("\nmachine limits")
    for key, value in result.items():
        print(f"  {key:22} {value:>12,.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
