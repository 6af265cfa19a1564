"""What the web UI reads, through the API over each store: the Jobs list's filters and
id search, keyset pages while jobs keep arriving, and ``/api/overview``."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from headwater.server.app import create_app
from headwater.store import JobStatus, NewJob, Store, listing
from headwater.store.sql import SqlStore
from headwater.store.tables import jobs
from headwater.testing import InMemoryStore
from tests.fakes import FakeRuntime

STATUSES = {"pending", "running", "completed", "failed", "cancelled"}


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(FakeRuntime(store=store))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hw") as c:
        yield c


def new(task: str = "t", **kw: Any) -> NewJob:
    kw.setdefault("source_type", "api")
    return NewJob(workspace="ws", task=task, input={}, **kw)


async def insert(store: Store, *batch: NewJob) -> list[str]:
    return [o.id for o in await store.insert_jobs(list(batch))]


async def set_times(store: Store, job_id: str, **times: datetime) -> None:
    """Move a job's created/started/finished times (the store stamps them itself)."""
    if isinstance(store, SqlStore):
        async with store.write_engine.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(**times))
    else:
        assert isinstance(store, InMemoryStore)
        store.jobs[job_id] = dataclasses.replace(store.jobs[job_id], **times)


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    resp = await client.get("/api/jobs", params=params)
    assert resp.status_code == 200, resp.text
    return [j["id"] for j in resp.json()["jobs"]]


async def test_jobs_list_filters_the_ui_offers(store: Store, client: httpx.AsyncClient) -> None:
    a, b, c, d = await insert(
        store,
        new("alpha", source_type="webhook", source_id="ws/hook"),
        new("beta", source_type="scheduler", source_id="ws/cron"),
        new("alpha", source_type="event_source", source_id="ws/hook"),
        new("gamma", source_type="webhook"),
    )
    [own] = await insert(store, new("gamma", id="Own-Id-42"))
    now = datetime.now(UTC)
    for i, job_id in enumerate((a, b, c, d, own)):  # one hour apart, a the oldest
        await set_times(store, job_id, created_at=now - timedelta(hours=5 - i))
    [claimed] = await store.claim_jobs("w", ["script"], 1)
    assert claimed.id == a
    await store.finish_job(a, "w", JobStatus.FAILED, error="boom")

    # The SQL stores read finished and pending jobs of a source type from two indexes.
    assert await listed(client, source_type="webhook") == [d, a]
    assert await listed(client, source_type="webhook", limit=1) == [d]
    assert await listed(client, source_type="webhook", limit=1, before=d) == [a]
    assert await listed(client, source_type="webhook", status="failed") == [a]
    assert await listed(client, source_type="webhook", status="pending") == [d]
    assert await listed(client, source_type="nothing-has-this") == []
    assert await listed(client, status="pending", task="alpha") == [c]
    assert await listed(client, status="pending", before=c) == [b]
    assert await listed(client, source_id="ws/hook") == [c, a]
    assert await listed(client, task="alpha", source_id="ws/hook", status="pending") == [c]
    window = {
        "created_after": (now - timedelta(hours=4)).isoformat(),  # at or after: b
        "created_before": (now - timedelta(hours=2)).isoformat(),  # strictly before: not d
    }
    assert await listed(client, **window) == [c, b]
    # Search by id: a prefix of a UUIDv7 (the time part, and longer), pasted in upper case.
    assert await listed(client, id_prefix=c[:24]) == [c]
    assert await listed(client, id_prefix=c[:24].upper()) == [c]
    # A prefix many jobs share (the time part): in id order, paged on the id.
    shared = [i for i in sorted((a, b, c, d), reverse=True) if i.startswith(a[:8])]
    paged: list[str] = []
    cursor = None
    while True:
        params = {"id_prefix": a[:8], "limit": 1, **({"before": cursor} if cursor else {})}
        body = (await client.get("/api/jobs", params=params)).json()
        paged += [j["id"] for j in body["jobs"]]
        if (cursor := body["next_before"]) is None:
            break
    assert paged == shared and a in shared
    assert await listed(client, id_prefix="Own-Id") == [own]  # an id a client chose: as typed
    assert await listed(client, id_prefix="own-id") == []
    assert await listed(client, id_prefix="ffffffff-ffff") == []
    assert await listed(client, id_prefix=c[:24], task="beta") == []
    bad = await client.get("/api/jobs", params={"id_prefix": ""})
    assert bad.status_code == 422


async def test_keyset_pages_skip_and_repeat_nothing_while_jobs_arrive(
    store: Store, client: httpx.AsyncClient
) -> None:
    # Batches share a created_at (one transaction): pages must split them by id.
    for size in (7, 1, 12, 5):
        await insert(store, *(new(f"t{i % 3}") for i in range(size)))
    rng = random.Random(18)
    for round_ in range(3):
        task = None if round_ == 0 else f"t{round_}"
        params: dict[str, Any] = {"task": task} if task else {}
        before_walk = await listed(client, limit=1000, **params)
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page_params = {**params, "limit": rng.randint(1, 6)}
            if cursor is not None:
                page_params["before"] = cursor
            body = (await client.get("/api/jobs", params=page_params)).json()
            seen += [j["id"] for j in body["jobs"]]
            # New jobs (some of the filtered task) arrive between pages.
            await insert(store, *(new(f"t{rng.randrange(3)}") for _ in range(rng.randint(0, 3))))
            cursor = body["next_before"]
            if cursor is None:
                break
        assert seen == before_walk  # every job once, newest first, none of the new ones


async def test_overview_counts_durations_and_shape(store: Store, client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    runs = {"slow": [100, 200, 1000], "fast": [50]}
    ids = await insert(store, *(new(task) for task, times in runs.items() for _ in times))
    [pending, old] = await insert(store, new("slow"), new("slow"))
    claimed = await store.claim_jobs("w", ["script"], 10)
    assert {j.id for j in claimed} == {*ids, pending, old}
    durations = [ms for times in runs.values() for ms in times]
    for job_id, ms in zip(ids, durations, strict=True):
        failed = ms == 50
        status = JobStatus.FAILED if failed else JobStatus.COMPLETED
        await store.finish_job(job_id, "w", status, error="boom" if failed else None)
        started = now - timedelta(minutes=10)
        await set_times(
            store, job_id, started_at=started, finished_at=started + timedelta(milliseconds=ms)
        )
    # Outside the window: not counted, its (long) run not among the durations.
    await store.finish_job(old, "w", JobStatus.COMPLETED)
    await set_times(
        store, old, created_at=now - timedelta(hours=3), started_at=now - timedelta(hours=3)
    )

    resp = await client.get("/api/overview", params={"window": "1h"})

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["window_secs"] == 3600 and body["bucket_secs"] == 60
    buckets = body["buckets"]
    assert len(buckets) in (60, 61)
    assert buckets[0]["start"] <= body["since"] and buckets[-1]["start"] <= body["until"]
    assert all(set(b["counts"]) == STATUSES for b in buckets)
    assert body["totals"] == {
        "pending": 0,
        "running": 1,
        "completed": 3,
        "failed": 1,
        "cancelled": 0,
    }
    summed = {s: sum(b["counts"][s] for b in buckets) for s in STATUSES}
    assert summed == body["totals"]
    assert body["slowest_tasks"] == [
        {"task": "slow", "runs": 3, "failed": 0, "p50_ms": 200.0, "p95_ms": 1000.0,
         "max_ms": 1000.0},
        {"task": "fast", "runs": 1, "failed": 1, "p50_ms": 50.0, "p95_ms": 50.0,
         "max_ms": 50.0},
    ]  # fmt: skip
    assert body["trigger_lag"] == []  # this runtime reports no trigger states
    day = (await client.get("/api/overview", params={"window": "24h"})).json()
    assert day["bucket_secs"] == 360 and day["totals"]["completed"] == 4
    for bad in ("2d", "0m", "1 hour", "30s"):
        assert (await client.get("/api/overview", params={"window": bad})).status_code == 422


async def test_a_long_queue_lists_the_same_jobs(
    store: Store, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past LONG_QUEUE pending jobs SQLite walks the jobs instead of sorting the queue.
    ids = await insert(
        store, *(new(f"t{i % 2}", source_type=("api", "webhook")[i % 2]) for i in range(6))
    )
    [first] = await store.claim_jobs("w", ["script"], 1)
    await store.finish_job(first.id, "w", JobStatus.COMPLETED)
    queries = [
        {"status": "pending"},
        {"status": "pending", "task": "t1", "limit": 2},
        {"source_type": "api"},
        {"source_type": "webhook", "before": ids[5]},
    ]
    short = [await listed(client, **params) for params in queries]
    monkeypatch.setattr(listing, "LONG_QUEUE", 2)
    assert [await listed(client, **params) for params in queries] == short
    assert short[0] == ids[:0:-1] and short[2] == [ids[4], ids[2], ids[0]]
