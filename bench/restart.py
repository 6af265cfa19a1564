"""Restart under load: ``headwater up`` with a backlog of pending jobs and an event source
ingesting, SIGKILLed and started again; how long until it answers ``/healthz`` and
until it completes a job again.

Each round: ``--backlog`` pending one-step ``type: function`` jobs are inserted (once,
before the first start), ``headwater up`` starts, its event source prints ``OUTPUT:``
lines as fast as it can (a new job each), the worker runs jobs; after ``--load``
seconds the process is SIGKILLed (its consumer dies with it) and started again at once.
Measured from that second start:

- ``healthy``: the first ``GET /healthz`` that answers 200 (polled every 20 ms, each
  with a 1 s timeout, as ``tests/e2e`` and load balancers do), and the CPU seconds the
  restarted server had used by then (a loaded machine stretches the wall time, not
  this);
- ``first job``: the first job whose ``finished_at`` is after the start (polled in the
  database, by the partial status index);
- ``ingesting``: the first job the restarted consumer created.

    python bench/restart.py [--db sqlite|postgresql] [--backlog 100000] [--rounds 3]
                            [--load 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.e2e.procs import HEADWATER, free_port  # noqa: E402

from headwater.store.base import NewJob  # noqa: E402
from headwater.store.sql import open_store  # noqa: E402

WORKSPACE = """
actions:
  produce:
    type: script
    language: python
    script: |
      import sys
      out = sys.stdout
      i = 0
      while True:
          i += 1
          out.write('OUTPUT: {"n": %d}\\n' % i)
  handle:
    type: function
    function: "builtins:dict"
tasks:
  consumer:
    flow:
      produce: { action: produce }
  target:
    input:
      n: { type: integer }
    flow:
      handle: { action: handle, input: { n: "{{ input.n }}" } }
triggers:
  firehose:
    type: event_source
    task: consumer
    target_task: target
"""


async def seed(db_url: str, count: int) -> None:
    store = await open_store(db_url)
    try:
        for start in range(0, count, 1000):
            await store.insert_jobs(
                [
                    NewJob(
                        workspace="restart",
                        task="target",
                        input={"n": -i},
                        source_type="api",
                        tags=frozenset({"function"}),
                    )
                    for i in range(start, min(count, start + 1000))
                ]
            )
    finally:
        await store.close()


class Db:
    """Reads the benchmark's database without SQLAlchemy (a cheap poll)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg: Any = None

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[1]
            with sqlite3.connect(path, timeout=10) as conn:
                return conn.execute(sql.replace("%s", "?"), args).fetchall()
        import psycopg

        if self._pg is None:
            self._pg = psycopg.connect(self.url.replace("+asyncpg", ""), autocommit=True)
        return self._pg.execute(sql, args).fetchall()

    def ts(self, value: datetime) -> Any:
        if self.url.startswith("sqlite"):
            return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
        return value

    def finished_after(self, after: datetime) -> bool:
        # "status = 'completed'" uses the partial status index (no pending rows in it).
        rows = self.query(
            "SELECT 1 FROM jobs WHERE status = 'completed' AND created_at > %s "
            "AND finished_at > %s LIMIT 1",
            self.ts(datetime(2000, 1, 1, tzinfo=UTC)),
            self.ts(after),
        )
        return bool(rows)

    def created_after(self, after: datetime) -> bool:
        rows = self.query(
            "SELECT 1 FROM jobs WHERE created_at > %s AND source_type = 'event_source' "
            "AND task = 'target' LIMIT 1",
            self.ts(after),
        )
        return bool(rows)

    def pending(self) -> int:
        return int(self.query("SELECT count(*) FROM jobs WHERE status = 'pending'")[0][0])


LOG_LEVEL = "warning"


def start_up(ws: Path, db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("a") as f:
        f.write(f"--- start at {datetime.now(UTC).isoformat()}\n")
    args = [HEADWATER, "up", str(ws), "--db", db_url, "--port", str(port)]
    return subprocess.Popen(
        [*args, "--concurrency", "8", "--log-level", LOG_LEVEL],
        cwd=ws.parent,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
        start_new_session=True,
    )


def wait_healthy(proc: subprocess.Popen[bytes], url: str, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    return None


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux): start-up's cost,
    which a loaded machine stretches in wall time but does not change."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its consumer, at once
        proc.wait(10)


def one_round(ws: Path, db: Db, load: float, log: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_up(ws, db.url, port, log)
    try:
        if wait_healthy(proc, url, time.monotonic() + 120) is None:
            raise RuntimeError(f"headwater up did not start: {log.read_text()[-2000:]}")
        time.sleep(load)  # the backlog runs and the consumer ingests
    finally:
        kill(proc)
    pending = db.pending()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    wall = datetime.now(UTC)
    t0 = time.monotonic()
    proc = start_up(ws, db.url, port, log)
    try:
        healthy = wait_healthy(proc, url, t0 + 120)
        if healthy is None:
            raise RuntimeError(f"headwater up did not restart: {log.read_text()[-2000:]}")
        cpu_healthy = cpu_seconds(proc.pid)
        first_job = ingesting = None
        while time.monotonic() - t0 < 120 and (first_job is None or ingesting is None):
            if first_job is None and db.finished_after(wall):
                first_job = time.monotonic()
            if ingesting is None and db.created_after(wall):
                ingesting = time.monotonic()
            time.sleep(0.05)
    finally:
        kill(proc)
    return {
        "pending_at_kill": pending,
        "healthy_s": healthy - t0,
        "healthy_cpu_s": cpu_healthy,
        "first_job_s": None if first_job is None else first_job - t0,
        "ingesting_s": None if ingesting is None else ingesting - t0,
    }


async def run(
    db_kind: str, backlog: int, rounds: int, load: float, keep_log: Path | None
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws.yaml"
        ws.write_text(WORKSPACE)
        log = Path(tmp) / "up.log"
        pg_url = None
        if db_kind == "sqlite":
            url = f"sqlite:///{tmp}/restart.db"
        else:
            pg_url = url = await create_pg_database("hw_restart")
        try:
            await seed(url, backlog)
            db = Db(url)
            results = []
            for i in range(rounds):
                result = one_round(ws, db, load, log)
                result["load_avg"] = os.getloadavg()[0]
                print(
                    f"{db_kind} round {i + 1}: {result['pending_at_kill']:,} pending at the kill; "
                    f"healthy {result['healthy_s']:.2f} s ({result['healthy_cpu_s']:.2f} s CPU), "
                    "first job "
                    f"{_s(result['first_job_s'])}, ingesting {_s(result['ingesting_s'])} "
                    f"(load {result['load_avg']:.1f})",
                    flush=True,
                )
                results.append(result)
            return results
        finally:
            if keep_log is not None and log.exists():
                keep_log.write_bytes(log.read_bytes())
            if pg_url is not None:
                await drop_pg_database(pg_url)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", type=float, default=5.0, help="seconds of load before a kill")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-log", type=Path, help="copy the servers' log here")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    global LOG_LEVEL
    LOG_LEVEL = args.log_level
    out: dict[str, Any] = {}
    for kind in args.db or ["sqlite", "postgresql"]:
        out[kind] = asyncio.run(run(kind, args.backlog, args.rounds, args.load, args.keep_log))
    print("\nrestart under load: seconds from the second start (min-max over rounds)")
    for kind, results in out.items():
        for key in ("healthy_s", "healthy_cpu_s", "first_job_s", "ingesting_s"):
            values = [r[key] for r in results if r[key] is not None]
            span = f"{min(values):.2f}-{max(values):.2f}" if values else "-"
            print(f"{kind:11} {key:12} {span}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
