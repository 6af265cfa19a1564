"""Procrastinate on the same PostgreSQL: enqueue rate, worker throughput (concurrency 10,
PEERS.md), enqueue → start latency at a fixed rate. Run with the peers' venv.
    bench/.peers-venv/bin/python bench/peers/procrastinate_bench.py URL N RATE SECONDS
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

import procrastinate

STARTS: list[float] = []


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def main(url: str, n: int, rate: float, seconds: float) -> None:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop(sent: float) -> None:
        if sent:
            STARTS.append((time.time() - sent) * 1000)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            await noop.batch_defer_async(*({"sent": 0.0} for _ in range(min(500, n - start))))
        enqueue = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await app.run_worker_async(concurrency=10, wait=False)  # returns once caught up
        processed = n / (time.perf_counter() - t0)

        worker = asyncio.create_task(app.run_worker_async(concurrency=10, wait=True))
        await asyncio.sleep(1.0)
        count = int(rate * seconds)
        t0m = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, t0m + i / rate - time.monotonic()))
            await noop.defer_async(sent=time.time())
        deadline = time.monotonic() + 60
        while len(STARTS) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        worker.cancel()
        with contextlib.suppress(BaseException):
            await worker
    print(
        json.dumps(
            {
                "peer": "procrastinate",
                "enqueue_per_s": enqueue,
                "processed_per_s": processed,
                "rate": rate,
                "start_p50_ms": pct(STARTS, 50),
                "start_p99_ms": pct(STARTS, 99),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
