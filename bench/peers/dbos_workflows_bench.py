"""DBOS on the same PostgreSQL: 3-step workflows (each step a no-op ``@DBOS.step``).

Two ways DBOS starts a workflow, both measured (PEERS.md asks for DBOS tuned and with
its defaults):
- ``direct``: ``DBOS.start_workflow`` in the caller's process: the workflow row is
  written, then the function runs on DBOS's thread pool at once (no queue, no polling);
- ``queue``: ``queue.enqueue`` (the durable way to hand work to workers, headwater's
  model): tuned (worker_concurrency 32, polling every 10 ms) or DBOS's defaults (polling
  every 1 s; unlimited concurrency, so no backlog is run that way: it would start one
  thread per workflow).
For each: workflows/s from a backlog of N (first start call → last result), and start
latency (start call → the workflow body's first line) at a steady RATE for SECONDS.
Run with the peers' venv; prints one JSON object.
    bench/.peers-venv/bin/python bench/peers/dbos_workflows_bench.py \
        URL N RATE SECONDS MODES [STARTERS]
MODES: comma-separated of direct, queue, queue-defaults. STARTERS: threads starting the
backlog at once (default 1: one after another).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dbos import DBOS, DBOSConfig

STARTS: list[float] = []
_lock = threading.Lock()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


@DBOS.step()
def step_one(x: float) -> float:
    return x


@DBOS.step()
def step_two(x: float) -> float:
    return x


@DBOS.step()
def step_three(x: float) -> float:
    return x


@DBOS.workflow()
def three_steps(sent: float) -> float:
    if sent:
        with _lock:
            STARTS.append((time.time() - sent) * 1000)
    return step_three(step_two(step_one(sent)))


def backlog(start: Any, n: int, starters: int = 1) -> float:
    t0 = time.perf_counter()
    if starters == 1:
        handles = [start(0.0) for _ in range(n)]
    else:  # STARTERS threads, each starting one after another
        with ThreadPoolExecutor(starters) as pool:
            handles = list(pool.map(start, [0.0] * n))
    for h in handles:
        h.get_result()
    return n / (time.perf_counter() - t0)


def steady(start: Any, rate: float, seconds: float) -> dict[str, float]:
    STARTS.clear()
    count = int(rate * seconds)
    t0 = time.monotonic()
    handles = []
    for i in range(count):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        handles.append(start(time.time()))
    for h in handles:
        h.get_result()
    return {"p50_ms": pct(STARTS, 50), "p99_ms": pct(STARTS, 99), "samples": len(STARTS)}


def main(
    url: str, n: int, rate: float, seconds: float, modes: list[str], starters: int = 1
) -> None:
    config: DBOSConfig = {"name": "hw-wf-bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    tuned = DBOS.register_queue("wf_tuned", worker_concurrency=32, polling_interval_sec=0.01)
    defaults = DBOS.register_queue("wf_defaults")
    time.sleep(2)  # PEERS.md: a new queue needs ~2 s of warm-up
    found: dict[str, Any] = {}
    for mode in modes:
        if mode == "direct":

            def start(sent: float) -> Any:
                return DBOS.start_workflow(three_steps, sent)

            settings = "DBOS.start_workflow (in-process thread pool, no queue)"
        elif mode == "queue":

            def start(sent: float) -> Any:
                return tuned.enqueue(three_steps, sent)

            settings = "queue: worker_concurrency 32, polling 0.01 s"
        else:

            def start(sent: float) -> Any:
                return defaults.enqueue(three_steps, sent)

            settings = "queue with DBOS's defaults (polling 1 s, unlimited concurrency)"
        backlog_rate = backlog(start, n, starters) if mode != "queue-defaults" else float("nan")
        found[mode] = {
            "settings": settings,
            "workflows_per_s": backlog_rate,
            "n": n,
            "rate": rate,
            **{f"start_{k}": v for k, v in steady(start, rate, seconds).items()},
        }
    print(json.dumps({"peer": "dbos", "modes": found}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main(
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
        sys.argv[5].split(",") if len(sys.argv) > 5 else ["direct", "queue"],
        int(sys.argv[6]) if len(sys.argv) > 6 else 1,
    )
