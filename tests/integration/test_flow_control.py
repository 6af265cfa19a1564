"""Flow control in the store's claim (SQLite, PostgreSQL and the in-memory twin):
priority order, concurrency keys (queue / skip_new / cancel_running, global limits,
per-key order) and rate limits, also with several claimers at once."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import timedelta

import pytest

from headwater.store import Channel, JobStatus, NewJob, Store
from headwater.store.base import ConcurrencyStrategy, JobFlow, JobRecord, PauseKind
from headwater.store.sql import SqlStore, open_store
from tests.integration.test_store import listening, payloads_until

DONE = JobStatus.COMPLETED


def job(n: int = 0, *, priority: int = 0, flow: JobFlow | None = None, task: str = "t") -> NewJob:
    return NewJob(
        workspace="ws",
        task=task,
        input={"n": n},
        source_type="api",
        priority=priority,
        flow=flow or JobFlow(),
    )


def keyed(key: str, limit: int = 1, strategy: str = "queue") -> JobFlow:
    return JobFlow(
        concurrency_key=key,
        concurrency_limit=limit,
        concurrency_strategy=ConcurrencyStrategy(strategy),
    )


async def finish(store: Store, jobs: list[JobRecord], worker: str = "w") -> None:
    await store.finish_jobs([(j.id, worker, DONE, None, None) for j in jobs])


async def test_priority_then_oldest_first_also_in_a_batch(store: Store) -> None:
    priorities = [0, 5, 1, 5, -1, 0]
    ids = [
        o.id
        for o in await store.insert_jobs([job(i, priority=p) for i, p in enumerate(priorities)])
    ]
    order: list[str] = []
    while claimed := await store.claim_jobs("w", ["script"], 1):
        order += [j.id for j in claimed]
    expected = [ids[i] for i in sorted(range(6), key=lambda i: (-priorities[i], i))]
    assert order == expected
    # A batch claim takes the best of the whole queue, not the oldest.
    low = [o.id for o in await store.insert_jobs([job(i) for i in range(5)])]
    high = [o.id for o in await store.insert_jobs([job(i, priority=9) for i in range(2)])]
    claimed = await store.claim_jobs("w", ["script"], 3)
    assert {j.id for j in claimed} == {*high, low[0]}


async def test_concurrency_key_keeps_limit_and_order(store: Store) -> None:
    jobs = [job(i, flow=keyed(f"k{i % 4}")) for i in range(20)]
    ids = [o.id for o in await store.insert_jobs(jobs)]
    started: dict[str, list[str]] = defaultdict(list)
    rounds = 0
    while sum(len(v) for v in started.values()) < 20:
        rounds += 1
        assert rounds < 50
        claimed = await store.claim_jobs("w", ["script"], 10)
        keys = [ids.index(j.id) % 4 for j in claimed]
        assert len(keys) == len(set(keys)) == 4  # one per key, every key served
        for j in claimed:
            started[f"k{ids.index(j.id) % 4}"].append(j.id)
        assert await store.claim_jobs("w", ["script"], 10) == []  # every key is full
        await finish(store, claimed)
    for k in range(4):  # limit 1: each key's jobs ran in the order they came
        assert started[f"k{k}"] == [ids[i] for i in range(k, 20, 4)]


async def test_full_keys_do_not_starve_the_rest(store: Store) -> None:
    await store.insert_jobs([job(i, flow=keyed("busy")) for i in range(30)])
    free = [o.id for o in await store.insert_jobs([job(100 + i) for i in range(3)])]
    first = await store.claim_jobs("w", ["script"], 2)
    assert [j.input["n"] for j in first] == [0, 100]  # the busy key's head, then past it
    second = await store.claim_jobs("w", ["script"], 5)
    assert [j.id for j in second] == free[1:]  # behind 29 jobs of a full key


async def test_global_limit_and_higher_limits(store: Store) -> None:
    await store.insert_jobs([job(i, flow=keyed("ws/t", limit=3)) for i in range(10)])
    first = await store.claim_jobs("w", ["script"], 10)
    assert len(first) == 3
    assert await store.claim_jobs("w", ["script"], 10) == []
    await finish(store, first[:2])
    assert len(await store.claim_jobs("w", ["script"], 10)) == 2


async def test_skip_new_and_cancel_running(store: Store) -> None:
    flow = keyed("ws/t:acme", strategy="skip_new")
    await store.insert_jobs([job(1, flow=flow)])
    [running] = await store.claim_jobs("w", ["script"], 5)
    (second,) = await store.insert_jobs([job(2, flow=flow)])
    assert await store.claim_jobs("w", ["script"], 5) == []
    skipped = await store.get_job(second.id)
    assert skipped is not None and skipped.status is JobStatus.CANCELLED
    assert skipped.error is not None and "skip_new" in skipped.error and "acme" in skipped.error
    assert skipped.started_at is None
    await finish(store, [running])
    (third,) = await store.insert_jobs([job(3, flow=flow)])
    assert [j.id for j in await store.claim_jobs("w", ["script"], 5)] == [third.id]
    await store.finish_jobs([(third.id, "w", DONE, None, None)])

    # cancel_running: the running job is asked to stop, the new one runs after it
    flow = keyed("ws/t:beta", strategy="cancel_running")
    await store.insert_jobs([job(1, flow=flow)])
    [running] = await store.claim_jobs("w", ["script"], 5)
    (newer,) = await store.insert_jobs([job(2, flow=flow)])
    assert await store.claim_jobs("w", ["script"], 5) == []  # until the old one stopped
    old = await store.get_job(running.id)
    assert old is not None and old.cancel_requested and old.status is JobStatus.RUNNING
    assert running.id in await store.heartbeat("w")
    await store.finish_jobs([(running.id, "w", JobStatus.CANCELLED, None, "cancelled")])
    assert [j.id for j in await store.claim_jobs("w", ["script"], 5)] == [newer.id]


async def test_rate_limit_counts_starts_in_a_sliding_window(store: Store) -> None:
    rate = JobFlow(rate_key="ws/t", rate_limit=5, rate_per=3600.0)
    await store.insert_jobs([job(i, flow=rate) for i in range(20)])
    await store.insert_jobs([job(99)])
    claimed: list[JobRecord] = []
    for _ in range(6):
        got = await store.claim_jobs("w", ["script"], 3)
        claimed += got
        await finish(store, got)  # finishing gives no start back
    assert len(claimed) == 6  # 5 rate-limited + the free one

    # a short window slides: any 3 starts of a 2-per-0.3 s key span at least 0.3 s
    rate = JobFlow(rate_key="ws/t:x", rate_limit=2, rate_per=0.3)
    await store.insert_jobs([job(i, flow=rate) for i in range(6)])
    starts = []
    async with asyncio.timeout(10):
        while len(starts) < 6:
            starts += await store.claim_jobs("w", ["script"], 10)
            await asyncio.sleep(0.02)
    times = sorted(j.started_at for j in starts if j.started_at is not None)
    for i in range(len(times) - 2):  # any 3 starts span more than the window
        assert times[i + 2] - times[i] >= timedelta(seconds=0.3)


async def _claimers(url: str, count: int) -> list[SqlStore]:
    return [await open_store(url) for _ in range(count)]


@pytest.mark.parametrize("claimers", [3])
async def test_limits_hold_across_concurrent_claimers(db_url: str, claimers: int) -> None:
    """Several stores (as on several servers) claim and finish 240 jobs over 8 keys at
    once: per key, the store's own start and finish times never overlap more than the
    limit, and limit-1 keys ran in order."""
    stores = await _claimers(db_url, claimers)
    try:
        limits = {f"k{i}": 1 if i % 2 == 0 else 2 for i in range(8)}
        batch = [job(i, flow=keyed(f"k{i % 8}", limits[f"k{i % 8}"])) for i in range(240)]
        ids = [o.id for o in await stores[0].insert_jobs(batch)]

        async def work(store: SqlStore, name: str) -> None:
            rng = random.Random(name)
            while True:
                got = await store.claim_jobs(name, ["script"], rng.randint(1, 6))
                if not got:
                    if all(j.status.is_terminal for j in await store.get_jobs(ids)):
                        return
                    await asyncio.sleep(0.005)
                    continue
                await asyncio.sleep(rng.random() * 0.01)
                await finish(store, got, name)

        async with asyncio.timeout(60):
            await asyncio.gather(*(work(s, f"w{i}") for i, s in enumerate(stores)))
        done = await stores[0].get_jobs(ids)
        assert_limits(done, ids, lambda i: f"k{i % 8}", limits)
    finally:
        for s in stores:
            await s.close()


def assert_limits(done, ids, key_of, limits) -> None:  # type: ignore[no-untyped-def]
    by_key: dict[str, list[JobRecord]] = defaultdict(list)
    for j in done:
        assert j.status is DONE and j.started_at is not None and j.finished_at is not None
        by_key[key_of(ids.index(j.id))].append(j)
    for key, runs in by_key.items():
        events = sorted(
            [(j.started_at, 1) for j in runs] + [(j.finished_at, -1) for j in runs],
            key=lambda e: (e[0], e[1]),  # a finish at the same instant comes first
        )
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        assert peak <= limits[key], f"{key}: {peak} at once, limit {limits[key]}"
        if limits[key] == 1:
            assert [j.id for j in sorted(runs, key=lambda j: j.started_at)] == sorted(
                (j.id for j in runs), key=ids.index
            )


async def test_rate_limit_exact_under_a_burst_of_claimers(db_url: str) -> None:
    stores = await _claimers(db_url, 3)
    try:
        rate = JobFlow(rate_key="ws/t:burst", rate_limit=7, rate_per=3600.0)
        await stores[0].insert_jobs([job(i, flow=rate) for i in range(60)])

        async def grab(store: SqlStore, name: str) -> int:
            total = 0
            for _ in range(10):
                total += len(await store.claim_jobs(name, ["script"], 4))
            return total

        counts = await asyncio.gather(*(grab(s, f"w{i}") for i, s in enumerate(stores)))
        assert sum(counts) == 7
    finally:
        for s in stores:
            await s.close()


async def test_claimers_are_woken_when_a_key_frees_up_or_a_window_slides(store: Store) -> None:
    with store.subscribe(Channel.JOBS) as sub:
        await listening(store, sub)
        await store.insert_jobs([job(i, flow=keyed("ws/t:k")) for i in range(2)])
        [first] = await store.claim_jobs("w", ["script"], 5)
        await sub.wait(0)  # the inserts' wake-ups
        await finish(store, [first])
        assert await payloads_until(sub, bool)  # the finish announced room for the next
        await store.claim_jobs("w", ["script"], 5)

        rate = JobFlow(rate_key="ws/t:r", rate_limit=1, rate_per=0.3)
        await store.insert_jobs([job(i, flow=rate) for i in range(2)])
        assert len(await store.claim_jobs("w", ["script"], 5)) == 1
        await asyncio.sleep(0.05)
        await sub.wait(0)
        assert await store.claim_jobs("w", ["script"], 5) == []  # the window is full
        assert "*" in await payloads_until(sub, lambda seen: "*" in seen)  # when it slides
        assert len(await store.claim_jobs("w", ["script"], 5)) == 1


async def test_a_paused_tasks_limited_jobs_wait_for_resume(store: Store) -> None:
    # The limited lane reads a key's head itself (not the fast path's picks): a paused
    # task's job at the head of a key that another task's held job shares must stay.
    rate = JobFlow(rate_key="ws/r", rate_limit=1, rate_per=3600.0)
    await store.insert_jobs([job(flow=rate)])
    await finish(store, await store.claim_jobs("w", ["script"], 1))  # r: full for an hour
    assert await store.set_paused(PauseKind.TASK, "p", True)
    keyed_p = await store.insert_jobs([job(1, flow=keyed("ws/k"), task="p")])
    rated_p = await store.insert_jobs([job(2, flow=JobFlow(rate_key="ws/r2"), task="p")])
    both = JobFlow(
        concurrency_key="ws/k", concurrency_limit=1, rate_key="ws/r", rate_limit=1, rate_per=3600.0
    )
    await store.insert_jobs([job(3, flow=both)])  # held (r is full): the lane reads ws/k
    for _ in range(2):
        assert await store.claim_jobs("w", ["script"], 5) == []
    assert await store.set_paused(PauseKind.TASK, "p", False)
    claimed = {j.id for j in await store.claim_jobs("w", ["script"], 5)}
    assert claimed == {keyed_p[0].id, rated_p[0].id}
