"""PgQueuer on the same PostgreSQL: enqueue rate, processing rate, enqueue → start latency.

Run with the peers' venv (bench/peers/setup.sh); prints one JSON object. RATES is one
rate or several separated by commas (latency is measured at each).
    bench/.peers-venv/bin/python bench/peers/pgqueuer_bench.py URL N RATES SECONDS
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


async def main(url: str, n: int, rates: list[float], seconds: float) -> None:
    conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        k = min(500, n - start)
        await queries.enqueue(["bench"] * k, [None] * k, [0] * k)
    enqueue = n / (time.perf_counter() - t0)
    processed = await process(url, n)

    latency = {}
    for rate in rates:
        latency[f"{rate:g}"] = await paced(url, queries, rate, seconds)
    await conn.close()
    first = latency[f"{rates[0]:g}"]
    print(
        json.dumps(
            {
                "peer": "pgqueuer",
                "settings": "batch_size 100",
                "enqueue_per_s": enqueue,
                "processed_per_s": processed,
                "rate": rates[0],
                "start_p50_ms": first["p50_ms"],
                "start_p99_ms": first["p99_ms"],
                "latency": latency,
            }
        )
    )


async def paced(url: str, queries: Queries, rate: float, seconds: float) -> dict[str, float]:
    """Enqueue at a fixed rate (payload = the enqueue time) → handler start."""
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
    return {"p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99), "samples": len(latencies)}


if __name__ == "__main__":
    rates = [float(r) for r in sys.argv[3].split(",")]
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), rates, float(sys.argv[4])))
