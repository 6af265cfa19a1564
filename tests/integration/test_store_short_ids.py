"""``Store.find_job_ids``: short ids typed by a person, on SQLite and PostgreSQL."""

from __future__ import annotations

from headwater.store.sql import SqlStore
from tests.integration.test_store import insert, job


async def test_find_job_ids_by_prefix_or_suffix(store: SqlStore) -> None:
    a, b, c = "aaaa1111-x-0001", "aaaa1111-x-0002", "bbbb2222-y-0002"
    await insert(store, job(id=a), job(id=b), job(id=c))

    assert sorted(await store.find_job_ids("aaaa1111")) == [a, b]  # a shared prefix
    assert sorted(await store.find_job_ids("-0002")) == [b, c]  # a shared suffix
    assert await store.find_job_ids("x-0001") == [a]
    assert await store.find_job_ids("bbbb2222-y") == [c]
    assert await store.find_job_ids("1111-x") == []  # the middle does not count
    assert len(await store.find_job_ids("aaaa", limit=1)) == 1


async def test_find_job_ids_treats_like_wildcards_literally(store: SqlStore) -> None:
    await insert(store, job(id="abc-0001"))
    assert await store.find_job_ids("%") == []
    assert await store.find_job_ids("abc_") == []
    assert await store.find_job_ids("abc-") == ["abc-0001"]
