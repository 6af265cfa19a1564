"""``headwater.testing.InMemoryStore`` as a user's test meets it (the full store contract
runs on it in tests/integration/test_store*.py)."""

from __future__ import annotations

import math

import pytest

import headwater.testing
from headwater.errors import JsonValueError
from headwater.store import Channel, JobStatus, NewJob, Store
from headwater.testing import InMemoryStore


def test_the_module_exports_the_store_and_it_is_a_store() -> None:
    assert headwater.testing.__all__ == ["InMemoryStore"]
    assert isinstance(InMemoryStore(), Store)


async def test_the_readme_example() -> None:
    store = InMemoryStore()
    (outcome,) = await store.insert_jobs([NewJob("shop", "ship", {"order": 7}, "api")])
    with store.subscribe(Channel.FINISHED) as finished:
        [job] = await store.claim_jobs("my-worker", ["script"], 10)
        assert await store.finish_job(job.id, "my-worker", JobStatus.COMPLETED, {"ok": 1})
        assert outcome.id in await finished.wait(timeout=1)
    got = await store.get_job(outcome.id)
    assert got is not None and (got.status, got.output) == (JobStatus.COMPLETED, {"ok": 1})


async def test_values_are_copied_like_a_database_round_trip() -> None:
    store = InMemoryStore()
    payload = {"items": [1, 2]}
    (outcome,) = await store.insert_jobs([NewJob("ws", "t", payload, "api")])
    payload["items"].append(3)  # the caller changes its object afterwards
    got = await store.get_job(outcome.id)
    assert got is not None and got.input == {"items": [1, 2]}


async def test_a_value_no_database_keeps_fails_the_whole_batch() -> None:
    store = InMemoryStore()
    good = NewJob("ws", "t", {"n": 1}, "api")
    with pytest.raises(JsonValueError):
        await store.insert_jobs([good, NewJob("ws", "t", {"n": math.nan}, "api")])
    assert await store.count_jobs_by_status() == {s.value: 0 for s in JobStatus}
