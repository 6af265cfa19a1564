"""PgQueuer on the same PostgreSQL: enqueue rate, processing rate, enqueue → start latency.

Run with the peers' venv (bench/peers/setup.sh); prints one JSON object.
    bench/.peers-venv/bin/python bench/peers/pgqueuer_bench.py URL N RATE SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def process(url: str, expected: int, on_job: object = None) -> float:
    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    done = 0
    started = time.perf_counter()

    @qm.entrypoint("bench")
    async def handle(job: object) -> None:
        nonlocal done
        if on_job is not None:
            on_job(job)  # type: ignore[operator]
        done += 1
        if done >= expected:
            qm.shutdown.set()

    await qm.run(batch_size=100)  # PEERS.md: batch_size 100 is its fair setting
    elapsed = time.perf_counter() - started
    await conn.close()
    return expected / elapsed


async def main(url: str, n: int, rate: float, seconds: float) -> None:
    conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        k = min(500, n - start)
        await queries.enqueue(["bench"] * k, [None] * k, [0] * k)
    enqueue = n / (time.perf_counter() - t0)
    processed = await process(url, n)

    # Latency at a fixed rate: payload = the enqueue time.
    latencies: list[float] = []

    def on_job(job: object) -> None:
        sent = float(job.payload.decode())  # type: ignore[attr-defined]
        latencies.append((time.time() - sent) * 1000)

    count = int(rate * seconds)
    worker = asyncio.create_task(process(url, count, on_job))
    await asyncio.sleep(1.0)  # the worker is listening
    t0 = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        await queries.enqueue("bench", str(time.time()).encode())
    await asyncio.wait_for(worker, 120)
    await conn.close()
    print(
        json.dumps(
            {
                "peer": "pgqueuer",
                "enqueue_per_s": enqueue,
                "processed_per_s": processed,
                "rate": rate,
                "start_p50_ms": pct(latencies, 50),
                "start_p99_ms": pct(latencies, 99),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
