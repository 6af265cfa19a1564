"""DBOS on the same PostgreSQL: a queue of trivial one-step workflows.

Enqueue rate, completion rate of a backlog, and enqueue → workflow start latency at
fixed rates. Two settings (PEERS.md asks for both):
- ``tuned``: worker_concurrency 32 (unlimited by default would start thousands of
  threads on a backlog) and polling every 10 ms (the 1 s default dominates latency);
- ``defaults``: DBOS's own defaults. A backlog would start one thread per workflow, so
  only the latency at the paced rates is measured.
Run with the peers' venv; prints one JSON object. RATES: one or several, comma-separated.
    bench/.peers-venv/bin/python bench/peers/dbos_bench.py URL N RATES SECONDS [tuned|defaults]
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
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


@DBOS.step()
def noop_step(sent: float) -> float:
    return sent


@DBOS.workflow()
def one_step(sent: float) -> float:
    if sent:
        with _lock:
            STARTS.append((time.time() - sent) * 1000)
    return noop_step(sent)


def main(url: str, n: int, rates: list[float], seconds: float, mode: str) -> None:
    config: DBOSConfig = {"name": "hw-bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    if mode == "defaults":
        queue = DBOS.register_queue("bench")
    else:
        queue = DBOS.register_queue("bench", worker_concurrency=32, polling_interval_sec=0.01)
    time.sleep(2)  # PEERS.md: a new queue needs ~2 s of warm-up

    enqueue = processed = float("nan")
    if mode != "defaults":
        t0 = time.perf_counter()
        handles = [queue.enqueue(one_step, 0.0) for _ in range(n)]
        enqueue = n / (time.perf_counter() - t0)
        for h in handles:
            h.get_result()
        processed = n / (time.perf_counter() - t0)

    latency: dict[str, dict[str, float]] = {}
    for rate in rates:
        STARTS.clear()
        count = int(rate * seconds)
        t0m = time.monotonic()
        handles = []
        for i in range(count):
            time.sleep(max(0.0, t0m + i / rate - time.monotonic()))
            handles.append(queue.enqueue(one_step, time.time()))
        for h in handles:
            h.get_result()
        latency[f"{rate:g}"] = {
            "p50_ms": pct(STARTS, 50),
            "p99_ms": pct(STARTS, 99),
            "samples": len(STARTS),
        }
    first = latency[f"{rates[0]:g}"]
    print(
        json.dumps(
            {
                "peer": "dbos" if mode != "defaults" else "dbos-defaults",
                "settings": "worker_concurrency 32, polling 0.01 s"
                if mode != "defaults"
                else "defaults (polling 1 s, unlimited concurrency)",
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
    DBOS.destroy()


if __name__ == "__main__":
    rates = [float(r) for r in sys.argv[3].split(",")]
    mode = sys.argv[5] if len(sys.argv) > 5 else "tuned"
    main(sys.argv[1], int(sys.argv[2]), rates, float(sys.argv[4]), mode)
