"""Hand-off (store.handoff): on PostgreSQL a job inserted while this process's worker is
idle is written as claimed by it and started without a claim; everything a claim would
not have taken at once is inserted pending, as before. The worker-level test runs on
every SQL store: the job runs the same either way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from headwater.node import Node, NodeSettings
from headwater.store import Channel, JobRecord, JobStatus, NewJob
from headwater.store.base import JobFlow, PauseKind
from headwater.store.ids import tag_signature
from headwater.store.sql import SqlStore, open_store
from headwater.worker.worker import WorkerSettings
from headwater.workspace.secret_refs import REFERENCE_PREFIX
from tests.integration.test_engine import start_node
from tests.polling import eventually

SIGNATURE = tag_signature(frozenset({"shell"}))


def job(task: str = "t", **kw: object) -> NewJob:
    kw.setdefault("workspace", "ws")
    kw.setdefault("input", {"n": 1, "deep": {"ü": [1, 2.5, None]}})
    kw.setdefault("source_type", "api")
    kw.setdefault("tags", frozenset({"shell"}))
    return NewJob(task=task, **kw)  # type: ignore[arg-type]


class Slots:
    """An idle worker with ``free`` slots that claims ``SIGNATURE``."""

    def __init__(self, free: int) -> None:
        self.id = "w-local"
        self.free = free
        self.reserved = 0
        self.delivered: list[JobRecord] = []
        self.asked: list[list[str | None]] = []

    def reserve(self, signatures: Sequence[str | None]) -> list[int]:
        self.asked.append(list(signatures))
        picked = [i for i, s in enumerate(signatures) if s == SIGNATURE][: self.free]
        self.reserved += len(picked)
        return picked

    def deliver(self, jobs: Sequence[JobRecord], reserved: int) -> None:
        self.reserved -= reserved
        self.delivered += jobs


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(pg_url)
    try:
        yield store
    finally:
        await store.close()


async def test_an_idle_workers_job_is_inserted_claimed_and_handed_over(
    pg_store: SqlStore,
) -> None:
    slots = Slots(free=2)
    pg_store.set_local_slots(slots)
    outcomes = await pg_store.insert_jobs([job(dedup_key="a"), job(), job()])
    assert all(o.created for o in outcomes)
    assert slots.reserved == 0  # every reservation ended
    assert [j.id for j in slots.delivered] == [o.id for o in outcomes[:2]]
    for handed in slots.delivered:
        stored = await pg_store.get_job(handed.id)
        assert stored is not None
        # Exactly what a claim returns: running, this worker's, first attempt.
        assert handed == replace(stored, steps=())
        assert stored.status is JobStatus.RUNNING and stored.worker_id == "w-local"
        assert stored.attempt == 1 and stored.started_at == stored.created_at
    third = await pg_store.get_job(outcomes[2].id)
    assert third is not None and third.status is JobStatus.PENDING
    # The one left pending is claimed as usual; the handed ones are not claimed again.
    claimed = await pg_store.claim_jobs("w-other", [SIGNATURE], 10)
    assert [j.id for j in claimed] == [outcomes[2].id]


async def test_only_jobs_a_claim_would_take_at_once_are_handed(pg_store: SqlStore) -> None:
    await pg_store.set_paused(PauseKind.TASK, "paused", True)
    slots = Slots(free=10)
    pg_store.set_local_slots(slots)
    first = await pg_store.insert_jobs([job(dedup_key="k")])
    keyed = job(flow=JobFlow(concurrency_key="ws/t/x"))
    other_tags = job(tags=frozenset({"gpu"}))
    # A sealed secret reference is filled in by the worker's claim (SecretGuard).
    sealed = job(input={"token": f"{REFERENCE_PREFIX}abc⟧"})
    outcomes = await pg_store.insert_jobs(
        [job("paused"), keyed, other_tags, sealed, job(dedup_key="k")]
    )
    assert slots.asked[-1][1] is None and slots.asked[-1][3] is None  # never offered
    assert slots.reserved == 0
    assert [j.id for j in slots.delivered] == [first[0].id]
    assert outcomes[4].id == first[0].id and not outcomes[4].created  # the duplicate
    for outcome in outcomes[:4]:
        stored = await pg_store.get_job(outcome.id)
        assert stored is not None and stored.status is JobStatus.PENDING
        assert stored.worker_id is None and stored.attempt == 0


async def test_handed_jobs_are_not_announced_and_pending_ones_are(pg_store: SqlStore) -> None:
    await pg_store.wait_listening(5)
    slots = Slots(free=1)
    pg_store.set_local_slots(slots)
    with pg_store.subscribe(Channel.JOBS) as sub:
        await sub.wait(0.2)  # the listener's "*" on connect
        await pg_store.insert_jobs([job()])
        assert await sub.wait(0.3) == []
        slots.free = 0  # busy now: its job waits, announced
        await pg_store.insert_jobs([job(), job(tags=frozenset({"gpu"}))])
        seen: list[str] = []
        async with asyncio.timeout(5):
            while len(seen) < 2:
                seen += await sub.wait(5)
    gpu = tag_signature(frozenset({"gpu"}))
    assert sorted(seen) == sorted([gpu, SIGNATURE])


async def test_a_handed_job_of_a_worker_that_died_is_requeued(pg_store: SqlStore) -> None:
    slots = Slots(free=1)
    pg_store.set_local_slots(slots)
    await pg_store.register_worker(slots.id, "host:1", frozenset({"shell"}))
    (outcome,) = await pg_store.insert_jobs([job()])
    assert [j.id for j in slots.delivered] == [outcome.id]
    await asyncio.sleep(0.3)
    recovered = await pg_store.recover_stale_jobs(0.2)
    assert [(r.id, r.requeued) for r in recovered] == [(outcome.id, True)]
    pg_store.set_local_slots(None)
    (again,) = await pg_store.claim_jobs("w-2", [SIGNATURE], 1)
    assert again.id == outcome.id and again.attempt == 2


async def test_a_job_submitted_to_an_idle_node_runs_once(tmp_path: Path, db_url: str) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          ok: { type: script, script: "echo 'OUTPUT: {\\"done\\": true}'" }
        tasks:
          t:
            flow:
              s: { action: ok }
        """,
    )
    settings = WorkerSettings(concurrency=2, safety_wakeup=60.0)  # no claim by the clock
    worker_node = Node(node.holder.path, NodeSettings(db_url=db_url, worker=settings))
    await worker_node.start()
    claims = 0
    claim = worker_node.store.claim_jobs

    async def counted(worker_id: str, signatures: Sequence[str], limit: int) -> list[JobRecord]:
        nonlocal claims
        claims += 1
        return await claim(worker_id, signatures, limit)

    worker_node.store.claim_jobs = counted  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    run = asyncio.create_task(worker_node.run_worker(stop))
    try:
        await eventually(lambda: claims >= 1)  # the first claim found the queue empty
        if isinstance(worker_node.store, SqlStore):
            await worker_node.store.wait_listening(10)  # its "*" on connect: one more claim
        await asyncio.sleep(0.3)
        before = claims
        ids = []
        for _ in range(3):  # one at a time: the worker is idle for each
            job_id = (await worker_node.submit("t", {})).id
            ids.append(job_id)

            async def done(job_id: str = job_id) -> bool:
                found = await worker_node.store.get_job(job_id)
                return found is not None and found.status is JobStatus.COMPLETED

            await eventually(done, 30)
        for job_id in ids:
            found = await worker_node.store.get_job(job_id)
            assert (
                found is not None and found.attempt == 1 and found.output == {"s": {"done": True}}
            )
        if db_url.startswith("postgresql"):
            assert claims - before <= 1  # handed over, not claimed (3 claims without)
    finally:
        stop.set()
        await run
        await worker_node.close()
        await node.close()
