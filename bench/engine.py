"""Jobs of a one-step shell task through the embedded node, on SQLite and PostgreSQL.

Prints, per database:
- throughput: N jobs queued at once, run by the worker → completed jobs/s (from the
  worker's start to the last job's ``finished_at``);
- latency: jobs submitted one at a time at a fixed rate → job creation to step start,
  p50/p99 (ms);
- function jobs: N jobs of a one-step ``type: function`` task (a no-op Python callable
  run in the worker process: a plain function runs in a thread, an ``async def`` on the
  event loop, as PgQueuer's and Procrastinate's handlers do) queued at once →
  completed jobs/s;
next to the raw rate of spawning the same command with asyncio (no orchestrator), with
the faster of asyncio's child watchers (``PidfdChildWatcher``, as our runner uses pidfds).

    python bench/engine.py [--n 2000] [--rate 100] [--seconds 5] [--concurrency 8]
                           [--function-n 20000] [--function-concurrency 64]
                           [--language sh|shell] [--pg postgresql://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from headwater.dispatch.dispatcher import Event  # noqa: E402
from headwater.node import Node, NodeSettings, freeze_startup_heap  # noqa: E402
from headwater.store.base import JobFilter  # noqa: E402
from headwater.worker.worker import WorkerSettings  # noqa: E402

WORKSPACE = """
actions:
  noop:
    type: script
    language: {language}
    script: "true"
  fn:
    type: function
    function: "hw_engine_funcs:noop"
  afn:
    type: function
    function: "hw_engine_funcs:anoop"
tasks:
  one-step:
    flow:
      s: {{ action: noop }}
  one-function:
    flow:
      f: {{ action: fn }}
  one-async-function:
    flow:
      f: {{ action: afn }}
"""

FUNCS = "def noop(**kwargs):\n    return {}\n\n\nasync def anoop(**kwargs):\n    return {}\n"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def raw_spawn_rate(n: int, concurrency: int, shell: str) -> float:
    watcher = asyncio.PidfdChildWatcher()  # Python 3.11 API; the faster watcher here
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.get_event_loop_policy().set_child_watcher(watcher)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec(
                shell,
                "-c",
                "true",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            await proc.communicate()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


async def make_node(db_url: str, ws: Path, concurrency: int) -> Node:
    node = Node(ws, NodeSettings(db_url=db_url, worker=WorkerSettings(concurrency=concurrency)))
    await node.start()
    freeze_startup_heap()  # as `headwater up` does
    return node


async def throughput(
    db_url: str, ws: Path, n: int, concurrency: int, task: str = "one-step"
) -> dict[str, float]:
    node = await make_node(db_url, ws, concurrency)
    try:
        job = node.dispatcher.prepare(Event(task, {}, "bench"))
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            await node.store.insert_jobs([job] * min(500, n - start))
        enqueue = n / (time.perf_counter() - t0)
        stop = asyncio.Event()
        started = time.time()
        runner = asyncio.create_task(node.run_worker(stop))
        while True:
            counts = await node.store.count_jobs_by_status()
            if counts.get("completed", 0) + counts.get("failed", 0) >= n:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await runner
        done = await node.store.list_jobs(JobFilter(limit=n))
        last = max(j.finished_at.timestamp() for j in done if j.finished_at)
        return {
            "enqueue_per_s": enqueue,
            "jobs_per_s": n / (last - started),
            "failed": float(counts.get("failed", 0)),
        }
    finally:
        await node.close()


async def latency(
    db_url: str, ws: Path, rate: float, seconds: float, concurrency: int
) -> dict[str, float]:
    node = await make_node(db_url, ws, concurrency)
    stop = asyncio.Event()
    runner = asyncio.create_task(node.run_worker(stop))
    try:
        await asyncio.sleep(0.5)  # let the worker register and subscribe
        ids = []
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for _ in range(int(rate * seconds)):
            outcome = await node.submit("one-step", {}, source_type="bench")
            ids.append(outcome.id)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            counts = await node.store.count_jobs_by_status()
            if counts.get("completed", 0) + counts.get("failed", 0) >= len(ids):
                break
            await asyncio.sleep(0.05)
        delays = []
        for job_id in ids:
            job = await node.store.get_job(job_id)
            if job and job.steps and job.steps[0].started_at:
                delays.append((job.steps[0].started_at - job.created_at).total_seconds() * 1000)
        return {"p50_ms": pct(delays, 50), "p99_ms": pct(delays, 99), "samples": len(delays)}
    finally:
        stop.set()
        await runner
        await node.close()


async def pg_database(admin_url: str) -> tuple[str, str]:
    import asyncpg

    name = f"hw_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}", name


async def drop_pg(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--function-n", type=int, default=20_000)
    ap.add_argument("--function-concurrency", type=int, default=64)
    ap.add_argument("--language", default="sh", choices=["sh", "shell"])
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    shell = "/bin/sh" if args.language == "sh" else "bash"
    results: dict[str, Any] = {
        "raw_spawn_per_s": await raw_spawn_rate(args.n, args.concurrency, shell)
    }
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "bench.yaml"
        ws.write_text(textwrap.dedent(WORKSPACE.format(language=args.language)))
        Path(tmp, "hw_engine_funcs.py").write_text(FUNCS)
        sys.path.insert(0, tmp)
        labels = ["sqlite"] if args.skip_pg else ["sqlite", "postgresql"]
        for label in labels:
            measured: dict[str, Any] = {}
            for what in ("function", "async-function", "shell"):
                # Every measurement on a fresh database.
                if label == "sqlite":
                    url, name = f"sqlite:///{tmp}/bench-{what}.db", None
                else:
                    url, name = await pg_database(args.pg)
                try:
                    if what in ("function", "async-function"):
                        task = "one-function" if what == "function" else "one-async-function"
                        fn = await throughput(
                            url, ws, args.function_n, args.function_concurrency, task
                        )
                        key = what.replace("-", "_")
                        measured[f"{key}_jobs_per_s"] = fn["jobs_per_s"]
                        measured[f"{key}_failed"] = fn["failed"]
                    else:
                        measured.update(await throughput(url, ws, args.n, args.concurrency))
                        measured.update(
                            await latency(url, ws, args.rate, args.seconds, args.concurrency)
                        )
                finally:
                    if name:
                        await drop_pg(args.pg, name)
            results[label] = measured

    raw = results["raw_spawn_per_s"]
    print(
        f"\none-step `{args.language}` jobs, n={args.n}, concurrency={args.concurrency}, "
        f"latency at {args.rate:g}/s for {args.seconds:g}s"
    )
    print(
        f"{'database':<12}{'enqueue/s':>12}{'jobs/s':>10}{'% of raw':>10}"
        f"{'start p50 ms':>14}{'p99 ms':>9}{'function jobs/s':>17}{'async fn/s':>12}"
    )
    for label in ("sqlite", "postgresql"):
        r = results.get(label)
        if r is None:
            continue
        print(
            f"{label:<12}{r['enqueue_per_s']:>12,.0f}{r['jobs_per_s']:>10,.0f}"
            f"{100 * r['jobs_per_s'] / raw:>9.0f}%{r['p50_ms']:>14.2f}{r['p99_ms']:>9.2f}"
            f"{r['function_jobs_per_s']:>17,.0f}{r['async_function_jobs_per_s']:>12,.0f}"
        )
    print(f"{'raw spawn':<12}{'':>12}{raw:>10,.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
