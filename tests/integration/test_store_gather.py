"""The debounce/batch part of the Store contract (SQLite, PostgreSQL, in memory): events are
buffered per trigger and key, a due buffer becomes one job holding them in arrival order,
a redelivered event is not gathered twice, and flushes never take an event twice, also
with two stores flushing while a third buffers."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

from headwater.core.gather import BufferedEvent, BufferOutcome, GatherKind, GatherRule
from headwater.store import JobFilter, JobStatus, NewJob, Store
from headwater.store.sql import open_store

DEBOUNCE = GatherRule(GatherKind.DEBOUNCE, wait=5.0, max_wait=60.0)
LATER = timedelta(minutes=5)


def batch(size: int, window: float = 2.0) -> GatherRule:
    return GatherRule(GatherKind.BATCH, wait=window, size=size)


def event(rule: GatherRule, n: int, key: str = "k", dedup: bool = True) -> BufferedEvent:
    job = NewJob(
        "ws",
        "t",
        {"n": n},
        "webhook",
        source_id="ws/hook",
        dedup_key=f"d{n}" if dedup else None,
    )
    return BufferedEvent(rule, key, job)


async def gathered_jobs(store: Store) -> list[list[int]]:
    jobs = await store.list_jobs(JobFilter(source_id="ws/hook", limit=1000))
    return [[e["n"] for e in j.input["events"]] for j in sorted(jobs, key=lambda j: j.id)]


async def test_a_debounced_key_becomes_one_job_with_every_event(store: Store) -> None:
    first = await store.buffer_events([event(DEBOUNCE, 1), event(DEBOUNCE, 2)])
    assert all(o.buffered for o in first)
    await store.buffer_events([event(DEBOUNCE, 3), event(DEBOUNCE, 4, key="other")])
    now = datetime.now(UTC)
    assert await store.flush_buffers(now) == []  # quiet for less than the period
    assert await store.count_buffered("ws/hook") == 4
    due = await store.next_buffer_due()
    assert due is not None and now < due <= now + timedelta(seconds=6)
    flushed = await store.flush_buffers(now + LATER)
    assert sorted(f.events for f in flushed) == [1, 3]
    assert await gathered_jobs(store) in ([[1, 2, 3], [4]], [[4], [1, 2, 3]])
    (job,) = [j for j in await store.list_jobs(JobFilter()) if j.input["key"] == "k"]
    assert job.task == "t" and job.source_type == "webhook" and job.workspace == "ws"
    assert await store.flush_buffers(now + 2 * LATER) == []  # nothing is flushed twice
    assert await store.count_buffered("ws/hook") == 0
    assert await store.next_buffer_due() is None


async def test_max_wait_bounds_a_key_that_never_goes_quiet(store: Store) -> None:
    rule = GatherRule(GatherKind.DEBOUNCE, wait=60.0, max_wait=0.2)
    await store.buffer_events([event(rule, 1)])
    due = await store.next_buffer_due()
    assert due is not None
    await store.buffer_events([event(rule, 2)])  # a later event cannot push past max_wait
    assert await store.next_buffer_due() == due
    (flushed,) = await store.flush_buffers(due)
    assert flushed.events == 2


async def test_a_batch_takes_size_events_and_the_rest_waits_for_its_window(store: Store) -> None:
    await store.buffer_events([event(batch(3), n) for n in range(7)])
    now = datetime.now(UTC)
    assert [f.events for f in await store.flush_buffers(now)] == [3]  # full: due at once
    assert [f.events for f in await store.flush_buffers(now)] == [3]
    assert await store.flush_buffers(now) == []  # one left: it waits for the window
    assert [f.events for f in await store.flush_buffers(now + LATER)] == [1]
    assert await gathered_jobs(store) == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_redelivered_event_is_not_gathered_twice(store: Store) -> None:
    await store.buffer_events([event(batch(10), 1), event(batch(10), 2)])
    again = await store.buffer_events([event(batch(10), 2), event(batch(10), 3)])
    assert [o.buffered for o in again] == [False, True]
    assert again[0].job_id is None  # still buffered
    inside = await store.buffer_events([event(batch(10), 4), event(batch(10), 4)])
    assert [o.buffered for o in inside] == [True, False]
    (flushed,) = await store.flush_buffers(datetime.now(UTC) + LATER)
    after = await store.buffer_events([event(batch(10), 1), event(batch(10, 1), 9, dedup=False)])
    assert after[0] == BufferOutcome(False, flushed.job_id)  # answered with its job
    assert after[1].buffered  # no dedup key: nothing to know it by
    assert await gathered_jobs(store) == [[1, 2, 3, 4]]


async def test_the_cursor_commits_with_the_buffered_events(store: Store) -> None:
    await store.buffer_events([event(batch(5), 1)], ("ws/hook", "c-1"))
    cursor = await store.get_cursor("ws/hook")
    assert cursor is not None and cursor.cursor == "c-1"
    await store.buffer_events([], ("ws/hook", "c-2"))
    cursor = await store.get_cursor("ws/hook")
    assert cursor is not None and cursor.cursor == "c-2"


async def test_two_stores_flushing_while_another_buffers_take_each_event_once(
    db_url: str,
) -> None:
    """Three processes' stores on one database: one buffers 180 events over 6 keys while
    two flush as fast as they can; every event ends in exactly one job."""
    stores = [await open_store(db_url) for _ in range(3)]
    try:
        writer, *flushers = stores
        rule = batch(7, window=0.01)
        done = asyncio.Event()

        async def produce() -> None:
            for start in range(0, 180, 15):
                await writer.buffer_events(
                    [event(rule, n, key=f"k{n % 6}") for n in range(start, start + 15)]
                )
            done.set()

        async def flush(store: Store) -> None:
            while not done.is_set():
                await store.flush_buffers(datetime.now(UTC) + LATER, limit=4)
                await asyncio.sleep(0)

        await asyncio.gather(produce(), *(flush(s) for s in flushers))
        while await writer.flush_buffers(datetime.now(UTC) + LATER):
            pass
        jobs = await gathered_jobs(writer)
        seen = sorted(n for job in jobs for n in job)
        assert seen == list(range(180))
        assert all(len(job) <= 7 for job in jobs)
        for job in jobs:  # in arrival order, one key per job
            assert job == sorted(job) and len({n % 6 for n in job}) == 1
    finally:
        for s in stores:
            await s.close()


async def test_a_pruned_job_forgets_its_events(tmp_path: os.PathLike[str]) -> None:
    """A flushed event is remembered while its job exists (ON DELETE CASCADE)."""
    store = await open_store(f"sqlite:///{os.fspath(tmp_path)}/h.db")
    try:
        await store.buffer_events([event(batch(1), 1)])
        (flushed,) = await store.flush_buffers(datetime.now(UTC))
        (claimed,) = await store.claim_jobs("w", ["script"], 1)
        await store.finish_job(claimed.id, "w", JobStatus.COMPLETED)
        counts = await store.prune_jobs(JobStatus.COMPLETED, datetime.now(UTC) + LATER, 10)
        assert counts.jobs == 1 and flushed.job_id == claimed.id
        (again,) = await store.buffer_events([event(batch(1), 1)])
        assert again.buffered
    finally:
        await store.close()
