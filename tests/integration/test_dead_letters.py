"""Dead letters: stored with their reason, listed, replayed once into a job."""

from __future__ import annotations

from typing import Any

import httpx

from headwater.dispatch.dispatcher import Dispatcher, DispatchStatus, Event
from headwater.dispatch.replay import ReplayStatus, replay_dead_letters
from headwater.server.app import create_app
from headwater.store.base import Store
from headwater.workspace.models import Workspace
from tests.fakes import FakeRuntime


def _workspace(required: bool) -> Workspace:
    return Workspace.model_validate(
        {
            "name": "ws",
            "actions": {"noop": {"type": "script", "script": "true"}},
            "tasks": {
                "handle": {
                    "input": {"order": {"type": "integer", "required": required}},
                    "flow": {"run": {"action": "noop"}},
                }
            },
        }
    )


class _Switch:
    """The workspace as it is now: strict first, fixed later."""

    def __init__(self) -> None:
        self.ws = _workspace(required=True)

    def __call__(self) -> Workspace:
        return self.ws


async def _reject(store: Store, switch: _Switch, payloads: list[dict[str, Any]]) -> list[int]:
    events = [
        Event("handle", p, "redis_stream", "ws/incoming", dedup_key=f"k{i}")
        for i, p in enumerate(payloads)
    ]
    outcomes = await Dispatcher(store, switch).dispatch(events)
    assert {o.status for o in outcomes} == {DispatchStatus.REJECTED}
    rejected = await store.list_rejected("ws/incoming")
    return sorted(r.id for r in rejected if r.id is not None)


async def test_replay_makes_one_job_keeps_the_dedup_key_and_marks_the_dead_letter(
    store: Store,
) -> None:
    switch = _Switch()
    ids = await _reject(store, switch, [{"customer": 1}, {"customer": 2}])
    dispatcher = Dispatcher(store, switch)

    # Still refused: nothing changes, and no second dead letter is stored.
    (still,) = await replay_dead_letters(store, dispatcher, ids[:1])
    assert still.status is ReplayStatus.STILL_INVALID and "order" in (still.reason or "")
    assert len(await store.list_rejected("ws/incoming")) == 2

    switch.ws = _workspace(required=False)  # the operator fixed the task
    first = await replay_dead_letters(store, dispatcher, [*ids, 999_999])
    assert [o.status for o in first] == [
        ReplayStatus.CREATED,
        ReplayStatus.CREATED,
        ReplayStatus.NOT_FOUND,
    ]
    again = await replay_dead_letters(store, dispatcher, ids)
    assert [o.status for o in again] == [ReplayStatus.ALREADY_REPLAYED] * 2
    assert [o.job_id for o in again] == [o.job_id for o in first[:2]]

    job = await store.get_job(first[0].job_id or "")
    assert job is not None
    assert (job.dedup_key, job.source_type, job.source_id) == ("k0", "redis_stream", "ws/incoming")
    # A redelivery of the original message is now a duplicate of the replayed job.
    (redelivered,) = await dispatcher.dispatch(
        [Event("handle", {"order": 5}, "redis_stream", "ws/incoming", dedup_key="k0")]
    )
    assert (redelivered.status, redelivered.job_id) == (DispatchStatus.DUPLICATE, job.id)

    assert await store.list_rejected("ws/incoming", pending_only=True) == []
    replayed = await store.list_rejected("ws/incoming")
    assert {r.replay_job_id for r in replayed} == {o.job_id for o in first[:2]}


async def test_replay_with_a_corrected_input(store: Store) -> None:
    switch = _Switch()
    (rid,) = await _reject(store, switch, [{"order": "seven"}])
    (outcome,) = await replay_dead_letters(store, Dispatcher(store, switch), [rid], {"order": 7})
    assert outcome.status is ReplayStatus.CREATED
    job = await store.get_job(outcome.job_id or "")
    assert job is not None and job.input == {"order": 7}


async def test_dead_letter_api_lists_and_replays(store: Store) -> None:
    switch = _Switch()
    ids = await _reject(store, switch, [{"x": 1}])
    runtime = FakeRuntime(workspace=switch())
    runtime.store = store  # type: ignore[assignment]  # the real store under the fake runtime
    runtime.workspace = switch  # type: ignore[method-assign]
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        listed = (await client.get("/api/dead-letters", params={"pending": True})).json()
        assert [d["id"] for d in listed] == ids
        assert listed[0]["source_id"] == "ws/incoming" and listed[0]["replayed_at"] is None
        resp = await client.post(
            "/api/dead-letters/replay", json={"ids": ids, "input": {"order": 1}}
        )
        assert resp.status_code == 200
        assert resp.json()[0]["status"] == "created"
        assert (await client.get("/api/dead-letters", params={"pending": True})).json() == []
        bad = await client.post("/api/dead-letters/replay", json={"ids": []})
        assert bad.status_code == 422
