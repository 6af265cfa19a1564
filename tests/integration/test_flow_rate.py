"""Rate limits keep their pace with claimers that wait for wake-ups, as workers do: a
full window frees a start at a known time and only the store's timer announces it (a
lost wake-up leaves the claimers asleep until their safety timeout, and the second
loses starts). The long version (30 s): ``python bench/flow_control.py --only rate``."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import timedelta

from headwater.store import Channel, JobStatus, NewJob, Store
from headwater.store.base import JobFlow, JobRecord
from headwater.store.notify import Subscription
from headwater.store.sql import SqlStore, open_store
from tests.integration.test_store import listening, payloads_until

SAFETY_WAIT = 1.0  # a claimer that missed its wake-up sleeps this long


def rated(n: int, key: str, limit: int, per: float) -> list[NewJob]:
    flow = JobFlow(rate_key=key, rate_limit=limit, rate_per=per)
    return [
        NewJob(workspace="ws", task="t", input={"n": i}, source_type="api", flow=flow)
        for i in range(n)
    ]


async def test_a_claim_that_fills_a_window_sets_its_wake_up(store: Store) -> None:
    # The claim's room runs out with the window's last start: no job was refused, yet
    # the window is full, and the claimers must be woken when it slides.
    await store.insert_jobs(rated(3, "ws/t:fill", 2, 0.3))
    with store.subscribe(Channel.JOBS) as sub:
        await listening(store, sub)
        await sub.wait(0)  # the inserts' wake-ups
        assert len(await store.claim_jobs("w", ["script"], 2)) == 2
        t = time.monotonic()
        assert "*" in await payloads_until(sub, lambda seen: "*" in seen)
        assert 0.25 < time.monotonic() - t < 1.0
        assert len(await store.claim_jobs("w", ["script"], 2)) == 1


async def test_rate_limit_paces_claimers_that_wait_for_wake_ups(pg_url: str) -> None:
    """100/s over 3 s on PostgreSQL, three stores (as three servers) whose claimers sleep
    between claims until a wake-up: every aligned second after the first start holds
    100 ± 1 starts, and no 1 s window more than 100."""
    per_second, seconds = 100, 3.0
    stores = [await open_store(pg_url) for _ in range(3)]
    try:
        await stores[0].insert_jobs(rated(int(per_second * seconds) + 200, "ws/t:pace", 100, 1))
        starts: list[JobRecord] = []
        subs = [s.subscribe(Channel.JOBS) for s in stores]
        for store, sub in zip(stores, subs, strict=True):
            await listening(store, sub)
        stop = time.monotonic() + seconds + 0.3

        async def claimer(store: SqlStore, sub: Subscription, name: str) -> None:
            while time.monotonic() < stop:
                got = await store.claim_jobs(name, ["script"], 16)
                starts.extend(got)
                if got:
                    await store.finish_jobs(
                        [(j.id, name, JobStatus.COMPLETED, None, None) for j in got]
                    )
                if len(got) < 16:
                    await sub.wait(min(SAFETY_WAIT, max(0.0, stop - time.monotonic())))

        await asyncio.gather(
            *(claimer(s, sub, f"w{i}") for i, (s, sub) in enumerate(zip(stores, subs, strict=True)))
        )
        for sub in subs:
            sub.close()
    finally:
        for s in stores:
            await s.close()
    times = sorted(j.started_at for j in starts if j.started_at is not None)
    lo = 0
    for hi, t in enumerate(times):  # sliding: at most 100 in any 1 s
        while t - times[lo] >= timedelta(seconds=1):
            lo += 1
        assert hi - lo + 1 <= per_second, f"{hi - lo + 1} starts within 1 s of {t}"
    buckets: dict[int, int] = defaultdict(int)
    for t in times:
        buckets[int((t - times[0]).total_seconds())] += 1
    full = [buckets[k] for k in range(int(seconds))]
    assert all(per_second - 1 <= n <= per_second for n in full), full


async def test_a_window_counts_the_starts_of_other_stores_in_between(db_url: str) -> None:
    # Claims take turns across three stores (as three processes on one database): each
    # store's next claim must count the starts the others made since its last one
    # (SQLite keeps its windows between claims while no other connection committed).
    stores = [await open_store(db_url) for _ in range(3)]
    try:
        await stores[0].insert_jobs(rated(60, "ws/t:turns", 7, 3600.0))
        taken = [
            len(await store.claim_jobs(f"w{i}", ["script"], 4))
            for _ in range(3)
            for i, store in enumerate(stores)
        ]
        assert sum(taken) == 7, taken
    finally:
        for s in stores:
            await s.close()
