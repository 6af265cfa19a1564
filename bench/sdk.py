"""The Python SDK: the outbox pipeline and `type: function` jobs, next to DBOS running
the same handler (insert one row recording the event).

- pipeline: ``send_event`` → ``headwater publisher run`` → Redis Streams →
  ``headwater consumer run`` (EXACTLY_ONCE: the row is written in the consumer's
  transaction), as subprocesses the way a user runs them. Backlog throughput (events/s
  between the first and the last handler call) with 100 events per transaction (the
  default) and with 1 (the seed's one commit per event); send_event → handler latency
  p50/p99 at fixed rates, one event per producer transaction.
- function jobs: ``@headwater.on_redis_stream`` → one job per entry → a function step
  that inserts the row through its own connection; backlog jobs/s and XADD → function
  latency at fixed rates, in one embedded node.
- DBOS (peers venv): a queue of one-step workflows whose step is a ``@DBOS.transaction``
  inserting the same row.
- limits of the machine, same run: one INSERT + COMMIT per row, and 500 rows per
  transaction, on each database.

    python bench/sdk.py [--events 20000] [--rates 200,1000] [--seconds 5]
                        [--skip-pg] [--skip-sqlite] [--skip-dbos] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402

import headwater  # noqa: E402

HEADWATER = str(Path(sys.executable).parent / "headwater")
PEERS_PY = ROOT / "bench" / ".peers-venv" / "bin" / "python"
REDIS = os.environ.get("HEADWATER_REDIS_URL", "redis://127.0.0.1:6379/0")
TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_applied"
    " (event_uuid TEXT, created_ms DOUBLE PRECISION, applied_ms DOUBLE PRECISION)"
)

PIPELINE_APP = """
import time
import headwater
from sqlalchemy import text

registry = headwater.Registry(app="bench")
INSERT = text("INSERT INTO bench_applied (event_uuid, created_ms, applied_ms) VALUES (:u, :c, :a)")

@registry.consumer("{stream}", name="apply")
def apply(event, session):
    created = event.metadata["__creation_timestamp_ms__"]
    session.execute(INSERT, {{"u": event.event_uuid, "c": created, "a": time.time() * 1000}})
"""

FUNCTION_APP = """
import functools
import time
import headwater
from sqlalchemy import create_engine, text

registry = headwater.Registry(app="{app}")
INSERT = text("INSERT INTO bench_applied (event_uuid, created_ms, applied_ms) VALUES (:u, :c, :a)")

@functools.cache
def engine():
    return create_engine("{sync_url}", pool_size=8)

@registry.on_redis_stream("{stream}", name="record", url="{redis}", start_id="0", batch_size=500)
def record(payload, metadata):
    now = time.time() * 1000
    with engine().begin() as conn:
        conn.execute(INSERT, {{"u": metadata["id"], "c": payload["sent"], "a": now}})
    return {{"latency_ms": now - payload["sent"] if payload["sent"] else None}}
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


# -- limits ------------------------------------------------------------------------------
def limits(url: str, rows: int = 5000) -> dict[str, float]:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_limits (id TEXT, n INT)"))
    started = time.perf_counter()
    with engine.connect() as conn:
        for i in range(rows // 5):
            conn.execute(text("INSERT INTO bench_limits VALUES (:i, 1)"), {"i": str(i)})
            conn.commit()
    per_row = (rows // 5) / (time.perf_counter() - started)
    started = time.perf_counter()
    with engine.connect() as conn:
        for start in range(0, rows, 500):
            conn.execute(
                text("INSERT INTO bench_limits VALUES (:i, 1)"),
                [{"i": str(i)} for i in range(start, start + 500)],
            )
            conn.commit()
    batched = rows / (time.perf_counter() - started)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_limits"))
    engine.dispose()
    return {"commit_per_row_per_s": per_row, "rows_500_per_tx_per_s": batched}


# -- the pipeline ------------------------------------------------------------------------
class Procs:
    def __init__(self, url: str, app: Path, workdir: Path, per_tx: int) -> None:
        common = ["--db", url, "--redis", REDIS, "--log-level", "warning"]
        env = {**os.environ, "HEADWATER_LOG_LEVEL": "warning"}
        self.procs = [
            subprocess.Popen([HEADWATER, "publisher", "run", *common], env=env),
            subprocess.Popen(
                [
                    HEADWATER,
                    "consumer",
                    "run",
                    str(app),
                    *common,
                    "--events-per-transaction",
                    str(per_tx),
                    "--heartbeat-dir",
                    str(workdir / "beats"),
                ],
                env=env,
            ),
        ]

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def applied(engine: Any) -> list[tuple[float, float]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT created_ms, applied_ms FROM bench_applied")).all()
    return [(float(c), float(a)) for c, a in rows]


def wait_applied(engine: Any, n: int, timeout: float) -> list[tuple[float, float]]:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM bench_applied")).scalar_one()
        if count >= n or time.monotonic() > deadline:
            return applied(engine)
        time.sleep(0.2)


def send(engine: Any, stream: str, n: int, per_tx: int) -> None:
    for start in range(0, n, per_tx):
        with Session(engine) as session, session.begin():
            for i in range(start, min(n, start + per_tx)):
                headwater.send_event(session, stream, "Bench", {"i": i})


def pipeline(url: str, events: int, rates: list[int], seconds: float) -> dict[str, Any]:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text(TABLE))
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for per_tx in (100, 1):
            stream = f"stream:bench:{uuid.uuid4().hex[:8]}"
            app = Path(tmp) / f"bench_app_{per_tx}.py"
            app.write_text(textwrap.dedent(PIPELINE_APP.format(stream=stream)))
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM bench_applied"))
            n = events if per_tx > 1 else max(1000, events // 5)
            send(engine, stream, n, 1000)
            procs = Procs(url, app, Path(tmp), per_tx)
            try:
                rows = wait_applied(engine, n, 600)
            finally:
                procs.stop()
            times = sorted(a for _, a in rows)
            span = (times[-1] - times[0]) / 1000 if len(times) > 1 else float("nan")
            result[f"backlog_per_s_tx{per_tx}"] = (len(times) - 1) / span if span else 0.0
            result[f"backlog_events_tx{per_tx}"] = len(times)
            if per_tx > 1:
                for rate in rates:
                    with engine.begin() as conn:
                        conn.execute(text("DELETE FROM bench_applied"))
                    procs = Procs(url, app, Path(tmp), per_tx)
                    try:
                        time.sleep(2.0)  # both started and idle
                        count = int(rate * seconds)
                        t0 = time.monotonic()
                        for i in range(count):
                            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                            send(engine, stream, 1, 1)
                        rows = wait_applied(engine, count, 120)
                    finally:
                        procs.stop()
                    lat = [a - c for c, a in rows]
                    result[f"p50_ms_at_{rate}"] = pct(lat, 50)
                    result[f"p99_ms_at_{rate}"] = pct(lat, 99)
                    result[f"applied_at_{rate}"] = len(lat)
            import redis

            client = redis.Redis.from_url(REDIS)
            client.delete(stream)
            client.close()
    engine.dispose()
    return result


# -- function jobs -----------------------------------------------------------------------
async def function_jobs(url: str, events: int, rates: list[int], seconds: float) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from headwater.node import NodeSettings
    from headwater.sdk.receiver_node import node_for
    from headwater.sdk.registry import set_default_registry
    from headwater.store.base import JobFilter
    from headwater.worker.worker import WorkerSettings

    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text(TABLE))
        conn.execute(text("DELETE FROM bench_applied"))
    result: dict[str, Any] = {}
    client = aioredis.from_url(REDIS)
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ["backlog", *rates]:
            stream = f"stream:benchfn:{uuid.uuid4().hex[:8]}"
            module = f"bench_fn_{uuid.uuid4().hex[:8]}"
            app = Path(tmp) / f"{module}.py"
            text_ = FUNCTION_APP.format(
                app=module.replace("_", "-"), stream=stream, redis=REDIS, sync_url=sync_url(url)
            )
            app.write_text(textwrap.dedent(text_))
            source = f"{module.replace('_', '-')}/record"  # this phase's jobs only
            set_default_registry(None)
            node = node_for(
                str(app), NodeSettings(db_url=url, worker=WorkerSettings(concurrency=64))
            )
            await node.start()
            stop = asyncio.Event()
            if phase == "backlog":
                pipe = client.pipeline(transaction=False)
                for _ in range(events):
                    pipe.xadd(stream, {"payload": '{"sent": 0}'})
                await pipe.execute()
                count = events
            tasks = [
                asyncio.create_task(node.run_worker(stop)),
                asyncio.create_task(node.run_triggers(stop, watch=False)),
            ]
            if phase != "backlog":
                await asyncio.sleep(2.0)
                rate = int(phase)
                count = int(rate * seconds)
                t0 = time.monotonic()
                for i in range(count):
                    await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                    await client.xadd(stream, {"payload": json.dumps({"sent": time.time() * 1000})})
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                made = await node.store.count_source(source)
                if made >= count and await node.store.count_in_flight(source) == 0:
                    break
                await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            jobs = await node.store.list_jobs(JobFilter(source_id=source, limit=count + 10))
            await node.close()
            await client.delete(stream)
            sys.modules.pop(module, None)
            finished = sorted(j.finished_at.timestamp() for j in jobs if j.finished_at)
            if phase == "backlog":
                span = finished[-1] - finished[0] if len(finished) > 1 else float("nan")
                result["backlog_per_s"] = (len(finished) - 1) / span if span else 0.0
                result["backlog_jobs"] = len(finished)
            else:
                lat = [
                    j.output["handler"]["latency_ms"]
                    for j in jobs
                    if j.output and j.output.get("handler", {}).get("latency_ms") is not None
                ]
                result[f"p50_ms_at_{phase}"] = pct(lat, 50)
                result[f"p99_ms_at_{phase}"] = pct(lat, 99)
                result[f"applied_at_{phase}"] = len(lat)
    await client.aclose()
    engine.dispose()
    return result


# -- DBOS --------------------------------------------------------------------------------
def dbos(url: str, events: int, rate: int, seconds: float) -> dict[str, Any] | None:
    if not PEERS_PY.exists():
        print("DBOS skipped: run `bash bench/peers/setup.sh` first", file=sys.stderr)
        return None
    done = subprocess.run(
        [str(PEERS_PY), str(ROOT / "bench/peers/dbos_sdk_bench.py"), url, str(events),
         str(rate), str(seconds)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        print(f"DBOS failed: {done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- main --------------------------------------------------------------------------------
async def prepared(url: str) -> None:
    from headwater.store.sql import open_store

    store = await open_store(url)
    await store.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rates", default="200,1000")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--dbos-events", type=int, default=2000)
    ap.add_argument("--dbos-rate", type=int, default=50)
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--skip-dbos", action="store_true")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    results: dict[str, Any] = {}
    databases = []
    if not args.skip_sqlite:
        databases.append("sqlite")
    if not args.skip_pg:
        databases.append("postgresql")
    for db in databases:
        with tempfile.TemporaryDirectory() as tmp:
            url = (
                f"sqlite:///{tmp}/bench.db"
                if db == "sqlite"
                else await create_pg_database("hw_bench")
            )
            try:
                await prepared(url)
                print(f"[{db}] limits …", flush=True)
                results[f"{db}.limits"] = limits(url)
                if not args.skip_pipeline:
                    print(f"[{db}] pipeline …", flush=True)
                    results[f"{db}.pipeline"] = await asyncio.to_thread(
                        pipeline, url, args.events, rates, args.seconds
                    )
                print(f"[{db}] function jobs …", flush=True)
                results[f"{db}.functions"] = await function_jobs(
                    url, args.events, rates, args.seconds
                )
                if db == "postgresql" and not args.skip_dbos:
                    print("[postgresql] DBOS …", flush=True)
                    results["postgresql.dbos"] = dbos(
                        url, args.dbos_events, args.dbos_rate, args.seconds
                    )
            finally:
                if db == "postgresql":
                    await drop_pg_database(url)
    report(results, rates, args.dbos_rate)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(results: dict[str, Any], rates: list[int], dbos_rate: int) -> None:
    def f(value: Any, spec: str = ",.0f") -> str:
        return "-" if value is None or value != value else format(value, spec)

    print("\nSDK: the handler inserts one row recording the event")
    head = " ".join(f"{'p50/p99 ms @' + str(r) + '/s':>20}" for r in rates)
    print(f"{'database':11} {'what':34} {'events/s':>10} {head}")
    for key, value in results.items():
        db, what = key.split(".", 1)
        if value is None or what == "limits":
            continue
        if what == "pipeline":
            rows = [("outbox pipeline, 100 events/tx", value["backlog_per_s_tx100"]),
                    ("outbox pipeline, 1 event/tx (seed)", value["backlog_per_s_tx1"])]  # fmt: skip
        elif what == "functions":
            rows = [("type: function jobs", value["backlog_per_s"])]
        else:
            p50, p99 = f(value["latency_p50_ms"], ".1f"), f(value["latency_p99_ms"], ".1f")
            lat = f"{p50} / {p99} @{dbos_rate}/s"
            label = "DBOS queue + @DBOS.transaction"
            print(f"{db:11} {label:34} {f(value['processed_per_s']):>10} {lat:>20}")
            continue
        for i, (label, rate) in enumerate(rows):
            cells = ""
            if i == 0:
                pairs = [
                    f(value.get(f"p50_ms_at_{r}"), ".1f") + " / "
                    + f(value.get(f"p99_ms_at_{r}"), ".1f")
                    for r in rates
                ]  # fmt: skip
                cells = " ".join(f"{pair:>20}" for pair in pairs)
            print(f"{db:11} {label:34} {f(rate):>10} {cells}")
    for key, value in results.items():
        if key.endswith(".limits"):
            per_row, batched = value["commit_per_row_per_s"], value["rows_500_per_tx_per_s"]
            print(
                f"limits {key.split('.')[0]}: one INSERT+COMMIT per row {f(per_row)}/s,"
                f" 500 rows per transaction {f(batched)}/s"
            )


if __name__ == "__main__":
    asyncio.run(main())
