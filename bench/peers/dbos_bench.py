"""DBOS on the same PostgreSQL: a queue of trivial one-step workflows.

Enqueue rate, completion rate of a backlog, and enqueue → workflow start latency at a
fixed rate. Settings per PEERS.md: worker_concurrency 32 (unlimited by default would
start thousands of threads) and polling every 10 ms (the 1 s default dominates latency).
Run with the peers' venv; prints one JSON object.
    bench/.peers-venv/bin/python bench/peers/dbos_bench.py URL N RATE SECONDS
"""

from __future__ import annotations

import json
import sys
import threading
import time

from dbos import DBOS, DBOSConfig

STARTS: list[float] = []
_lock = threading.Lock()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


@DBOS.step()
def noop_step(sent: float) -> float:
    return sent


@DBOS.workflow()
def one_step(sent: float) -> float:
    with _lock:
        STARTS.append((time.time() - sent) * 1000)
    return noop_step(sent)


def main(url: str, n: int, rate: float, seconds: float) -> None:
    config: DBOSConfig = {"name": "hw-bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    queue = DBOS.register_queue("bench", worker_concurrency=32, polling_interval_sec=0.01)
    time.sleep(2)  # PEERS.md: a new queue needs ~2 s of warm-up

    t0 = time.perf_counter()
    handles = [queue.enqueue(one_step, 0.0) for _ in range(n)]
    enqueue = n / (time.perf_counter() - t0)
    for h in handles:
        h.get_result()
    processed = n / (time.perf_counter() - t0)

    STARTS.clear()
    count = int(rate * seconds)
    t0m = time.monotonic()
    handles = []
    for i in range(count):
        time.sleep(max(0.0, t0m + i / rate - time.monotonic()))
        handles.append(queue.enqueue(one_step, time.time()))
    for h in handles:
        h.get_result()
    print(
        json.dumps(
            {
                "peer": "dbos",
                "enqueue_per_s": enqueue,
                "processed_per_s": processed,
                "rate": rate,
                "start_p50_ms": pct(STARTS, 50),
                "start_p99_ms": pct(STARTS, 99),
            }
        ),
        flush=True,
    )
    DBOS.destroy()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
