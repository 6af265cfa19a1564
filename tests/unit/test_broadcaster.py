"""The in-process wake-up fan-out that every store shares."""

from __future__ import annotations

from headwater.store.notify import Broadcaster


async def test_a_subscriber_that_comes_after_close_learns_it_at_once() -> None:
    """A log follower that subscribes while the store shuts down must end, not wait
    for wake-ups that will never come (this made log follows hang on shutdown)."""
    hub = Broadcaster()
    early = hub.subscribe("logs")
    hub.close_all()
    late = hub.subscribe("logs")

    assert early.closed and late.closed
    assert await late.wait(timeout=1) == []


async def test_payloads_reach_every_open_subscriber() -> None:
    hub = Broadcaster()
    with hub.subscribe("jobs") as one, hub.subscribe("jobs") as two:
        hub.publish("jobs", "a")
        hub.publish("logs", "ignored")
        assert await one.wait(0) == ["a"]
        assert await two.wait(0) == ["a"]
