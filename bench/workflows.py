"""Durable workflows: headwater next to DBOS on the same PostgreSQL (issue 22).

A workflow of three no-op steps, each recorded, as both systems record them:
- workflows/s: N started one after another from a backlog (one start call each, as a
  caller would; ``--starters K``: K such callers at once), from the first start call
  to the last workflow's end;
- start latency: workflows started at a steady RATE for SECONDS, from the start call to
  the workflow body's first line, p50/p99.
headwater: an embedded node (``headwater up``'s worker, ``--concurrency``) runs the
workflows; they are started through a ``WorkflowClient`` in the same process, an async
workflow with async steps and a sync one with sync steps (run in worker threads).
DBOS (peers venv, ``bench/peers/dbos_workflows_bench.py``): ``DBOS.start_workflow`` (in
process, no queue) and a queue tuned as PEERS.md says (worker_concurrency 32, polling
10 ms). Each system gets a fresh database. The goal (issue 22): headwater ≥ 10× DBOS's
rate, p50 start ≤ 5 ms. ``--runs`` repeats everything; figures print as min–max.

    python bench/workflows.py [--n 2000] [--rate 50] [--seconds 5] [--runs 3]
                              [--concurrency 32] [--starters 1] [--skip-dbos]
                              [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402

PEERS_PY = ROOT / "bench" / ".peers-venv" / "bin" / "python"

APP = """
import time

import headwater

registry = headwater.Registry(app="wfbench")
STARTS = []


@headwater.step
async def one(x):
    return x


@headwater.step
async def two(x):
    return x


@headwater.step
async def three(x):
    return x


@headwater.workflow(registry=registry)
async def three_async(sent):
    if sent:
        STARTS.append((time.time() - sent) * 1000)
    return await three(await two(await one(sent)))


@headwater.step
def one_s(x):
    return x


@headwater.step
def two_s(x):
    return x


@headwater.step
def three_s(x):
    return x


@headwater.workflow(registry=registry)
def three_sync(sent):
    if sent:
        STARTS.append((time.time() - sent) * 1000)
    return three_s(two_s(one_s(sent)))
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def headwater_run(
    url: str,
    module: Any,
    kind: str,
    n: int,
    rate: float,
    seconds: float,
    concurrency: int,
    starters: int = 1,
) -> dict[str, Any]:
    import headwater
    from headwater.node import Node, NodeSettings, freeze_startup_heap
    from headwater.store.base import Channel, JobFilter, JobStatus
    from headwater.worker.worker import WorkerSettings

    registry = module.registry
    workflow = module.three_async if kind == "async" else module.three_sync
    task = "three_async" if kind == "async" else "three_sync"
    workspace = registry.workspace(Path(module.__file__).parent)
    settings = NodeSettings(db_url=url, worker=WorkerSettings(concurrency=concurrency))
    node = Node(
        Path(module.__file__),
        settings,
        loader=lambda _p: workspace,
        functions=registry.functions(),
    )
    await node.start()
    freeze_startup_heap()  # as `headwater up` does
    stop = asyncio.Event()
    worker = asyncio.create_task(node.run_worker(stop))

    async def wait_done(count: int) -> list[Any]:
        # Counted (one row per status), the jobs listed once at the end: listing 2,000
        # jobs at every wake-up took more of this process's CPU than the workflows.
        with node.store.subscribe(Channel.FINISHED) as finished:
            while True:
                counts = await node.store.count_jobs_by_status()
                if sum(n for s, n in counts.items() if JobStatus(s).is_terminal) >= count:
                    break
                await finished.wait(0.2)
        jobs = await node.store.list_jobs(JobFilter(task=task, limit=count + 10))
        return [j for j in jobs if j.status.is_terminal]

    try:
        async with headwater.WorkflowClient(url, registry) as client:
            # Warm-up: imports, the first connections, the claim path.
            for _ in range(20):
                await client.start(workflow, 0.0)
            await wait_done(20)
            wall0 = time.time()
            if starters == 1:
                for _ in range(n):
                    await client.start(workflow, 0.0)
            else:  # ``starters`` callers, each starting one after another
                per = [n // starters + (i < n % starters) for i in range(starters)]

                async def caller(count: int) -> None:
                    for _ in range(count):
                        await client.start(workflow, 0.0)

                await asyncio.gather(*(caller(c) for c in per))
            ended = await wait_done(20 + n)
            failed = [j for j in ended if j.status is not JobStatus.COMPLETED]
            last = max(j.finished_at for j in ended if j.finished_at is not None)
            span = last.timestamp() - wall0
            per_s = n / span if span > 0 else float("nan")
            module.STARTS.clear()
            count = int(rate * seconds)
            t0m = time.monotonic()
            for i in range(count):
                await asyncio.sleep(max(0.0, t0m + i / rate - time.monotonic()))
                await client.start(workflow, time.time())
            await wait_done(20 + n + count)
            starts = list(module.STARTS)
    finally:
        stop.set()
        await worker
        await node.close()
    return {
        "settings": f"{kind} workflow, embedded worker, concurrency {concurrency},"
        f" backlog started by {starters} caller(s)",
        "workflows_per_s": per_s,
        "failed": len(failed),
        "n": n,
        "rate": rate,
        "start_p50_ms": pct(starts, 50),
        "start_p99_ms": pct(starts, 99),
        "start_samples": len(starts),
    }


def dbos_run(
    url: str, n: int, rate: float, seconds: float, starters: int = 1
) -> dict[str, Any] | None:
    if not PEERS_PY.exists():
        print("DBOS skipped: run `bash bench/peers/setup.sh` first", file=sys.stderr)
        return None
    done = subprocess.run(
        [str(PEERS_PY), str(ROOT / "bench/peers/dbos_workflows_bench.py"), url, str(n),
         str(rate), str(seconds), "direct,queue", str(starters)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        print(f"DBOS failed: {done.stderr[-2000:]}", file=sys.stderr)
        return None
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])["modes"]
    return found


async def one_run(args: argparse.Namespace, module: Any) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for kind in ("async", "sync"):
        url = await create_pg_database("hw_bench_wf")
        try:
            rows[f"headwater {kind}"] = await headwater_run(
                url, module, kind, args.n, args.rate, args.seconds, args.concurrency, args.starters
            )
        finally:
            await drop_pg_database(url)
    if not args.skip_dbos:
        url = await create_pg_database("hw_bench_dbos")
        try:
            found = await asyncio.to_thread(
                dbos_run, url, args.dbos_n, args.rate, args.seconds, args.starters
            )
        finally:
            await drop_pg_database(url)
        for mode, row in (found or {}).items():
            rows[f"DBOS {mode}"] = row
    return rows


def _range(values: list[float], fmt: str) -> str:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "-"
    low, high = min(values), max(values)
    return format(low, fmt) if low == high else f"{format(low, fmt)}–{format(high, fmt)}"


def report(runs: list[dict[str, dict[str, Any]]], loads: list[tuple[float, ...]]) -> None:
    names = list(runs[0])
    print(f"\n3-step workflows, {len(runs)} run(s); load average (1 min) per run:"
          f" {', '.join(f'{load[0]:.1f}' for load in loads)}")  # fmt: skip
    print(f"{'system':<20} {'workflows/s':>14} {'start p50 ms':>14} {'start p99 ms':>14}")
    for name in names:
        rows = [r[name] for r in runs if name in r]
        print(
            f"{name:<20} {_range([r['workflows_per_s'] for r in rows], '.0f'):>14}"
            f" {_range([r['start_p50_ms'] for r in rows], '.1f'):>14}"
            f" {_range([r['start_p99_ms'] for r in rows], '.1f'):>14}"
        )
    dbos = [k for k in names if k.startswith("DBOS")]
    if dbos:
        print("ratio headwater / best DBOS mode (same run), workflows/s:")
        for name in (k for k in names if k.startswith("headwater")):
            ratios = [
                r[name]["workflows_per_s"] / max(r[d]["workflows_per_s"] for d in dbos)
                for r in runs
                if name in r and all(d in r for d in dbos)
            ]
            print(f"  {name:<18} {_range(ratios, '.1f')}× (goal ≥ 10×)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dbos-n", type=int, default=500, help="DBOS's backlog (it is slower)")
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument(
        "--starters",
        type=int,
        default=1,
        help="callers starting the backlog at once (each one start after another; DBOS: threads)",
    )
    ap.add_argument("--skip-dbos", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        name = f"hw_wfbench_{uuid.uuid4().hex[:6]}"
        (Path(folder) / f"{name}.py").write_text(textwrap.dedent(APP))
        sys.path.insert(0, folder)
        module = __import__(name)
        runs, loads = [], []
        for i in range(args.runs):
            runs.append(asyncio.run(one_run(args, module)))
            loads.append(os.getloadavg())
            print(f"run {i + 1}: {json.dumps(runs[-1])}", flush=True)
    report(runs, loads)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "loads": loads}, indent=2))


if __name__ == "__main__":
    main()
