"""Leases: one holder at a time, fencing tokens that grow with each new holder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from headwater.store.base import Store
from headwater.store.sql import open_store


async def live_token(store: Store, name: str) -> int | None:
    """The fencing token of ``name``'s live holder, None when nobody holds it."""
    now = datetime.now(UTC)
    held = [le for le in await store.list_leases(name) if le.name == name and le.expires_at > now]
    return held[0].token if held else None


async def test_a_held_lease_is_refused_to_others_and_renewed_for_its_owner(store: Store) -> None:
    first = await store.acquire_lease("trigger:a", "node-1", 30)
    assert first is not None and first.token == 1
    assert await store.acquire_lease("trigger:a", "node-2", 30) is None
    again = await store.acquire_lease("trigger:a", "node-1", 30)
    assert again is not None and again.token == 1  # same holder: same token
    assert again.expires_at >= first.expires_at
    assert await store.renew_lease("trigger:a", "node-1", 1, 30)
    assert not await store.renew_lease("trigger:a", "node-2", 1, 30)
    assert await live_token(store, "trigger:a") == 1


async def test_an_expired_lease_passes_to_the_next_owner_with_a_new_token(store: Store) -> None:
    await store.acquire_lease("trigger:a", "node-1", 0.05)
    await asyncio.sleep(0.1)
    taken = await store.acquire_lease("trigger:a", "node-2", 30)
    assert taken is not None and (taken.owner, taken.token) == ("node-2", 2)
    # The old holder cannot renew, and its token is no longer current (it is fenced off).
    assert not await store.renew_lease("trigger:a", "node-1", 1, 30)
    assert await live_token(store, "trigger:a") == 2


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


async def test_a_stale_token_of_the_same_owner_renews_and_releases_nothing(store: Store) -> None:
    # node-1 held the lease (token 1), lost it to node-2 (token 2), then won it back
    # (token 3): a task of node-1 that still holds token 1 is fenced off like a stranger.
    await store.acquire_lease("trigger:a", "node-1", 0)  # a zero TTL is expired at once
    await store.acquire_lease("trigger:a", "node-2", 0)
    back = await store.acquire_lease("trigger:a", "node-1", 30)
    assert back is not None and back.token == 3
    assert not await store.renew_lease("trigger:a", "node-1", 1, 30)
    await store.release_lease("trigger:a", "node-1", 1)
    assert await store.acquire_lease("trigger:a", "node-2", 30) is None
    assert await store.renew_lease("trigger:a", "node-1", 3, 30)


async def test_renew_and_release_touch_only_the_named_lease(store: Store) -> None:
    for name in ("consumer:a", "consumer:b"):  # both token 1, both expired at once
        assert await store.acquire_lease(name, "node-1", 0) is not None
    assert await store.renew_lease("consumer:a", "node-1", 1, 30)
    assert await store.acquire_lease("consumer:a", "node-2", 30) is None
    assert await store.acquire_lease("consumer:b", "node-2", 30) is not None

    for name in ("consumer:c", "consumer:d"):
        assert await store.acquire_lease(name, "node-1", 30) is not None
    await store.release_lease("consumer:c", "node-1", 1)
    assert await store.acquire_lease("consumer:d", "node-2", 30) is None
    assert await store.acquire_lease("consumer:c", "node-2", 30) is not None


async def test_a_lease_shows_since_when_its_holder_holds_it(store: Store) -> None:
    first = await store.acquire_lease("trigger:a", "node-1", 0)
    assert first is not None
    kept = await store.acquire_lease("trigger:a", "node-1", 0)  # the same holder again
    assert kept is not None and kept.acquired_at == first.acquired_at
    taken = await store.acquire_lease("trigger:a", "node-2", 30)
    assert taken is not None and taken.acquired_at >= kept.expires_at
    (listed,) = await store.list_leases("trigger:")
    assert (listed.owner, listed.token, listed.acquired_at) == ("node-2", 2, taken.acquired_at)
    assert listed.expires_at == taken.expires_at


async def test_listing_without_a_prefix_shows_every_lease_by_name(store: Store) -> None:
    for name in ("trigger:b", "worker:1", "consumer:z", "trigger:a"):
        assert await store.acquire_lease(name, "node-1", 30) is not None
    names = [le.name for le in await store.list_leases()]
    assert names == ["consumer:z", "trigger:a", "trigger:b", "worker:1"]
    assert [le.name for le in await store.list_leases("trigger:")] == ["trigger:a", "trigger:b"]
