"""Leases: one holder at a time, fencing tokens that grow with each new holder."""

from __future__ import annotations

import asyncio

from headwater.store.base import Store
from headwater.store.sql import open_store


async def test_a_held_lease_is_refused_to_others_and_renewed_for_its_owner(store: Store) -> None:
    first = await store.acquire_lease("trigger:a", "node-1", 30)
    assert first is not None and first.token == 1
    assert await store.acquire_lease("trigger:a", "node-2", 30) is None
    again = await store.acquire_lease("trigger:a", "node-1", 30)
    assert again is not None and again.token == 1  # same holder: same token
    assert again.expires_at >= first.expires_at
    assert await store.renew_lease("trigger:a", "node-1", 1, 30)
    assert not await store.renew_lease("trigger:a", "node-2", 1, 30)
    assert await store.lease_is_current("trigger:a", 1)


async def test_an_expired_lease_passes_to_the_next_owner_with_a_new_token(store: Store) -> None:
    await store.acquire_lease("trigger:a", "node-1", 0.05)
    await asyncio.sleep(0.1)
    taken = await store.acquire_lease("trigger:a", "node-2", 30)
    assert taken is not None and (taken.owner, taken.token) == ("node-2", 2)
    # The old holder cannot renew, and its token is no longer current (it is fenced off).
    assert not await store.renew_lease("trigger:a", "node-1", 1, 30)
    assert not await store.lease_is_current("trigger:a", 1)
    assert await store.lease_is_current("trigger:a", 2)


async def test_release_frees_the_lease_at_once(store: Store) -> None:
    lease = await store.acquire_lease("consumer:x", "node-1", 30)
    assert lease is not None
    await store.release_lease("consumer:x", "node-2", lease.token)  # not the owner: ignored
    assert await store.acquire_lease("consumer:x", "node-2", 30) is None
    await store.release_lease("consumer:x", "node-1", lease.token)
    taken = await store.acquire_lease("consumer:x", "node-2", 30)
    assert taken is not None and taken.token == 2
    assert [le.name for le in await store.list_leases("consumer:")] == ["consumer:x"]
    assert await store.list_leases("trigger:") == []


# Not on the in-memory store: the race is between store instances over one database, which
# one InMemoryStore (itself the database) cannot express.
async def test_racing_processes_never_both_hold_a_lease(db_url: str) -> None:
    stores = [await open_store(db_url) for _ in range(4)]
    try:
        for round_ in range(5):
            name = f"race:{round_}"
            results = await asyncio.gather(
                *(s.acquire_lease(name, f"node-{i}", 30) for i, s in enumerate(stores))
            )
            winners = [r for r in results if r is not None]
            assert len(winners) == 1, winners
            assert winners[0].token == 1
    finally:
        for s in stores:
            await s.close()
