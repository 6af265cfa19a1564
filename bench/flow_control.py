"""Flow control: what concurrency keys, rate limits and priorities cost, and the long
versions of their correctness tests.

    python bench/flow_control.py [--n 20000] [--only cost,rate,keys,explain,kill]

On a temporary SQLite file and on a fresh PostgreSQL database (``HEADWATER_TEST_PG``'s
server), unless ``--only`` narrows it:

- ``cost``: one-step jobs through the store as workers run them: 4 claimers (one store
  each on PostgreSQL, as worker processes; the one embedded store on SQLite) claim up to
  16 jobs at a time and finish each batch, until the queue is empty. Jobs per second
  and claim latency (p50/p99 of ``claim_jobs``), for jobs without limits, with a
  concurrency key (200 keys, limit 8: never the bottleneck) and with a rate limit that
  never binds: the price of the bookkeeping, not of waiting. CPU per job as well (the
  wall time is noisy on a shared machine): this process's, and on PostgreSQL the
  bench database's own server backends' (from /proc, same host). ``--runs N`` repeats
  it and prints each figure's range, with the load average.
- ``keys``: 5,000 jobs over 50 keys (limit 1 and 3), claimed and finished by 4 claimers
  at once; from the store's own start/finish times, the most jobs a key ever had
  running (must be <= its limit) and whether limit-1 keys kept their order.
- ``rate``: a backlog of rate-limited jobs (100 per 1 s) claimed by 3 claimers for 30 s
  (each sleeps until a wake-up when a claim comes back short, as workers do);
  starts per second from the stored start times: every 1 s window (sliding) holds at
  most 100, and the aligned seconds hold 100 ± 1.
- ``explain``: PostgreSQL's plan for the claim with 100,000 pending jobs (half keyed).
- ``kill`` (PostgreSQL, processes): tests/e2e's keyed scenario with 5,000 jobs over 50
  keys on two ``headwater server``s and two ``headwater worker``s, one worker SIGKILLed
  mid-run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import create_pg_database, drop_pg_database

from headwater.store.base import (
    Channel,
    ConcurrencyStrategy,
    JobFlow,
    JobRecord,
    JobStatus,
    NewJob,
)
from headwater.store.notify import Subscription
from headwater.store.sql import SqlStore, open_store

CLAIMERS = 4
CLAIM = 16


def jobs_of(n: int, flow: Any = None, priority: int = 0) -> list[NewJob]:
    return [
        NewJob(
            workspace="bench",
            task="t",
            input={"n": i},
            source_type="api",
            flow=flow(i) if flow else JobFlow(),
            priority=priority,
        )
        for i in range(n)
    ]


async def stores_for(url: str, count: int) -> list[SqlStore]:
    first = await open_store(url, pool_size=4)
    if first.dialect == "sqlite":
        return [first] * count
    return [first, *[await open_store(url, pool_size=4) for _ in range(count - 1)]]


async def close_all(stores: Sequence[SqlStore]) -> None:
    for s in dict.fromkeys(stores):
        await s.close()


async def drain(stores: Sequence[SqlStore], total: int) -> tuple[float, list[float]]:
    """Claim and finish until ``total`` jobs are done; (seconds, claim latencies)."""
    latencies: list[float] = []
    done = 0
    started = time.perf_counter()

    async def claimer(store: SqlStore, name: str) -> None:
        nonlocal done
        idle = 0
        while done < total:
            t = time.perf_counter()
            got = await store.claim_jobs(name, ["script"], CLAIM)
            latencies.append(time.perf_counter() - t)
            if not got:
                idle += 1
                await asyncio.sleep(0.001 * min(idle, 10))
                continue
            idle = 0
            await store.finish_jobs([(j.id, name, JobStatus.COMPLETED, None, None) for j in got])
            done += len(got)

    await asyncio.gather(*(claimer(s, f"w{i}") for i, s in enumerate(stores)))
    return time.perf_counter() - started, latencies


async def backend_cpu(store: SqlStore) -> float:
    """CPU seconds used so far by the server backends connected to the store's
    database (PostgreSQL on this host; 0 elsewhere)."""
    if store.dialect != "postgresql":
        return 0.0
    async with store.write_engine.connect() as conn:
        pids = [
            int(r[0])
            for r in await conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )
        ]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


async def bench_cost(url: str, label: str, n: int) -> list[tuple[str, ...]]:
    modes: dict[str, Any] = {
        "no limits": None,
        "concurrency key (200 keys, limit 8)": lambda i: JobFlow(
            concurrency_key=f"bench/t:k{i % 200}", concurrency_limit=8
        ),
        "rate limit (never binds)": lambda i: JobFlow(
            rate_key="bench/t", rate_limit=10_000_000, rate_per=1.0
        ),
        "priority (5 levels)": "priority",
    }
    rows: list[tuple[str, ...]] = []
    base = 0.0
    for what, flow in modes.items():
        stores = await stores_for(url, CLAIMERS)
        try:
            if flow == "priority":
                batch = [j for p in range(5) for j in jobs_of(n // 5, priority=p)]
            else:
                batch = jobs_of(n, flow)
            for start in range(0, len(batch), 1000):
                await stores[0].insert_jobs(batch[start : start + 1000])
            cpu0, db0 = time.process_time(), await backend_cpu(stores[0])
            seconds, lat = await drain(stores, len(batch))
            cpu = time.process_time() - cpu0
            db_cpu = await backend_cpu(stores[0]) - db0
        finally:
            await close_all(stores)
            if stores[0].dialect == "postgresql":
                await reset_pg(url)
            else:
                Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        rate = len(batch) / seconds
        base = base or rate
        lat.sort()
        rows.append(
            (
                label,
                what,
                f"{rate:,.0f}",
                f"{(rate / base - 1) * 100:+.1f}%",
                f"{statistics.median(lat) * 1000:.2f}",
                f"{lat[int(len(lat) * 0.99)] * 1000:.2f}",
                f"{cpu / len(batch) * 1e6:.0f}",
                f"{db_cpu / len(batch) * 1e6:.0f}" if stores[0].dialect == "postgresql" else "",
            )
        )
    return rows


def ranges(runs: list[list[tuple[str, ...]]], keep: int) -> list[tuple[str, ...]]:
    """Per row, the first ``keep`` cells as they are and each other cell as min–max."""

    def number(cell: str) -> float:
        return float(cell.replace(",", "").replace("%", "") or "nan")

    out: list[tuple[str, ...]] = []
    for cells in zip(*runs, strict=True):
        row = list(cells[0][:keep])
        for i in range(keep, len(cells[0])):
            values = [c[i] for c in cells]
            lo = min(values, key=number)
            hi = max(values, key=number)
            row.append(lo if lo == hi else f"{lo} – {hi}")
        out.append(tuple(row))
    return out


async def reset_pg(url: str) -> None:
    store = await open_store(url)
    try:
        async with store.write_engine.begin() as conn:
            await conn.exec_driver_sql("TRUNCATE jobs CASCADE")
    finally:
        await store.close()


def peak_running(runs: list[JobRecord]) -> int:
    events = sorted(
        [(j.started_at, 1) for j in runs] + [(j.finished_at, -1) for j in runs],
        key=lambda e: (e[0], e[1]),
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


async def bench_keys(url: str, label: str) -> list[tuple[str, ...]]:
    stores = await stores_for(url, CLAIMERS)
    limits = {f"k{i}": 1 if i % 2 == 0 else 3 for i in range(50)}
    try:
        batch = jobs_of(
            5000,
            lambda i: JobFlow(
                concurrency_key=f"k{i % 50}",
                concurrency_limit=limits[f"k{i % 50}"],
                concurrency_strategy=ConcurrencyStrategy.QUEUE,
            ),
        )
        outcomes = await stores[0].insert_jobs(batch)
        ids = [o.id for o in outcomes]
        seconds, _ = await drain(stores, len(batch))
        done = await stores[0].get_jobs(ids)
    finally:
        await close_all(stores)
    by_key: dict[str, list[JobRecord]] = defaultdict(list)
    position = {job_id: i for i, job_id in enumerate(ids)}
    for j in done:
        by_key[f"k{position[j.id] % 50}"].append(j)
    worst = max(peak_running(runs) - limits[key] for key, runs in by_key.items())
    ordered = all(
        [j.id for j in sorted(runs, key=lambda j: j.started_at or datetime.min)]
        == sorted((j.id for j in runs), key=position.__getitem__)
        for key, runs in by_key.items()
        if limits[key] == 1
    )
    return [
        (
            label,
            "5,000 jobs / 50 keys / 4 claimers",
            f"{len(batch) / seconds:,.0f} jobs/s",
            f"peak - limit: {worst:+d} (must be <= 0)",
            f"limit-1 keys in order: {ordered}",
        )
    ]


async def bench_rate(url: str, label: str, seconds: float) -> list[tuple[str, ...]]:
    stores = await stores_for(url, 3)
    per_second = 100
    try:
        batch = jobs_of(
            int(per_second * seconds) + 500,
            lambda i: JobFlow(rate_key="bench/t", rate_limit=per_second, rate_per=1.0),
        )
        for start in range(0, len(batch), 1000):
            await stores[0].insert_jobs(batch[start : start + 1000])
        claimed: list[JobRecord] = []
        subs = [s.subscribe(Channel.JOBS) for s in stores]
        for store in dict.fromkeys(stores):
            if store.dialect == "postgresql":
                await store.wait_listening(timeout=5)
        stop = time.monotonic() + seconds

        async def claimer(store: SqlStore, sub: Subscription, name: str) -> None:
            # As a worker does: claim, and when the claim comes back short, sleep until a
            # wake-up (a lost one shows as a second short of starts), 1 s at most.
            while time.monotonic() < stop:
                got = await store.claim_jobs(name, ["script"], CLAIM)
                claimed.extend(got)
                if got:
                    await store.finish_jobs(
                        [(j.id, name, JobStatus.COMPLETED, None, None) for j in got]
                    )
                if len(got) < CLAIM:
                    await sub.wait(min(1.0, max(0.0, stop - time.monotonic())))

        await asyncio.gather(
            *(claimer(s, sub, f"w{i}") for i, (s, sub) in enumerate(zip(stores, subs, strict=True)))
        )
        for sub in subs:
            sub.close()
    finally:
        await close_all(stores)
    times = sorted(j.started_at for j in claimed if j.started_at is not None)
    # Sliding: the most starts inside any window of 1 s (two pointers over the times).
    most, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= timedelta(seconds=1):
            lo += 1
        most = max(most, hi - lo + 1)
    first = times[0]
    buckets: dict[int, int] = defaultdict(int)
    for t in times:
        buckets[int((t - first).total_seconds())] += 1
    full = [buckets[s] for s in range(int(seconds) - 1)]  # the last second is cut short
    return [
        (
            label,
            f"{per_second}/s for {seconds:.0f} s, 3 claimers",
            f"starts {len(times)}",
            f"max in any 1 s window {most}",
            f"aligned seconds min {min(full)} max {max(full)}",
        )
    ]


async def bench_explain(url: str) -> list[str]:
    store = await open_store(url)
    try:
        for start in range(0, 100_000, 5000):
            await store.insert_jobs(
                jobs_of(
                    5000,
                    lambda i: (
                        JobFlow(concurrency_key=f"k{i % 500}", concurrency_limit=2)
                        if i % 2
                        else JobFlow()
                    ),
                    priority=start % 3,
                )
            )
        async with store.write_engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE jobs")
            from headwater.store.postgres import _CLAIM

            plan = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
                + _CLAIM.replace("$1", "'w'")
                .replace("$2::text[]", "ARRAY['script']")
                .replace("$3", "16")
                .replace("$4", "now()")
                .replace("$5::text[]", "ARRAY[]::text[]")
                .replace("$6::text[]", "ARRAY[]::text[]")
            )
            lines = [str(r[0]) for r in plan]
            await conn.rollback()
        t = time.perf_counter()
        got = await store.claim_jobs("w", ["script"], 16)
        lines.append(
            f"claim_jobs(16) with 100,000 pending: {len(got)} jobs in "
            f"{(time.perf_counter() - t) * 1000:.1f} ms"
        )
        return lines
    finally:
        await store.close()


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        out.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        )
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rate-seconds", type=float, default=30.0)
    parser.add_argument("--only", default="cost,keys,rate,explain")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="cost: repeat and print ranges")
    args = parser.parse_args()
    only = set(args.only.split(","))
    tmp = tempfile.mkdtemp()
    targets: list[tuple[str, str]] = []
    if not args.no_sqlite:
        targets.append(("sqlite", f"sqlite:///{tmp}/bench.db"))
    pg = await create_pg_database("hw_bench")
    targets.append(("postgresql", pg))
    try:
        if "cost" in only:
            runs: list[list[tuple[str, ...]]] = []
            loads = [os.getloadavg()[0]]
            for _ in range(args.runs):
                rows: list[tuple[str, ...]] = []
                for label, url in targets:
                    rows += await bench_cost(url, label, args.n)
                runs.append(rows)
                loads.append(os.getloadavg()[0])
            header = (
                "db", "jobs", "jobs/s", "vs no limits", "claim p50 ms", "claim p99 ms",
                "CPU µs/job (bench)", "CPU µs/job (db)",
            )  # fmt: skip
            print(table(ranges(runs, 2), header), flush=True)
            print(f"{args.runs} run(s), load average {min(loads):.1f}–{max(loads):.1f}\n")
        if "keys" in only:
            rows = []
            for label, url in targets:
                rows += await bench_keys(url, label)
                if label == "postgresql":
                    await reset_pg(url)
            print(table(rows, ("db", "run", "throughput", "limit", "order")), "\n", flush=True)
        if "rate" in only:
            rows = []
            for label, url in targets:
                rows += await bench_rate(url, label, args.rate_seconds)
                if label == "postgresql":
                    await reset_pg(url)
            print(table(rows, ("db", "run", "starts", "sliding", "aligned")), "\n", flush=True)
        if "explain" in only:
            print("\n".join(await bench_explain(pg)), "\n", flush=True)
            await reset_pg(pg)
        if "kill" in only:
            from tests.e2e.flow_cluster import run_keyed_kill_scenario

            result = await asyncio.to_thread(
                run_keyed_kill_scenario, Path(tmp), pg, 5000, 50, 900, 2
            )
            print(f"kill: {result.summary()} in {result.seconds:.0f} s", flush=True)
    finally:
        await drop_pg_database(pg)


if __name__ == "__main__":
    asyncio.run(main())
