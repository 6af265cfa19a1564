"""The PostgreSQL claim with flow limits (``headwater_claim_flow``) where claimers meet:
a key's jobs start only from its head, whoever holds the head."""

from __future__ import annotations

import asyncpg

from headwater.store.base import ConcurrencyStrategy, JobFlow, NewJob
from headwater.store.sql import open_store


async def test_a_key_whose_head_another_claimer_holds_waits_for_it(pg_url: str) -> None:
    # Another claimer holds the head of key k (its window's row lock, mid-claim). This
    # claim skips that row and meets k's second job: starting it would break k's order
    # (and, with the head started too, its limit), so k is busy for this claim.
    store = await open_store(pg_url)
    flow = JobFlow(
        concurrency_key="ws/t:k",
        concurrency_limit=1,
        concurrency_strategy=ConcurrencyStrategy.QUEUE,
    )
    jobs = [
        NewJob(workspace="ws", task="t", input={"n": i}, source_type="api", flow=flow)
        for i in range(2)
    ]
    other = await asyncpg.connect(pg_url)
    try:
        head, second = [o.id for o in await store.insert_jobs(jobs)]
        async with other.transaction():
            await other.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", head)
            assert await store.claim_jobs("w", ["script"], 5) == []
        assert [j.id for j in await store.claim_jobs("w", ["script"], 5)] == [head]
        assert await store.claim_jobs("w", ["script"], 5) == []  # limit 1: second waits
        got = await store.get_job(second)
        assert got is not None and got.started_at is None
    finally:
        await other.close()
        await store.close()
