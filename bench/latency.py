"""Event → job latency at fixed rates, through an event source.

A consumer writes ``OUTPUT:`` lines at a fixed rate (100/s, 1,000/s), each carrying the
wall-clock time it was written. The target task is one in-process ``type: function``
step, so the orchestration is measured, not process spawning. For every event:
line written → job committed (the job's ``created_at``, stamped as its insert begins),
→ job claimed (its ``started_at``, stamped as the claim begins) and → its step started
(the step's ``started_at``, stamped when the worker starts running it, after the claim),
p50/p95/p99. Also the rate at which the jobs completed (it equals the offered rate when
headwater keeps up; the backlog rate of function jobs is in ``engine.py``).

    python bench/latency.py [--rates 100,1000] [--seconds 5] [--skip-pg] [--skip-sqlite]
                            [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402

from headwater.node import Node, NodeSettings, freeze_startup_heap  # noqa: E402
from headwater.store.base import JobFilter  # noqa: E402
from headwater.store.tables import steps  # noqa: E402
from headwater.worker.worker import WorkerSettings  # noqa: E402

FUNCS = "def noop(**kwargs):\n    return {}\n"

WORKSPACE = """
actions:
  produce:
    type: script
    language: python
    script: |
      import sys, time
      rate, seconds = {rate}, {seconds}
      t0 = time.monotonic()
      for i in range(int(rate * seconds)):
          delay = t0 + i / rate - time.monotonic()
          if delay > 0:
              time.sleep(delay)
          sys.stdout.write('OUTPUT: {{"sent": %r}}\\n' % time.time())
          sys.stdout.flush()
      time.sleep(3600)
  noop:
    type: function
    function: "hw_bench_funcs:noop"
tasks:
  consumer:
    flow:
      produce: {{ action: produce }}
  target:
    input:
      sent: {{ type: number }}
    flow:
      noop: {{ action: noop }}
triggers:
  paced:
    type: event_source
    task: consumer
    target_task: target
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def pg_commits(db_url: str) -> int | None:
    """The database's committed transactions so far (PostgreSQL; every statement outside
    a transaction is one): what the processes that closed, or were told to flush, did."""
    if not db_url.startswith("postgresql"):
        return None
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value)
    finally:
        await conn.close()


async def run(db_url: str, rate: int, seconds: float) -> dict[str, float]:
    commits_before = await pg_commits(db_url)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hw_bench_funcs.py").write_text(FUNCS)
        sys.path.insert(0, tmp)
        ws = Path(tmp) / "ws.yaml"
        ws.write_text(textwrap.dedent(WORKSPACE.format(rate=rate, seconds=seconds)))
        node = Node(ws, NodeSettings(db_url=db_url, worker=WorkerSettings(concurrency=64)))
        await node.start()
        freeze_startup_heap()  # as `headwater up` does
        stop = asyncio.Event()
        n = int(rate * seconds)
        source = f"{node.workspace().name}/paced"
        cpu = time.process_time()
        try:
            tasks = [
                asyncio.create_task(node.run_worker(stop)),
                asyncio.create_task(node.run_triggers(stop, watch=False)),
            ]
            deadline = time.monotonic() + seconds + 60
            while time.monotonic() < deadline:
                counts = await node.store.count_jobs_by_status()
                if counts.get("completed", 0) >= n:  # the consumer itself never completes
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            cpu = time.process_time() - cpu
            jobs = await node.store.list_jobs(JobFilter(source_id=source, limit=n + 10))
            async with node.store.engine.connect() as conn:  # type: ignore[attr-defined]
                rows = await conn.execute(select(steps.c.job_id, steps.c.started_at))
                step_started = {job_id: at for job_id, at in rows if at is not None}
        finally:
            await node.close()
            sys.path.remove(tmp)
    await asyncio.sleep(0.5)  # the closed connections' backends report their counts
    commits_after = await pg_commits(db_url)
    created = [(j.created_at.timestamp() - j.input["sent"]) * 1000 for j in jobs]
    claimed = [(j.started_at.timestamp() - j.input["sent"]) * 1000 for j in jobs if j.started_at]
    started = [
        (step_started[j.id].timestamp() - j.input["sent"]) * 1000
        for j in jobs
        if j.id in step_started
    ]
    finished = sorted(j.finished_at.timestamp() for j in jobs if j.finished_at)
    span = finished[-1] - finished[0] if len(finished) > 1 else float("nan")
    return {
        "events": len(jobs),
        "created_p50": pct(created, 50),
        "created_p99": pct(created, 99),
        "claimed_p50": pct(claimed, 50),
        "claimed_p99": pct(claimed, 99),
        "start_p50": pct(started, 50),
        "start_p95": pct(started, 95),
        "start_p99": pct(started, 99),
        "completed": len(finished),
        "cpu_us_per_event": cpu / max(1, len(jobs)) * 1e6,  # this process, every thread
        # Start-up (migrations), the consumer and the listing above included.
        "commits_per_event": (
            (commits_after - commits_before) / len(jobs)
            if commits_before is not None and commits_after is not None and jobs
            else float("nan")
        ),
        "function_jobs_per_s": (len(finished) - 1) / span if span == span and span else 0.0,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", default="100,1000")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    results: list[dict[str, Any]] = []
    for rate in rates:
        if not args.skip_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                r = await run(f"sqlite:///{tmp}/latency.db", rate, args.seconds)
                results.append({"db": "sqlite", "rate": rate, **r})
        if not args.skip_pg:
            url = await create_pg_database("hw_bench")
            try:
                r = await run(url, rate, args.seconds)
                results.append({"db": "postgresql", "rate": rate, **r})
            finally:
                await drop_pg_database(url)
    print(
        f"\nevent → job latency (ms), {args.seconds:g}s per rate, target = one function step;"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'database':11} {'rate/s':>7} {'events':>7} {'commit p50':>10} {'p99':>7}"
        f" {'claim p50':>10} {'p99':>7} {'start p50':>10} {'p95':>7} {'p99':>7}"
        f" {'commits/event':>13} {'CPU µs/event':>12}"
    )
    for r in results:
        print(
            f"{r['db']:11} {r['rate']:>7} {r['events']:>7} {r['created_p50']:>10.2f}"
            f" {r['created_p99']:>7.2f} {r['claimed_p50']:>10.2f} {r['claimed_p99']:>7.2f}"
            f" {r['start_p50']:>10.2f} {r['start_p95']:>7.2f}"
            f" {r['start_p99']:>7.2f} {r['commits_per_event']:>13.2f}"
            f" {r['cpu_us_per_event']:>12.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
