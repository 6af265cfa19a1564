"""Event-source ingest: a consumer prints N ``OUTPUT:`` lines as fast as it can; how many
target jobs per second are committed (the targets are not run: no worker has their tag).

Jobs are inserted in batches, in line order, and every job of a batch gets the same
``created_at`` (stamped as its insert starts). The rate is the jobs before the last
batch over the time from the first batch's insert to the last one's: the consumer's own
start (a Python process) is not ingest. While it runs, the benchmark only looks for the
last line's job by its dedup key every 50 ms (an index lookup): counting jobs would
load the database it measures.

Printed next to two limits measured in the same run: the store's own batched insert of
the same jobs (``insert_jobs``, 500 per batch, each with its own dedup key as an event
source's jobs have), without the pipe, the parsing and the validation; and the raw
limit, the bare driver's batched insert of the same rows into a fresh ``jobs`` table
with all its indexes (SQLite ``executemany``, 500 per transaction; PostgreSQL ``COPY``,
as ``limits.py`` measures them), with its CPU per row in this process.

    python bench/ingest.py [--n 100000] [--pg postgresql://postgres@127.0.0.1:5432/test]
                           [--skip-pg] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.limits import _JOB_COLUMNS, job_rows  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402

from headwater.dispatch.dispatcher import Event  # noqa: E402
from headwater.node import Node, NodeSettings, freeze_startup_heap  # noqa: E402
from headwater.store.base import JobFilter  # noqa: E402
from headwater.store.tables import jobs  # noqa: E402
from headwater.worker.worker import WorkerSettings  # noqa: E402

WORKSPACE = """
actions:
  produce:
    type: script
    language: python
    script: |
      import sys
      out = sys.stdout
      for i in range({n}):
          out.write('OUTPUT: {{"n": %d}}\\n' % i)
      out.flush()
      import time
      time.sleep(3600)  # a consumer does not end; the benchmark stops it
  handle:
    type: script
    script: "true"
    tags: [not-in-this-benchmark]
tasks:
  consumer:
    flow:
      produce: {{ action: produce }}
  target:
    input:
      n: {{ type: integer }}
    flow:
      handle: {{ action: handle }}
triggers:
  firehose:
    type: event_source
    task: consumer
    target_task: target
"""


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process, by thread name (Linux).

    Reported per event next to the rates: on a shared machine the rates are noisy, the
    CPU each thread spends per event much less so."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name.split("_")[0] for t in threading.enumerate()}
    used: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), "other")
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return used


async def created_at_of(node: Node, dedup_key: str) -> dt.datetime | None:
    """``created_at`` of the job with this dedup key, None while it does not exist."""
    async with node.store.engine.connect() as conn:  # type: ignore[attr-defined]
        query = select(jobs.c.created_at).where(jobs.c.dedup_key == dedup_key)
        row = (await conn.execute(query)).first()
    return None if row is None else row[0]  # type: ignore[no-any-return]


async def ingest(db_url: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws.yaml"
        ws.write_text(textwrap.dedent(WORKSPACE.format(n=n)))
        node = Node(ws, NodeSettings(db_url=db_url, worker=WorkerSettings(concurrency=2)))
        await node.start()
        freeze_startup_heap()  # as `headwater up` does
        stop = asyncio.Event()
        try:
            started = time.monotonic()
            tasks = [
                asyncio.create_task(node.run_worker(stop)),
                asyncio.create_task(node.run_triggers(stop, watch=False)),
            ]
            consumer = None
            while consumer is None and time.monotonic() - started < 60:
                found = await node.store.list_jobs(
                    JobFilter(source_type="event_source_consumer", limit=1)
                )
                consumer = found[0] if found and found[0].status.value == "running" else None
                await asyncio.sleep(0.005)
            assert consumer is not None, "the consumer did not start"
            prefix = f"es:{consumer.id}:{consumer.attempt}:produce:1"
            first: dt.datetime | None = None
            last_seen: dt.datetime | None = None
            cpu_before = thread_cpu()
            while time.monotonic() - started < 600:
                if first is None:
                    first = await created_at_of(node, f"{prefix}:1")
                if first is not None:
                    last_seen = await created_at_of(node, f"{prefix}:{n}")
                    if last_seen is not None:
                        break
                await asyncio.sleep(0.05)
            cpu_after = thread_cpu()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            source = f"{node.workspace().name}/firehose"
            count = await node.store.count_source(source)
            assert first is not None and last_seen is not None, f"only {count} of {n} jobs"
            async with node.store.engine.connect() as conn:  # type: ignore[attr-defined]
                query = select(func.count()).where(
                    jobs.c.source_id == source,
                    jobs.c.created_at == last_seen,
                )
                last_batch = int((await conn.execute(query)).scalar_one())
            # The limit: the same jobs through the store's batched insert, no pipe.
            prepared = [
                node.dispatcher.prepare(
                    Event("target", {"n": i}, "event_source", source_id="limit",
                          dedup_key=f"limit:{i}")
                )
                for i in range(n)
            ]  # fmt: skip
            t0 = time.perf_counter()
            for start in range(0, n, 500):
                await node.store.insert_jobs(prepared[start : start + 500])
            insert_rate = n / (time.perf_counter() - t0)
            cpu_us = {
                name: (cpu_after[name] - cpu_before.get(name, 0.0)) / n * 1e6
                for name in cpu_after
                if cpu_after[name] - cpu_before.get(name, 0.0) > 0
            }
            return {
                "events_per_s": (n - last_batch) / (last_seen - first).total_seconds(),
                "last_batch": last_batch,
                "jobs": count,
                "insert_per_s": insert_rate,
                "cpu_us_per_event": cpu_us,
            }
        finally:
            await node.close()


async def raw_limit(db_url: str, n: int) -> dict[str, float]:
    """The bare driver's batched insert of ``n`` event-source rows into a fresh ``jobs``
    table (every index): rows/s and this process's CPU µs per row."""
    from headwater.store.sql import open_store

    store = await open_store(db_url)
    await store.close()
    now = datetime.now(UTC)
    cpu = time.process_time()
    if db_url.startswith("sqlite"):
        import sqlite3

        db = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        data = [(*r, stamp) for r in job_rows(n, "raw")]
        sql = (
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "'pending', 0, 0) ON CONFLICT DO NOTHING"
        )
        cpu, started = time.process_time(), time.perf_counter()
        for start in range(0, n, 500):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, data[start : start + 500])
            db.execute("COMMIT")
        seconds = time.perf_counter() - started
        db.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(db_url.replace("+asyncpg", ""))
        try:
            data = job_rows(n, "raw")
            columns = [c.strip() for c in _JOB_COLUMNS.split(",")]
            cpu, started = time.process_time(), time.perf_counter()
            for start in range(0, n, 500):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "jobs",
                        records=[(*r, now, "pending", 0, False) for r in data[start : start + 500]],
                        columns=columns,
                    )
            seconds = time.perf_counter() - started
        finally:
            await conn.close()
    return {"raw_per_s": n / seconds, "raw_cpu_us_per_row": (time.process_time() - cpu) / n * 1e6}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = await ingest(f"sqlite:///{tmp}/ingest.db", args.n)
        results["sqlite"].update(await raw_limit(f"sqlite:///{tmp}/raw.db", args.n))
    if not args.skip_pg:
        url = await create_pg_database("hw_bench")
        try:
            results["postgresql"] = await ingest(url, args.n)
        finally:
            await drop_pg_database(url)
        url = await create_pg_database("hw_bench_raw")
        try:
            results["postgresql"].update(await raw_limit(url, args.n))
        finally:
            await drop_pg_database(url)
    print(f"\nevent-source ingest, n={args.n:,} (OUTPUT: lines → committed target jobs)")
    print(
        f"{'database':12} {'events/s':>10} {'store insert/s':>15} {'raw insert/s':>13} "
        f"{'ours/raw':>9} {'CPU µs/event':>13} {'raw CPU µs/row':>15}"
    )
    for db, r in results.items():
        ours_cpu = sum(r["cpu_us_per_event"].values())
        print(
            f"{db:12} {r['events_per_s']:>10,.0f} {r['insert_per_s']:>15,.0f} "
            f"{r['raw_per_s']:>13,.0f} {r['events_per_s'] / r['raw_per_s']:>9.2f} "
            f"{ours_cpu:>13.1f} {r['raw_cpu_us_per_row']:>15.1f}"
        )
        cpu = ", ".join(f"{name} {us:.1f}" for name, us in sorted(r["cpu_us_per_event"].items()))
        print(f"{'':12} CPU µs per event by thread: {cpu}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
