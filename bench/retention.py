"""Retention cost: how fast old jobs (with steps and logs) are pruned, and how long
concurrent ingest waits meanwhile (the worst insert of 100 jobs, with and without
pruning running next to it).

    python bench/retention.py [--jobs 100000] [--db sqlite|postgresql|URL] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from sqlalchemy import update  # noqa: E402

from headwater.store import JobStatus, LogLine, LogStream, NewJob  # noqa: E402
from headwater.store.base import StepStatus, StepUpdate  # noqa: E402
from headwater.store.retention import parse_retention, prune  # noqa: E402
from headwater.store.sql import SqlStore, open_store  # noqa: E402
from headwater.store.tables import jobs  # noqa: E402

OLD = datetime.now(UTC) - timedelta(days=60)


async def seed(store: SqlStore, n: int) -> None:
    for start in range(0, n, 1000):
        count = min(1000, n - start)
        made = await store.insert_jobs(
            [
                NewJob(workspace="ws", task="t", input={"i": start + i}, source_type="api")
                for i in range(count)
            ]
        )
        for o in made:
            await store.upsert_steps(o.id, [StepUpdate("s", "a", StepStatus.COMPLETED, 0)])
        await store.append_logs(
            [LogLine(o.id, "s", LogStream.STDOUT, "x" * 80, OLD) for o in made for _ in range(3)]
        )
    async with store.write_engine.begin() as conn:
        await conn.execute(
            update(jobs).values(status=JobStatus.COMPLETED.value, created_at=OLD, finished_at=OLD)
        )


async def ingest(store: SqlStore, stop: asyncio.Event) -> list[float]:
    waits: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        await store.insert_jobs(
            [NewJob(workspace="ws", task="new", input={}, source_type="api") for _ in range(100)]
        )
        waits.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return waits


async def main_async(url: str, n: int, batch: int) -> None:
    store = await open_store(url)
    try:
        await seed(store, n)
        stop = asyncio.Event()
        quiet = asyncio.create_task(ingest(store, stop))
        await asyncio.sleep(3)
        stop.set()
        alone = await quiet
        stop = asyncio.Event()
        busy = asyncio.create_task(ingest(store, stop))
        started = time.perf_counter()
        total = await prune(store, parse_retention("30d"), batch=batch, pause=0.0)
        took = time.perf_counter() - started
        stop.set()
        during = await busy
        size = await store.store_size()
    finally:
        await store.close()
    print(
        "| db | jobs pruned | steps | log lines | seconds | jobs/s | worst insert of 100 "
        "alone / while pruning (ms) | rows left |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {store.dialect} | {total.jobs:,} | {total.steps:,} | {total.logs:,} | {took:.1f} | "
        f"{total.jobs / took:,.0f} | {max(alone) * 1000:.0f} / {max(during) * 1000:.0f} | "
        f"{size.rows['jobs']:,} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    if args.db == "postgresql":  # a fresh database on the local server, dropped after
        from tests.conftest import create_pg_database, drop_pg_database

        url = asyncio.run(create_pg_database())
        try:
            asyncio.run(main_async(url, args.jobs, args.batch))
        finally:
            asyncio.run(drop_pg_database(url))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db" if args.db == "sqlite" else args.db
        asyncio.run(main_async(url, args.jobs, args.batch))


if __name__ == "__main__":
    main()
