"""FastStream on Redis Streams (not durable: the non-durable ceiling). Publish rate,
handler rate, publish → handler latency at a fixed rate. ``logger=None`` per PEERS.md.
Run with the peers' venv.
    bench/.peers-venv/bin/python bench/peers/faststream_bench.py REDIS_URL N RATE SECONDS
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
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def main(url: str, n: int, rate: float, seconds: float) -> None:
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

    async with broker:
        t0 = time.perf_counter()
        for _ in range(n):
            await broker.publish({"sent": 0}, stream=stream)
        enqueue = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await broker.start()
        await asyncio.wait_for(all_seen.wait(), 300)
        processed = n / (time.perf_counter() - t0)

        count = int(rate * seconds)
        seen, target = 0, count
        all_seen.clear()
        t0m = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, t0m + i / rate - time.monotonic()))
            await broker.publish({"sent": time.time()}, stream=stream)
        await asyncio.wait_for(all_seen.wait(), 60)
        await broker._connection.delete(stream)  # tidy the shared Redis
    print(
        json.dumps(
            {
                "peer": "faststream",
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
