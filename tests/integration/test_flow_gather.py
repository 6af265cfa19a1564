"""Debounce and batch end to end: webhooks through the real Dispatcher, store and flusher
(SQLite and PostgreSQL), and an event source's batch with its cursor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from headwater.dispatch.dispatcher import (
    BatchingDispatcher,
    Dispatcher,
    DispatchStatus,
    Event,
)
from headwater.dispatch.gather import Flusher
from headwater.server.app import create_app
from headwater.server.routes_webhooks import create_webhook_router
from headwater.store.base import JobFilter, JobRecord, Store
from headwater.store.sql import open_store
from headwater.triggers.context import CallbackTriggerContext
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine
from tests.integration.test_webhook import Runtime
from tests.polling import eventually, join

WS = Workspace.model_validate(
    {
        "name": "ws",
        "actions": {"echo": {"type": "script", "script": "echo hi"}},
        "tasks": {
            "t": {
                "input": {"customer": {"required": True}, "n": {"type": "integer"}},
                "flow": {"a": {"action": "echo"}},
            }
        },
        "triggers": {
            "quiet": {
                "type": "webhook",
                "task": "t",
                "input": {"via": "quiet"},
                "debounce": {"key": "{{ input.customer }}", "period": "1s", "max_wait": "10s"},
            },
            "stream": {
                "type": "webhook",
                "task": "t",
                "debounce": {"key": "{{ input.customer }}", "period": "300ms", "max_wait": "600ms"},
            },
            "sized": {"type": "webhook", "task": "t", "batch": {"size": 5, "window": "1m"}},
            "timed": {"type": "webhook", "task": "t", "batch": {"size": 100, "window": "2s"}},
            "badkey": {
                "type": "webhook",
                "task": "t",
                "batch": {"size": 2, "key": "{{ input.missing.deep }}"},
            },
            "consumer": {
                "type": "event_source",
                "task": "t",
                "target_task": "t",
                "batch": {"size": 3, "window": "1m"},
            },
        },
    }
)


@dataclass
class Stack:
    client: httpx.AsyncClient
    store: Store
    dispatcher: Dispatcher

    async def jobs(self, trigger: str) -> list[JobRecord]:
        found = await self.store.list_jobs(JobFilter(source_id=f"ws/{trigger}", limit=1000))
        return sorted(found, key=lambda j: j.id)

    async def events(self, trigger: str) -> list[list[Any]]:
        return [[e["n"] for e in j.input["events"]] for j in await self.jobs(trigger)]

    async def post(self, hook: str, body: dict[str, Any], key: str | None = None) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        return await self.client.post(f"/hooks/{hook}", json=body, headers=headers)


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Stack]:
    store = await open_store(db_url)
    dispatcher = Dispatcher(store, lambda: WS)
    batching = BatchingDispatcher(dispatcher)
    flusher = Flusher(store, poll=0.05)
    dispatcher.gatherer.on_buffered = flusher.wake
    stop = asyncio.Event()
    flushing = asyncio.create_task(flusher.run(stop))
    runtime = Runtime(store, dispatcher)
    ctx = CallbackTriggerContext(
        store=store,
        dispatcher=batching,
        templates=TemplateEngine(),
        workspace=lambda: WS,
        secrets=lambda: WS.secrets,
        redact=runtime.redact,
    )
    app = create_app(runtime)
    app.include_router(create_webhook_router(ctx))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        yield Stack(client, store, dispatcher)
    stop.set()
    await join([flushing])
    await batching.close()
    await store.close()


async def test_a_debounced_key_yields_one_job_holding_every_event(stack: Stack) -> None:
    for n in range(5):
        r = await stack.post("quiet", {"customer": "a", "n": n})
        assert (r.status_code, r.json()["status"], r.json()["job_id"]) == (202, "buffered", None)
        await stack.post("quiet", {"customer": "b", "n": 100 + n})
    jobs = await eventually(
        lambda: _when(stack.jobs("quiet"), 2), what="one job per debounced key", timeout=10
    )
    by_key = {j.input["key"]: j for j in jobs}
    assert [e["n"] for e in by_key["a"].input["events"]] == [0, 1, 2, 3, 4]
    assert [e["n"] for e in by_key["b"].input["events"]] == [100, 101, 102, 103, 104]
    # Each event is what its own job's input would have been: trigger defaults merged.
    assert by_key["a"].input["events"][0] == {"customer": "a", "n": 0, "via": "quiet"}


async def test_max_wait_fires_under_a_continuous_stream(stack: Stack) -> None:
    """An event every 100 ms never leaves the 300 ms period quiet: max_wait (600 ms)
    fires jobs while the stream goes on, and every event lands in exactly one."""
    sent = 0
    fired_during_stream = False
    for n in range(16):
        await stack.post("stream", {"customer": "a", "n": n})
        sent += 1
        fired_during_stream = fired_during_stream or bool(await stack.jobs("stream"))
        await asyncio.sleep(0.1)
    assert fired_during_stream
    events = await eventually(
        lambda: _all_in(stack.events("stream"), sent), what="every event in a job", timeout=10
    )
    assert sorted(n for job in events for n in job) == list(range(sent))
    assert len(events) >= 2


async def test_a_batch_by_size_and_a_redelivery_counted_once(stack: Stack) -> None:
    for n in range(12):
        r = await stack.post("sized", {"customer": "c", "n": n}, key=f"delivery-{n}")
        assert r.status_code == 202
    again = await stack.post("sized", {"customer": "c", "n": 3}, key="delivery-3")
    assert again.status_code == 200 and again.json()["created"] is False
    events = await eventually(lambda: _when(stack.events("sized"), 2), what="two full batches")
    assert events == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert await stack.store.count_buffered("ws/sized") == 2  # the window (1m) holds them
    late = await stack.post("sized", {"customer": "c", "n": 3}, key="delivery-3")
    job_id = (await stack.jobs("sized"))[0].id
    assert late.status_code == 200 and late.json()["job_id"] == job_id


async def test_a_batch_by_window(stack: Stack) -> None:
    for n in range(3):
        await stack.post("timed", {"customer": "c", "n": n})
    events = await eventually(lambda: _when(stack.events("timed"), 1), what="the window")
    assert events == [[0, 1, 2]]


async def test_a_key_that_does_not_render_rejects_the_event(stack: Stack) -> None:
    r = await stack.post("badkey", {"customer": "c", "n": 1})
    assert r.status_code == 422
    (rejected,) = await stack.store.list_rejected(source_id="ws/badkey")
    assert "cannot gather this event" in rejected.reason
    assert await stack.store.count_buffered("ws/badkey") == 0


async def test_an_event_source_batch_commits_with_its_cursor(stack: Stack) -> None:
    events = [
        Event("t", {"customer": "c", "n": n}, "event_source", "ws/consumer", f"k{n}")
        for n in range(4)
    ]
    outcomes = await stack.dispatcher.dispatch(events, ("ws/consumer", "offset-4"))
    assert [o.status for o in outcomes] == [DispatchStatus.BUFFERED] * 4
    cursor = await stack.store.get_cursor("ws/consumer")
    assert cursor is not None and cursor.cursor == "offset-4"
    # A consumer restarted from an older cursor emits them again: nothing is added.
    again = await stack.dispatcher.dispatch(events[2:], ("ws/consumer", "offset-4"))
    assert [o.status for o in again] == [DispatchStatus.DUPLICATE] * 2
    assert await eventually(lambda: _when(stack.events("consumer"), 1)) == [[0, 1, 2]]
    assert await stack.store.count_buffered("ws/consumer") == 1


async def _when(found: Any, count: int) -> Any:
    """``found`` (awaited) when it has ``count`` entries, else None."""
    value = await found
    return value if len(value) == count else None


async def _all_in(found: Any, count: int) -> Any:
    value = await found
    return value if sum(len(v) for v in value) == count else None
