"""Debounce and batch: what gathering costs, and the long crash test.

    python bench/flow_batching.py [--db URL ...] [--n 50000] [--chunk 500]
    python bench/flow_batching.py --chaos [--rounds 10] [--events 2000]

Throughput (without ``--chaos``), through the real Dispatcher as an event source's
batches of ``--chunk`` events arrive, on a temporary SQLite file and a fresh PostgreSQL
database (created on ``HEADWATER_TEST_PG``'s server, dropped afterwards):

- ``plain jobs``: one job per event (``Dispatcher.dispatch``), the baseline.
- ``into batches``: a trigger with ``batch: {size: 500}``: the events are buffered.
- ``flush``: the buffered events flushed into jobs of 500 (``flush_buffers``).
- ``debounced``: ``debounce`` keyed over 100 customers: buffered, then flushed.

``--chaos``: ``headwater up`` with a batched webhook (size 7, window 100 ms), killed with
SIGKILL ``--rounds`` times while a sender posts ``--events`` events (retrying what was
not acknowledged, redelivering some); checks that every event is in exactly one job.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import create_pg_database, drop_pg_database

from headwater.dispatch.dispatcher import Dispatcher, Event
from headwater.store.sql import open_store
from headwater.workspace.models import Workspace

WS = Workspace.model_validate(
    {
        "name": "bench",
        "actions": {"ok": {"type": "script", "script": "true"}},
        "tasks": {"t": {"flow": {"a": {"action": "ok"}}}},
        "triggers": {
            name: {"type": "event_source", "task": "t", "target_task": "t", **extra}
            for name, extra in {
                "plain": {},
                "batched": {"batch": {"size": 500, "window": "1h"}},
                "debounced": {
                    "debounce": {"key": "{{ input.customer }}", "period": "1h", "max_wait": "2h"}
                },
            }.items()
        },
    }
)


def events(trigger: str, n: int, run: str) -> list[Event]:
    return [
        Event(
            "t",
            {"seq": i, "customer": f"c{i % 100}", "amount": i * 3},
            "event_source",
            f"bench/{trigger}",
            f"{run}:{trigger}:{i}",
        )
        for i in range(n)
    ]


async def bench_db(label: str, url: str, n: int, chunk: int) -> list[tuple[str, str, float]]:
    store = await open_store(url)
    dispatcher = Dispatcher(store, lambda: WS)
    run = uuid.uuid4().hex[:8]
    rows: list[tuple[str, str, float]] = []
    try:
        for trigger in ("plain", "batched", "debounced"):
            batch = events(trigger, n, run)
            start = time.perf_counter()
            for i in range(0, n, chunk):
                await dispatcher.dispatch(batch[i : i + chunk], (f"bench/{trigger}", str(i)))
            seconds = time.perf_counter() - start
            what = {"plain": "plain jobs", "batched": "into batches", "debounced": "debounced"}
            rows.append((label, f"{what[trigger]}: events dispatched", n / seconds))
            if trigger == "plain":
                continue
            start = time.perf_counter()
            jobs = 0
            later = datetime.now(UTC) + timedelta(hours=3)
            while flushed := await store.flush_buffers(later, limit=100):
                jobs += len(flushed)
            seconds = time.perf_counter() - start
            assert await store.count_buffered(f"bench/{trigger}") == 0
            rows.append((label, f"{what[trigger]}: events flushed ({jobs} jobs)", n / seconds))
    finally:
        await store.close()
    return rows


async def throughput(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str, float]] = []
    if args.db:
        for url in args.db:
            rows += await bench_db(url.split(":", 1)[0], url, args.n, args.chunk)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows += await bench_db("sqlite", f"sqlite:///{tmp}/b.db", args.n, args.chunk)
        pg = await create_pg_database("hw_bench")
        try:
            rows += await bench_db("postgresql", pg, args.n, args.chunk)
        finally:
            await drop_pg_database(pg)
    print(f"\n{args.n} events in chunks of {args.chunk}\n")
    print("| store | what | events/s |\n|---|---|---:|")
    for label, what, rate in rows:
        print(f"| {label} | {what} | {rate:,.0f} |")


CHAOS_WORKSPACE = """\
actions:
  noop: {type: script, script: "true"}
tasks:
  collect:
    input:
      n: {type: integer, required: true}
    flow:
      run: {action: noop}
triggers:
  hook:
    type: webhook
    task: collect
    batch: {size: 7, window: 100ms}
"""


def chaos(args: argparse.Namespace) -> None:
    import httpx
    from tests.e2e.procs import Up, eventually, up_jobs

    def post(up: Up, n: int) -> bool:
        try:
            r = up.client.post("/hooks/hook", json={"n": n}, headers={"Idempotency-Key": f"e{n}"})
        except httpx.HTTPError:
            return False
        return r.status_code in (200, 202)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = root / "ws.yaml"
        ws.write_text(textwrap.dedent(CHAOS_WORKSPACE))
        url = args.db[0] if args.db else f"sqlite:///{root}/hw.db"
        kills = sorted(random.sample(range(1, args.events), args.rounds))
        up = Up(ws, root, url)
        unacked: list[int] = []
        started = time.perf_counter()
        try:
            for n in range(args.events):
                if kills and n == kills[0]:
                    kills.pop(0)
                    up.kill()
                    up = Up(ws, root, url)
                    unacked = [m for m in unacked if not post(up, m)]
                if not post(up, n):
                    unacked.append(n)
            for n in unacked:
                assert post(up, n), n
            for n in random.sample(range(args.events), args.events // 10):
                assert post(up, n)

            def gathered() -> list[int] | None:
                jobs = up_jobs(up, task="collect")
                found = [e["n"] for j in jobs for e in j["input"]["events"]]
                return found if len(set(found)) == args.events else None

            found = eventually(gathered, timeout=120, what="every event in a job")
            lost = set(range(args.events)) - set(found)
            repeated = len(found) - len(set(found))
            print(
                f"{args.events} events, {args.rounds} kill -9, "
                f"{time.perf_counter() - started:.1f}s: lost {len(lost)}, repeated {repeated}"
            )
            assert not lost and not repeated
        finally:
            up.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", help="store URL (repeatable)")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    if args.chaos:
        chaos(args)
    else:
        asyncio.run(throughput(args))


if __name__ == "__main__":
    main()
