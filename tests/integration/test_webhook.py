"""Webhooks end to end: the HTTP app with the hooks router, the real Dispatcher and store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from headwater.dispatch.dispatcher import BatchingDispatcher, Dispatcher, Event
from headwater.server.app import create_app
from headwater.server.routes_webhooks import (
    create_webhook_router,
    max_webhook_body_bytes,
    sign_body,
)
from headwater.store.base import InsertOutcome, JobFilter, JobStatus, Store
from headwater.store.sql import open_store
from headwater.triggers.context import CallbackTriggerContext
from headwater.workspace.models import (
    Action,
    ActionType,
    InputField,
    Step,
    Task,
    WebhookTrigger,
    Workspace,
)
from headwater.workspace.secrets import Redactor
from headwater.workspace.templating import TemplateEngine

SECRET = "whsec-integration-0123"
WS = Workspace(
    name="ws",
    actions={"echo": Action(type=ActionType.SCRIPT, script="echo hi")},
    tasks={
        "deploy": Task(
            input={"ref": InputField(required=True), "env": InputField(default="dev")},
            flow={"ship": Step(action="echo")},
        )
    },
    triggers={
        "on-push": WebhookTrigger(
            type="webhook",
            name="github-push",
            task="deploy",
            secret="{{ secret.hook }}",
            input={"env": "staging"},
        ),
        "big": WebhookTrigger(type="webhook", task="deploy", max_body_bytes=3_000_000),
    },
    secrets={"hook": SECRET},
)


class Runtime:
    """The HTTP app's Runtime over the real store (what ``Node`` provides in production)."""

    def __init__(self, store: Store, dispatcher: Dispatcher) -> None:
        self.store = store
        self._dispatcher = dispatcher
        self._redactor = Redactor([SECRET])

    def workspace(self) -> Workspace:
        return WS

    async def submit(
        self,
        task: str,
        input: Mapping[str, Any],
        *,
        source_type: str = "api",
        source_id: str | None = None,
        dedup_key: str | None = None,
    ) -> InsertOutcome:
        job = self._dispatcher.prepare(Event(task, input, source_type, source_id, dedup_key))
        (outcome,) = await self.store.insert_jobs([job])
        return outcome

    def redact(self, data: Any) -> Any:
        return self._redactor.redact(data)

    def health(self) -> Mapping[str, Any]:
        return {"worker": "disabled"}


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    store = await open_store(db_url)
    dispatcher = Dispatcher(store, lambda: WS)
    batching = BatchingDispatcher(dispatcher)
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
    # The app-wide body limit must let the largest hook's limit through.
    app.state.body_limits["/hooks"] = max_webhook_body_bytes(WS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        yield client, store
    await batching.close()
    await store.close()


async def test_a_signed_delivery_becomes_one_job(stack: tuple[httpx.AsyncClient, Store]) -> None:
    client, store = stack
    raw = b'{"ref": "refs/heads/main"}'
    headers = {
        "X-Hub-Signature-256": sign_body(SECRET, raw),
        "Idempotency-Key": "delivery-7",
        "Content-Type": "application/json",
    }
    first = await client.post("/hooks/github-push", content=raw, headers=headers)
    again = await client.post("/hooks/github-push", content=raw, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["job_id"] == again.json()["job_id"]
    job = await store.get_job(first.json()["job_id"])
    assert job is not None
    assert job.input == {"ref": "refs/heads/main", "env": "staging"}
    assert (job.source_type, job.source_id) == ("webhook", "ws/on-push")
    assert job.dedup_key == "webhook:ws/on-push:delivery-7"
    jobs = await store.list_jobs(JobFilter(source_type="webhook"))
    assert len(jobs) == 1


async def test_refusals(stack: tuple[httpx.AsyncClient, Store]) -> None:
    client, store = stack
    r = await client.post("/hooks/github-push", json={"ref": "x"})
    assert r.status_code == 401 and SECRET not in r.text
    r = await client.post("/hooks/nope", json={})
    assert r.status_code == 404
    r = await client.post("/hooks/big", json=[1])
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_body"
    r = await client.post("/hooks/big", json={"env": "x"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_input"
    (rejected,) = await store.list_rejected(source_id="ws/big")
    assert rejected.payload == {"env": "x"} and "ref" in rejected.reason


async def test_a_hook_limit_above_the_app_default_is_honoured(
    stack: tuple[httpx.AsyncClient, Store],
) -> None:
    client, _ = stack
    padding = " " * 2_000_000  # over the app's 1 MiB default, under the hook's 3 MB
    r = await client.post("/hooks/big", content=f'{{"ref": "x"{padding}}}'.encode())
    assert r.status_code == 202
    r = await client.post("/hooks/big", content=b"{" + b" " * 3_000_000 + b"}")
    assert r.status_code == 413


async def test_wait_returns_the_output_when_the_job_finishes(
    stack: tuple[httpx.AsyncClient, Store], db_url: str
) -> None:
    client, store = stack
    # The job is finished through another store instance, as a worker process would:
    # on PostgreSQL the wake-up crosses connections through LISTEN/NOTIFY.
    worker_store = await open_store(db_url) if db_url.startswith("postgres") else store

    async def worker() -> None:
        while not (jobs := await worker_store.list_jobs(JobFilter(source_id="ws/big"))):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        await worker_store.finish_job(
            jobs[0].id, None, JobStatus.COMPLETED, output={"token": SECRET, "ok": True}
        )

    task = asyncio.create_task(worker())
    try:
        r = await client.post(
            "/hooks/big", params={"wait": "true", "timeout": "10"}, json={"ref": "x"}
        )
        await task
    finally:
        if worker_store is not store:
            await worker_store.close()
    # 200 and "completed": the wait ended with the job, not at its 10 s timeout (202).
    assert r.status_code == 200
    assert r.json()["status"] == "completed"
    assert r.json()["output"] == {"token": "••••••", "ok": True}


async def test_wait_times_out_with_202(stack: tuple[httpx.AsyncClient, Store]) -> None:
    client, _ = stack
    r = await client.post(
        "/hooks/big", params={"wait": "true", "timeout": "0.3"}, json={"ref": "x"}
    )
    assert r.status_code == 202
    assert r.json()["timed_out"] is True and r.json()["status"] == "pending"
