"""Durable workflows on one embedded node: 3-step workflows per second, start latency,
and how late a durable sleep wakes (the timer loop, a claim, the replay).

    python bench/workflow_core.py [--db URL ...] [--n 300]

Without ``--db`` it runs on a temporary SQLite file and on a fresh PostgreSQL database.
The client and the node share the process and the store (``WorkflowClient(store=…)``).
The comparison with DBOS (``bench/peers``) is another bench's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import create_pg_database, drop_pg_database

import headwater
from headwater.core.workflows import WorkflowStepKind
from headwater.node import Node, NodeSettings

registry = headwater.Registry(app="bench")


@headwater.step
async def one(n: int) -> int:
    return n + 1


@headwater.workflow(registry=registry)
async def three(n: int) -> int:
    return await one(await one(await one(n)))


@headwater.workflow(registry=registry)
async def napper(seconds: float) -> float:
    await headwater.sleep_async(seconds)
    return await one(0)


async def run(db_url: str, n: int) -> dict[str, float]:
    workspace = registry.workspace()
    node = Node(Path("."), NodeSettings(db_url=db_url), loader=lambda _: workspace,
                functions=registry.functions())  # fmt: skip
    await node.start()
    stop = asyncio.Event()
    worker = asyncio.create_task(node.run_worker(stop))
    try:
        async with headwater.WorkflowClient(registry=registry, store=node.store) as client:
            latencies: list[float] = []
            began = time.perf_counter()
            handles = []
            for i in range(n):
                t0 = time.perf_counter()
                handles.append(await client.start(three, i))
                latencies.append(time.perf_counter() - t0)
            for h in handles:
                await h.result_async(timeout=300)
            elapsed = time.perf_counter() - began
            naps = [await client.start(napper, 1.5) for _ in range(5)]
            lates = []
            for h in naps:
                await h.result_async(timeout=60)
                records = await node.store.workflow_steps(h.job_id)
                sleep = next(r for r in records if r.kind is WorkflowStepKind.SLEEP)
                woke = records[-1].started_at
                assert woke is not None
                lates.append(
                    (woke - datetime.fromisoformat(sleep.output["wake_at"])).total_seconds()
                )
    finally:
        stop.set()
        await worker
        await node.close()
    return {
        "workflows/s": n / elapsed,
        "start p50 ms": statistics.median(latencies) * 1000,
        "wake late max ms": max(lates) * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", action="append")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    targets = args.db
    pg = None
    with tempfile.TemporaryDirectory() as tmp:
        if not targets:
            pg = await create_pg_database("hw_bench")
            targets = [f"sqlite:///{tmp}/bench.db", pg]
        try:
            print(f"{'db':<10} {'workflows/s':>12} {'start p50 ms':>13} {'wake late max ms':>17}")
            for url in targets:
                got = await run(url, args.n)
                name = url.split(":", 1)[0]
                print(f"{name:<10} {got['workflows/s']:>12.0f} {got['start p50 ms']:>13.2f}"
                      f" {got['wake late max ms']:>17.0f}")  # fmt: skip
        finally:
            if pg is not None:
                await drop_pg_database(pg)


if __name__ == "__main__":
    asyncio.run(main())
