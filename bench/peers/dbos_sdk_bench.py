"""DBOS running the SDK benchmark's handler: each event is a workflow whose one step is
a datasource transaction (``@ds.transaction``, DBOS 3's exactly-once database step: its
output is recorded in the same commit) inserting the same row our consumer's handler
inserts, at READ COMMITTED like ours.

Backlog: N workflows enqueued at once → completed/s. Latency: events enqueued at RATE
for SECONDS → enqueue-to-handler p50/p99. Settings per PEERS.md (worker_concurrency 32,
polling every 10 ms). Run with the peers' venv; prints one JSON object.
    bench/.peers-venv/bin/python bench/peers/dbos_sdk_bench.py URL N RATE SECONDS
"""

from __future__ import annotations

import json
import sys
import time

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource

LATENCY: list[float] = []
URL = sys.argv[1] if len(sys.argv) > 1 else ""
ds = SQLAlchemyDatasource.create(URL.replace("postgresql://", "postgresql+psycopg://", 1))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


@ds.transaction(isolation_level="READ COMMITTED")
def apply(event_id: str, created_ms: float) -> None:
    now = time.time() * 1000
    ds.sql_session().execute(
        sa.text(
            "INSERT INTO bench_applied (event_uuid, created_ms, applied_ms) VALUES (:u, :c, :a)"
        ),
        {"u": event_id, "c": created_ms, "a": now},
    )
    if created_ms:
        LATENCY.append(now - created_ms)


@DBOS.workflow()
def handle(event_id: str, created_ms: float) -> None:
    apply(event_id, created_ms)


def main(url: str, n: int, rate: float, seconds: float) -> None:
    config: DBOSConfig = {
        "name": "hw-sdk-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE IF NOT EXISTS bench_applied "
            "(event_uuid TEXT, created_ms DOUBLE PRECISION, applied_ms DOUBLE PRECISION)"
        ))  # fmt: skip
    queue = DBOS.register_queue("bench", worker_concurrency=32, polling_interval_sec=0.01)
    time.sleep(2)  # PEERS.md: a new queue needs ~2 s of warm-up

    t0 = time.perf_counter()
    handles = [queue.enqueue(handle, f"b{i}", 0.0) for i in range(n)]
    enqueue = n / (time.perf_counter() - t0)
    for h in handles:
        h.get_result()
    processed = n / (time.perf_counter() - t0)

    LATENCY.clear()
    count = int(rate * seconds)
    t0m = time.monotonic()
    handles = []
    for i in range(count):
        time.sleep(max(0.0, t0m + i / rate - time.monotonic()))
        handles.append(queue.enqueue(handle, f"r{i}", time.time() * 1000))
    for h in handles:
        h.get_result()
    print(json.dumps({
        "peer": "dbos",
        "enqueue_per_s": enqueue,
        "processed_per_s": processed,
        "rate": rate,
        "latency_p50_ms": pct(LATENCY, 50),
        "latency_p99_ms": pct(LATENCY, 99),
    }), flush=True)  # fmt: skip
    DBOS.destroy()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
