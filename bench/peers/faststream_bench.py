"""FastStream on Redis Streams (not durable: the non-durable ceiling). Publish rate,
handler rate, publish → handler latency at fixed rates. ``logger=None`` and pipelined
publishing (500 per pipeline) per PEERS.md. Run with the peers' venv.
    bench/.peers-venv/bin/python bench/peers/faststream_bench.py REDIS_URL N RATES SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

from faststream.redis import RedisBroker, StreamSub

STARTS: list[float] = []


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def main(url: str, n: int, rates: list[float], seconds: float) -> None:
    stream = f"hw_bench_fs_{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url, logger=None)
    seen = 0
    all_seen = asyncio.Event()
    target = n

    @broker.subscriber(
        stream=StreamSub(stream, group="bench", consumer="c1", last_id="0", max_records=100)
    )
    async def handle(msg: dict[str, float]) -> None:
        nonlocal seen
        if msg.get("sent"):
            STARTS.append((time.time() - msg["sent"]) * 1000)
        seen += 1
        if seen >= target:
            all_seen.set()

    latency: dict[str, dict[str, float]] = {}
    async with broker:
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            async with broker._connection.pipeline(transaction=False) as pipe:
                for _ in range(min(500, n - start)):
                    await broker.publish({"sent": 0}, stream=stream, pipeline=pipe)
                await pipe.execute()
        enqueue = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await broker.start()
        await asyncio.wait_for(all_seen.wait(), 300)
        processed = n / (time.perf_counter() - t0)

        for rate in rates:
            STARTS.clear()
            count = int(rate * seconds)
            seen, target = 0, count
            all_seen.clear()
            t0m = time.monotonic()
            for i in range(count):
                await asyncio.sleep(max(0.0, t0m + i / rate - time.monotonic()))
                await broker.publish({"sent": time.time()}, stream=stream)
            await asyncio.wait_for(all_seen.wait(), 60)
            latency[f"{rate:g}"] = {
                "p50_ms": pct(STARTS, 50),
                "p99_ms": pct(STARTS, 99),
                "samples": len(STARTS),
            }
        await broker._connection.delete(stream)  # tidy the shared Redis
    first = latency[f"{rates[0]:g}"]
    print(
        json.dumps(
            {
                "peer": "faststream",
                "settings": "Redis Streams, logger=None, max_records 100, pipelined publish",
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
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), rates, float(sys.argv[4])))
