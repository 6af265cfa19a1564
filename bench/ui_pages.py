"""The web UI's data requests with 1,000,000 jobs in the store, on SQLite and PostgreSQL.

Seeds N jobs (a mix of 20 tasks, five statuses, five source types over two weeks; steps
on every 10th job and log lines on every 100th) with bulk inserts (``executemany`` in
large transactions on SQLite, ``COPY`` on PostgreSQL), then times each request the Jobs
list, the Job page and the Overview make through the app in process (httpx's
ASGITransport: routing, validation, the store, JSON; no socket) and prints p50/p95 per
request and store. Goal: p95 under 100 ms.

    python bench/ui_pages.py [--jobs 1000000] [--db sqlite] [--db postgresql] [--runs 30]
    python bench/ui_pages.py --sqlite-path /tmp/ui.db --pg-url postgresql://.../ui  # reuse

With ``--sqlite-path``/``--pg-url`` a database already holding the jobs is not seeded
again (seeding 1,000,000 jobs takes minutes); without them a scratch one is made and
dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.fakes import make_workspace  # noqa: E402

from headwater.server.app import create_app  # noqa: E402
from headwater.store.base import InsertOutcome, Store  # noqa: E402
from headwater.store.queries import dumps  # noqa: E402
from headwater.store.sql import SqlStore, open_store  # noqa: E402
from headwater.workspace.models import Workspace  # noqa: E402
from headwater.workspace.secrets import Redactor  # noqa: E402

DAYS = 14
TASKS = [f"task-{k:02d}" for k in range(20)]
TASK_WEIGHTS = [1 / (k + 1) for k in range(20)]  # a few busy tasks, a long tail
SOURCES = [("scheduler", 30), ("event_source", 30), ("webhook", 20), ("api", 19), ("retry", 1)]
LIVE = 200  # the newest jobs: pending (the newest 100) and running
STEPS_EVERY = 10
LOGS_EVERY = 100
LOG_LINES = 20
PAGE = 50  # rows per page in the UI
COLUMNS = (
    "id", "workspace", "task", "status", "input", "output", "error", "source_type",
    "source_id", "tags", "worker_id", "attempt", "max_attempts", "cancel_requested",
    "created_at", "started_at", "finished_at", "priority",
)  # fmt: skip
STEP_COLUMNS = ("job_id", "name", "action", "status", "exit_code", "attempts", "started_at",
                "finished_at")  # fmt: skip
LOG_COLUMNS = ("job_id", "step", "stream", "line", "ts")


def job_id(ms: int, rng: random.Random) -> str:
    """A UUIDv7 of that millisecond, as the store makes them (time-ordered)."""
    tail = rng.getrandbits(62) | (1 << 63)
    return (
        f"{(ms >> 16) & 0xFFFFFFFF:08x}-{ms & 0xFFFF:04x}-{0x7000 | rng.getrandbits(11):04x}"
        f"-{tail >> 48:04x}-{tail & 0xFFFFFFFFFFFF:012x}"
    )


@dataclass
class Rows:
    jobs: list[tuple[Any, ...]]
    steps: list[tuple[Any, ...]]
    logs: list[tuple[Any, ...]]


def generate(n: int, now: datetime, chunk: int = 50_000) -> Iterator[Rows]:
    """The jobs oldest first, in chunks, with their steps and logs."""
    rng = random.Random(7)
    start = now - timedelta(days=DAYS)
    step = (now - timedelta(seconds=5) - start) / n
    kinds = [s for s, _ in SOURCES]
    kind_weights = [w for _, w in SOURCES]
    recent: list[str] = []
    rows = Rows([], [], [])
    for i in range(n):
        created = start + step * i
        ms = int(created.timestamp() * 1000)
        jid = job_id(ms, rng)
        k = rng.choices(range(20), TASK_WEIGHTS)[0]
        kind = rng.choices(kinds, kind_weights)[0]
        source_id: str | None = None
        if kind == "retry" and recent:
            source_id = rng.choice(recent)
        elif kind in ("scheduler", "event_source", "webhook"):
            source_id = f"ws/{kind}-{rng.randrange(5)}"
        left = n - i
        output = error = worker = started = finished = None
        if left <= LIVE // 2:
            status = "pending"
        elif left <= LIVE:
            status, worker, started = "running", "w-1", created + timedelta(seconds=0.2)
        else:
            status = rng.choices(["completed", "failed", "cancelled"], [90, 8, 2])[0]
            worker = "w-1"
            started = created + timedelta(seconds=rng.uniform(0.01, 0.5))
            took = rng.lognormvariate(0, 0.6) * 0.2 * (k + 1) ** 1.3
            finished = started + timedelta(seconds=took)
            output = dumps({"ok": True, "n": i}) if status == "completed" else None
            error = "step 'test' failed: exit code 1" if status == "failed" else None
        rows.jobs.append(
            (jid, "ws", TASKS[k], status, dumps({"n": i, "path": f"/data/{i}.csv"}), output,
             error, kind, source_id, "script", worker, 1, 3, False, created, started,
             finished, 0)
        )  # fmt: skip
        if i % STEPS_EVERY == 0 and started is not None:
            middle = started + ((finished or started + timedelta(seconds=1)) - started) * 0.4
            rows.steps.append((jid, "build", "sh", "completed", 0, 1, started, middle))
            rows.steps.append(
                (jid, "test", "sh", status, 0 if status == "completed" else None, 1, middle,
                 finished)
            )  # fmt: skip
            if i % LOGS_EVERY == 0:
                for line in range(LOG_LINES):
                    stream = "stderr" if line % 7 == 6 else "stdout"
                    text = f"[{TASKS[k]}] processed batch {line} of /data/{i}.csv: ok"
                    ts = started + timedelta(milliseconds=10 * line)
                    rows.logs.append((jid, "test", stream, text, ts))
        if i % 1000 == 0:
            recent = [*recent[-50:], jid]
        if len(rows.jobs) >= chunk:
            yield rows
            rows = Rows([], [], [])
    if rows.jobs:
        yield rows


def _sqlite_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def seed_sqlite(path: str, n: int, now: datetime) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA synchronous=OFF")
        for table, cols in (("jobs", COLUMNS), ("steps", STEP_COLUMNS), ("logs", LOG_COLUMNS)):
            db.execute(f"SELECT {', '.join(cols)} FROM {table} LIMIT 0")
        for rows in generate(n, now):
            with db:  # one transaction per chunk
                for table, cols, data in (
                    ("jobs", COLUMNS, rows.jobs),
                    ("steps", STEP_COLUMNS, rows.steps),
                    ("logs", LOG_COLUMNS, rows.logs),
                ):
                    marks = ", ".join("?" * len(cols))
                    db.executemany(
                        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})",
                        [tuple(_sqlite_time(v) for v in r) for r in data],
                    )
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


async def seed_postgres(url: str, n: int, now: datetime) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for rows in generate(n, now):
            async with conn.transaction():
                await conn.copy_records_to_table("jobs", records=rows.jobs, columns=COLUMNS)
                await conn.copy_records_to_table("steps", records=rows.steps, columns=STEP_COLUMNS)
                await conn.copy_records_to_table("logs", records=rows.logs, columns=LOG_COLUMNS)
        # What autovacuum does after a bulk load anyway: statistics and visibility map.
        await conn.execute("VACUUM ANALYZE jobs, steps, logs")
    finally:
        await conn.close()


class BenchRuntime:
    """The Runtime the app needs: the store, a workspace, a redactor, trigger lag."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._workspace = make_workspace()
        self._redactor = Redactor(["s3cret-value-of-the-bench"])

    def workspace(self) -> Workspace:
        return self._workspace

    async def submit(self, task: str, input: Mapping[str, Any], **_: Any) -> InsertOutcome:
        raise NotImplementedError

    def redact(self, data: Any) -> Any:
        return self._redactor.redact(data)

    def health(self) -> Mapping[str, Any]:
        return {}

    async def trigger_states(self) -> Mapping[str, Mapping[str, Any]]:
        return {
            f"events-{k}": {"type": "redis_streams", "state": "running", "lag_events": 10 * k,
                            "lag_ms": 150.0 * k, "lag_pending": k, "lag_bytes": None}
            for k in range(5)
        }  # fmt: skip


async def count_jobs(store: SqlStore) -> int:
    from sqlalchemy import func, select

    from headwater.store.tables import jobs

    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs))).scalar_one())


async def requests_for(client: httpx.AsyncClient, now: datetime) -> list[tuple[str, str]]:
    """The requests to time: label → path. Ids are found through the API itself."""
    first = (await client.get(f"/api/jobs?limit={PAGE}")).json()
    newest = first["jobs"][0]["id"]
    deep_from = (now - timedelta(days=DAYS / 2)).isoformat()
    middle = await client.get("/api/jobs", params={"limit": 1, "created_before": deep_from})
    deep_cursor = middle.json()["jobs"][0]["id"]
    day_ago = (now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    two_days = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with_logs = await _job_with_logs(client, deep_cursor)
    failed = (await client.get("/api/jobs?status=failed&limit=1")).json()["jobs"][0]["id"]
    q = f"/api/jobs?limit={PAGE}"
    return [
        ("jobs: first page", q),
        ("jobs: task (busy)", f"{q}&task=task-00"),
        ("jobs: task (rare)", f"{q}&task=task-19"),
        ("jobs: status=failed", f"{q}&status=failed"),
        ("jobs: status=pending", f"{q}&status=pending"),
        ("jobs: source_type=webhook", f"{q}&source_type=webhook"),
        ("jobs: source_type=retry (1%)", f"{q}&source_type=retry"),
        ("jobs: source_id", f"{q}&source_id=ws/webhook-3"),
        ("jobs: time range (1 day)", f"{q}&created_after={day_ago}&created_before={two_days}"),
        ("jobs: task+status", f"{q}&task=task-03&status=failed"),
        ("jobs: rare task+status+source", f"{q}&task=task-19&status=cancelled&source_type=api"),
        ("jobs: deep keyset page", f"{q}&before={deep_cursor}"),
        ("jobs: id prefix (8)", f"{q}&id_prefix={newest[:8]}"),
        ("jobs: id prefix (13)", f"{q}&id_prefix={deep_cursor[:13]}"),
        ("jobs: id prefix (no match)", f"{q}&id_prefix=00000000-1"),
        ("job page: job", f"/api/jobs/{with_logs}"),
        ("job page: logs", f"/api/jobs/{with_logs}/logs?limit=500"),
        ("job page: failed job", f"/api/jobs/{failed}"),
        ("overview 1h", "/api/overview?window=1h"),
        ("overview 24h", "/api/overview?window=24h"),
    ]


async def _job_with_logs(client: httpx.AsyncClient, before: str) -> str:
    cursor = before
    for _ in range(50):
        page = (await client.get(f"/api/jobs?limit=200&before={cursor}")).json()["jobs"]
        for job in page:
            logs = (await client.get(f"/api/jobs/{job['id']}/logs?limit=1")).json()["logs"]
            if logs:
                return str(job["id"])
        cursor = page[-1]["id"]
    raise RuntimeError("no job with logs found")


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


@dataclass
class Timing:
    wall: list[float]  # ms per request
    cpu: list[float]  # ms of this process's CPU per request (the app and, on SQLite, the
    # database: on a loaded machine a steadier figure than the wall time)


async def time_requests(store: SqlStore, runs: int, now: datetime) -> dict[str, Timing]:
    app = create_app(BenchRuntime(store))
    transport = httpx.ASGITransport(app=app)
    timings: dict[str, Timing] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        cases = await requests_for(client, now)
        # Round-robin over the cases: a burst of load on the machine spreads over all of
        # them instead of landing on one. The first two rounds warm up (disk, caches).
        for attempt in range(runs + 2):
            for label, path in cases:
                cpu = time.process_time()
                started = time.perf_counter()
                resp = await client.get(path)
                took = (time.perf_counter() - started) * 1000
                cpu = (time.process_time() - cpu) * 1000
                if resp.status_code != 200:
                    raise RuntimeError(f"{label}: {path} → {resp.status_code} {resp.text[:300]}")
                if attempt >= 2:
                    timing = timings.setdefault(label, Timing([], []))
                    timing.wall.append(took)
                    timing.cpu.append(cpu)
    return timings


async def bench(db: str, args: argparse.Namespace) -> dict[str, Timing]:
    now = datetime.now(UTC)
    scratch: str | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if db == "sqlite":
        if args.sqlite_path:
            path = args.sqlite_path
        else:
            tmp = tempfile.TemporaryDirectory()
            path = os.path.join(tmp.name, "ui.db")
        url = f"sqlite:///{path}"
    else:
        url = args.pg_url or await create_pg_database("hw_bench_ui")
        scratch = None if args.pg_url else url
    try:
        store = await open_store(url)
        try:
            have = await count_jobs(store)
            if have < args.jobs:
                if have:
                    raise SystemExit(f"{url} holds {have} jobs, fewer than --jobs: use another")
                started = time.perf_counter()
                if db == "sqlite":
                    await asyncio.to_thread(seed_sqlite, path, args.jobs, now)
                else:
                    await seed_postgres(url, args.jobs, now)
                took = time.perf_counter() - started
                print(f"{db}: seeded {args.jobs:,} jobs in {took:.0f} s", flush=True)
            else:
                now = await _newest(store)
            return await time_requests(store, args.runs, now)
        finally:
            await store.close()
    finally:
        if scratch is not None:
            await drop_pg_database(scratch)
        if tmp is not None:
            tmp.cleanup()


async def _newest(store: SqlStore) -> datetime:
    from sqlalchemy import func, select

    from headwater.store.tables import jobs

    async with store.engine.connect() as conn:
        newest = (await conn.execute(select(func.max(jobs.c.created_at)))).scalar_one()
    return newest if isinstance(newest, datetime) and newest.tzinfo else datetime.now(UTC)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--runs", type=int, default=30, help="timed requests per case")
    parser.add_argument("--sqlite-path", help="keep the SQLite database here (reused)")
    parser.add_argument("--pg-url", help="use this PostgreSQL database (reused)")
    args = parser.parse_args()
    results: dict[str, dict[str, Timing]] = {}
    before = os.getloadavg()
    for db in args.db or ["sqlite", "postgresql"]:
        results[db] = await bench(db, args)
    dbs = list(results)
    labels = list(next(iter(results.values())))
    after = os.getloadavg()
    print(f"\n{args.jobs:,} jobs, {args.runs} runs per request, load average (1 min) "
          f"{before[0]:.1f} before, {after[0]:.1f} after")  # fmt: skip
    head = "".join(f"{db[:6] + ' p50':>12}{db[:6] + ' p95':>12}{db[:6] + ' cpu':>12}" for db in dbs)
    print(f"{'request (ms)':<32}{head}")
    for label in labels:
        cells = "".join(
            f"{statistics.median(t.wall):>12.1f}{quantile(t.wall, 0.95):>12.1f}"
            f"{statistics.median(t.cpu):>12.1f}"
            for t in (results[db][label] for db in dbs)
        )
        print(f"{label:<32}{cells}")


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(main())
