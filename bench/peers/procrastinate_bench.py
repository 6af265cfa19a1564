"""Procrastinate on the same PostgreSQL: enqueue rate, worker throughput, enqueue → start
latency at fixed rates. Run with the peers' venv.
    bench/.peers-venv/bin/python bench/peers/procrastinate_bench.py \
        URL N RATES SECONDS [CONCURRENCY]

CONCURRENCY defaults to 10 (PEERS.md; Procrastinate's own default is 1). RATES: one rate
or several separated by commas.
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
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def main(url: str, n: int, rates: list[float], seconds: float, concurrency: int) -> None:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop(sent: float) -> None:
        if sent:
            STARTS.append((time.time() - sent) * 1000)

    latency: dict[str, dict[str, float]] = {}
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            await noop.batch_defer_async(*({"sent": 0.0} for _ in range(min(500, n - start))))
        enqueue = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        # returns once the queue is empty
        await app.run_worker_async(concurrency=concurrency, wait=False)
        processed = n / (time.perf_counter() - t0)

        for rate in rates:
            STARTS.clear()
            worker = asyncio.create_task(app.run_worker_async(concurrency=concurrency, wait=True))
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
            latency[f"{rate:g}"] = {
                "p50_ms": pct(STARTS, 50),
                "p99_ms": pct(STARTS, 99),
                "samples": len(STARTS),
            }
    first = latency[f"{rates[0]:g}"]
    print(
        json.dumps(
            {
                "peer": "procrastinate" if concurrency != 1 else "procrastinate-c1",
                "settings": f"concurrency {concurrency}",
                "enqueue_per_s": enqueue,
                "processed_per_s": processed,
                "rate": rates[0],
                "start_p50_ms": first["p50_ms"],
                "start_p99_ms": first["p99_ms"],
                "latency": latency,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    rates = [float(r) for r in sys.argv[3].split(",")]
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), rates, float(sys.argv[4]), concurrency))
