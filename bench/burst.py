"""Execution during an ingest burst (issue 21, item 4): does a burst starve running jobs?

One embedded node runs one-step jobs (``sh -c true`` by default, ``--kind function`` for
a ``type: function`` no-op): a backlog of ``--backlog`` of them queued once the consumer
below runs (so execution runs flat out), or, with ``--rate``, jobs submitted at that rate
for the whole run. After ``--warmup`` seconds an event-source consumer prints ``--events``
``OUTPUT:`` lines as fast as it can, each becoming a job of a task no worker runs (tag
``burst``), so the burst is pure ingest and stays pending. Measured from the stored jobs:

- steady: those jobs completed per second before the burst's first job (its first second
  not counted);
- during: the same while the burst is being ingested (its first to its last job's
  ``created_at``), and how many of the burst's events were stored per second;
- the ratio during / steady (goal ≥ 0.8), and (with ``--rate``) the steady jobs' submit →
  finish p50/p99 in each window.

    python bench/burst.py [--events 100000] [--backlog 30000 | --rate 500]
                          [--kind shell|function] [--concurrency 8]
                          [--skip-sqlite] [--skip-pg] [--json out.json]
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

import structlog  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402

from headwater.dispatch.dispatcher import Event  # noqa: E402
from headwater.node import Node, NodeSettings, freeze_startup_heap  # noqa: E402
from headwater.store.tables import jobs as jobs_table  # noqa: E402
from headwater.worker.worker import WorkerSettings  # noqa: E402

FUNCS = "def noop(**kwargs):\n    return {}\n"

WORKSPACE = """
actions:
  produce:
    type: script
    language: python
    script: |
      import sys, time
      time.sleep({warmup})
      out = sys.stdout
      for i in range({events}):
          out.write('OUTPUT: {{"i": %d}}\\n' % i)
      out.flush()
      time.sleep(3600)
  fn:
    type: function
    function: "hw_burst_funcs:noop"
  sh:
    type: script
    language: sh
    script: "true"
  never:
    type: script
    language: sh
    script: "true"
    tags: [burst]
tasks:
  consumer:
    flow:
      produce: {{ action: produce }}
  steady:
    flow:
      s: {{ action: {action} }}
  target:
    flow:
      s: {{ action: never }}
triggers:
  burst:
    type: event_source
    task: consumer
    target_task: target
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def submit_steadily(node: Node, rate: int, stop: asyncio.Event) -> int:
    sent, t0 = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate)
        for _ in range(due - sent):
            await node.submit("steady", {})
        sent = max(sent, due)
        await asyncio.sleep(0.005)
    return sent


def window(
    rows: list[tuple[str, float, float | None]], start: float, end: float
) -> dict[str, float]:
    done = [(c, f) for task, c, f in rows if task == "steady" and f is not None]
    finished = [f for _, f in done if start <= f < end]
    waits = [(f - c) * 1000 for c, f in done if start <= c < end]
    span = end - start
    return {
        "seconds": span,
        "completed": len(finished),
        "per_s": len(finished) / span if span > 0 else float("nan"),
        "p50_ms": pct(waits, 50),
        "p99_ms": pct(waits, 99),
    }


async def consumer_running(node: Node) -> bool:
    async with node.store.engine.connect() as conn:  # type: ignore[attr-defined]
        found = await conn.execute(
            select(func.count()).where(
                jobs_table.c.task == "consumer", jobs_table.c.status == "running"
            )
        )
        return bool(found.scalar_one())


async def queue_backlog(node: Node, n: int) -> None:
    for start in range(0, n, 2000):
        await node.dispatcher.dispatch(
            [Event("steady", {}, "api") for _ in range(min(2000, n - start))]
        )


async def run(db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    events, rate, kind, warmup = args.events, args.rate, args.kind, args.warmup
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hw_burst_funcs.py").write_text(FUNCS)
        sys.path.insert(0, tmp)
        ws = Path(tmp) / "ws.yaml"
        action = "fn" if kind == "function" else "sh"
        ws.write_text(
            textwrap.dedent(WORKSPACE.format(events=events, warmup=warmup, action=action))
        )
        worker = WorkerSettings(concurrency=args.concurrency)
        node = Node(ws, NodeSettings(db_url=db_url, worker=worker))
        await node.start()
        freeze_startup_heap()
        stop, feeding = asyncio.Event(), asyncio.Event()
        cpu0 = time.process_time()
        try:
            tasks = [
                asyncio.create_task(node.run_worker(stop)),
                asyncio.create_task(node.run_triggers(stop, watch=False)),
            ]
            # The consumer is a job too: it runs before the backlog is queued, and sleeps
            # for ``warmup`` seconds before its burst.
            while not await consumer_running(node):
                await asyncio.sleep(0.05)
            if rate:
                feeder = asyncio.create_task(submit_steadily(node, rate, feeding))
                steady_from = time.time() + 1.0
            else:
                await queue_backlog(node, args.backlog)
                feeder = asyncio.create_task(feeding.wait())
                steady_from = time.time() + 0.5
            deadline = time.monotonic() + warmup + 180
            burst = 0
            while time.monotonic() < deadline:
                async with node.store.engine.connect() as conn:  # type: ignore[attr-defined]
                    burst = (
                        await conn.execute(
                            select(func.count()).where(jobs_table.c.task == "target")
                        )
                    ).scalar_one()
                if burst >= events:
                    break
                await asyncio.sleep(1.0)
            await asyncio.sleep(2.0)  # a steady window after the burst as well
            feeding.set()
            await feeder
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            cpu = time.process_time() - cpu0
            async with node.store.engine.connect() as conn:  # type: ignore[attr-defined]
                result = await conn.execute(
                    select(jobs_table.c.task, jobs_table.c.created_at, jobs_table.c.finished_at)
                )
                rows = [
                    (t, c.timestamp(), f.timestamp() if f is not None else None)
                    for t, c, f in result
                ]
        finally:
            await node.close()
            sys.path.remove(tmp)
    created = sorted(c for task, c, _ in rows if task == "target")
    if not created:
        return {"burst_events": 0}
    start, end = created[0], created[-1]
    before = window(rows, steady_from, start)
    during = window(rows, start, end)
    return {
        "burst_events": len(created),
        "ingest_per_s": (len(created) - 1) / (end - start) if end > start else float("nan"),
        "steady": before,
        "during": during,
        "ratio": during["per_s"] / before["per_s"] if before["per_s"] else float("nan"),
        "cpu_s": cpu,
    }


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--backlog", type=int, default=30_000, help="jobs queued before the start")
    ap.add_argument("--rate", type=int, default=0, help="instead: jobs submitted per second")
    ap.add_argument("--kind", choices=("function", "shell"), default="shell")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds before the burst")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            r = await run(f"sqlite:///{tmp}/burst.db", args)
            results.append({"db": "sqlite", **r})
    if not args.skip_pg:
        url = await create_pg_database("hw_bench_burst")
        try:
            r = await run(url, args)
            results.append({"db": "postgresql", **r})
        finally:
            await drop_pg_database(url)
    load = os.getloadavg()[0]
    load_of = f"submitted at {args.rate}/s" if args.rate else f"a backlog of {args.backlog:,}"
    print(
        f"\nexecution during an ingest burst of {args.events:,} events ({args.kind} jobs, "
        f"{load_of}, concurrency {args.concurrency}; load average {load:.1f})"
    )
    print(
        f"{'database':11} {'ingest/s':>9} {'steady/s':>9} {'during/s':>9} {'ratio':>6}"
        f" {'p50 before':>10} {'p99':>8} {'p50 during':>10} {'p99':>8}"
    )
    for r in results:
        if not r.get("burst_events"):
            print(f"{r['db']:11} no burst seen")
            continue
        s, d = r["steady"], r["during"]
        print(
            f"{r['db']:11} {r['ingest_per_s']:>9,.0f} {s['per_s']:>9,.0f} {d['per_s']:>9,.0f}"
            f" {r['ratio']:>6.2f} {s['p50_ms']:>10.1f} {s['p99_ms']:>8.1f}"
            f" {d['p50_ms']:>10.1f} {d['p99_ms']:>8.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
