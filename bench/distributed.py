"""Distributed mode: remote workers over HTTP next to the embedded worker, on PostgreSQL.

- claim → start latency: jobs inserted at a steady rate (``--rate``/s for ``--seconds``);
  for each, the time from its insert (``created_at``) to the start of its step
  (``steps.started_at``), p50/p95/p99: through ``headwater up`` (the embedded worker
  claims from the store) and through ``headwater server`` + ``headwater worker`` (the
  worker long-polls ``/worker/claim`` and records its step over HTTP);
- jobs/s from a backlog of ``--backlog`` one-step ``type: function`` jobs, embedded,
  then with one and two remote workers;
- ``--failover``: the end-to-end failover scenario (2 servers, 2 workers, SIGKILL of
  each in turn, ``--rounds`` times) with ``--events`` events through an event source
  and as many webhooks: failover times, lost and duplicate events.

    python bench/distributed.py [--rate 100] [--seconds 5] [--backlog 3000]
                                [--failover --events 25000 --rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.e2e.cluster import (  # noqa: E402
    Proc,
    RemoteWorkerProc,
    Server,
    create_token,
    pg_query,
    run_failover_scenario,
    wait_for,
    wait_healthy,
)
from tests.e2e.procs import HEADWATER, free_port  # noqa: E402

from headwater.store.base import NewJob  # noqa: E402
from headwater.store.sql import open_store  # noqa: E402

WORKSPACE = """
actions:
  handle:
    type: function
    function: "builtins:dict"
tasks:
  process:
    input:
      n: { type: integer }
    flow:
      run: { action: handle, input: { n: "{{ input.n }}" } }
"""


def _job(n: int) -> NewJob:
    return NewJob(
        workspace="bench",
        task="process",
        input={"n": n},
        source_type="api",
        tags=frozenset({"function"}),
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []

    def at(p: int) -> float:
        return ordered[0] if not q else q[p - 1]

    return {"p50": at(50), "p95": at(95), "p99": at(99), "max": ordered[-1], "n": len(ordered)}


class Up(Proc):
    """``headwater up`` (embedded worker) on the benchmark database."""

    def __init__(self, workspace: Path, db_url: str, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [HEADWATER, "up", str(workspace), "--db", db_url, "--port", str(self.port),
                "--concurrency", "16", "--log-level", "warning"]  # fmt: skip
        super().__init__("up", args, cwd)
        wait_healthy(self, self.url)


async def _steady(db_url: str, rate: float, seconds: float, offset: int) -> list[str]:
    """Insert jobs one by one at ``rate``/s; returns their ids."""
    store = await open_store(db_url, migrate=False)
    ids: list[str] = []
    try:
        t0 = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            (outcome,) = await store.insert_jobs([_job(offset + i)])
            ids.append(outcome.id)
    finally:
        await store.close()
    return ids


async def _backlog(db_url: str, count: int, offset: int) -> list[str]:
    store = await open_store(db_url, migrate=False)
    try:
        ids: list[str] = []
        for start in range(0, count, 500):
            batch = [_job(offset + i) for i in range(start, min(count, start + 500))]
            ids += [o.id for o in await store.insert_jobs(batch)]
        return ids
    finally:
        await store.close()


def _latencies(db_url: str, ids: list[str]) -> list[float]:
    rows = pg_query(
        db_url,
        "SELECT EXTRACT(EPOCH FROM (s.started_at - j.created_at)) * 1000 FROM jobs j"
        " JOIN steps s ON s.job_id = j.id WHERE j.id = ANY(%s)",
        ids,
    )
    return [float(r[0]) for r in rows]


def _done(db_url: str, ids: list[str]) -> bool:
    (row,) = pg_query(
        db_url, "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = 'completed'", ids
    )
    return int(row[0]) == len(ids)


def _finished_span(db_url: str, ids: list[str]) -> float:
    (row,) = pg_query(
        db_url,
        "SELECT EXTRACT(EPOCH FROM (max(finished_at) - min(created_at))) FROM jobs"
        " WHERE id = ANY(%s)",
        ids,
    )
    return float(row[0])


def measure(
    db_url: str, tmp: Path, mode: str, args: argparse.Namespace, offset: int
) -> dict[str, Any]:
    workspace = tmp / "bench.yaml"
    workspace.write_text(WORKSPACE)
    procs: list[Proc] = []
    try:
        if mode == "embedded":
            procs.append(Up(workspace, db_url, tmp))
        else:
            server = Server("server", workspace, db_url, tmp)
            procs.append(server)
            token = create_token(db_url, mode)
            for i in range(2 if mode == "http-2" else 1):
                procs.append(RemoteWorkerProc(f"{mode}-w{i}", [server.url], token, tmp, 16))
            wait_for(
                lambda: len(pg_query(db_url, "SELECT 1 FROM workers")) >= len(procs) - 1,
                30,
                "the workers",
            )
        time.sleep(1.0)  # warm-up: connections, LISTEN, first claims
        figures: dict[str, Any] = {"mode": mode}
        if mode != "http-2":
            ids = asyncio.run(_steady(db_url, args.rate, args.seconds, offset))
            wait_for(lambda: _done(db_url, ids), 60, "the steady jobs", interval=0.2)
            figures["claim_to_start_ms"] = _percentiles(_latencies(db_url, ids))
        ids = asyncio.run(_backlog(db_url, args.backlog, offset + 1_000_000))
        wait_for(lambda: _done(db_url, ids), 300, "the backlog", interval=0.2)
        figures["jobs_per_s"] = len(ids) / _finished_span(db_url, ids)
        return figures
    finally:
        for p in procs:
            p.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--backlog", type=int, default=3000)
    parser.add_argument("--failover", action="store_true")
    parser.add_argument("--events", type=int, default=25_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stale-after", type=float, default=2.0, help="servers' setting")
    parser.add_argument("--lease-ttl", type=float, default=2.0, help="servers' setting")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-latency", action="store_true", help="Only the failover run.")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="hw-bench-dist-"))
    print(f"logs of every process: {tmp}", file=sys.stderr)
    db_url = asyncio.run(create_pg_database("hw_bench"))
    try:
        for i, mode in enumerate(() if args.skip_latency else ("embedded", "http-1", "http-2")):
            (tmp / mode).mkdir()
            results[mode] = measure(db_url, tmp / mode, mode, args, i * 10_000_000)
    finally:
        asyncio.run(drop_pg_database(db_url))
    if args.failover:
        db_url = asyncio.run(create_pg_database("hw_bench"))
        try:
            (tmp / "failover").mkdir()
            scenario = run_failover_scenario(
                tmp / "failover",
                db_url,
                args.events,
                args.events,
                args.rounds,
                timeout=600,
                stale_after=args.stale_after,
                lease_ttl=args.lease_ttl,
            )
            results["failover"] = {
                "failovers_s": scenario.failovers,
                "phases_s": scenario.phases,
                "by_source": scenario.by_source,
            }
        finally:
            asyncio.run(drop_pg_database(db_url))

    print(
        f"\nclaim → step start at {args.rate:g} jobs/s, and jobs/s from a backlog of "
        f"{args.backlog} one-step function jobs (PostgreSQL):"
    )
    print(f"{'mode':<34} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'jobs/s':>8}")
    names = {
        "embedded": "embedded (headwater up)",
        "http-1": "HTTP, 1 remote worker",
        "http-2": "HTTP, 2 remote workers",
    }
    for mode, label in names.items():
        if mode not in results:
            continue
        r = results[mode]
        lat = r.get("claim_to_start_ms", {})
        cells = [f"{lat[k]:8.1f}" if k in lat else f"{'':>8}" for k in ("p50", "p95", "p99")]
        print(f"{label:<34} {' '.join(cells)} {r['jobs_per_s']:8.0f}")
    if "failover" in results:
        f = results["failover"]
        print(
            f"\nfailover scenario ({args.events} events + {args.events} webhooks, "
            f"{args.rounds} round(s) of 4 SIGKILLs; --stale-after {args.stale_after:g} s, "
            f"--lease-ttl {args.lease_ttl:g} s):"
        )
        for label, seconds in f["failovers_s"]:
            print(f"  {label}: {seconds:.2f} s")
        for source, (jobs, distinct, dups) in f["by_source"].items():
            print(f"  {source}: {jobs} jobs for {distinct} events, {dups} events with 2+ jobs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
