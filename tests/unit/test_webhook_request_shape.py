"""``input_shape: request``: Strøm's webhook input {body, headers, method, query}, and GET."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from headwater.server.routes_webhooks import create_webhook_router
from tests.unit.test_scheduler_fakes import FakeTriggerContext
from tests.unit.test_webhook import SECRET, bearer, hook, make_ws, redact


@pytest.fixture
async def ctx() -> AsyncIterator[FakeTriggerContext]:
    ws = make_ws(
        strom=hook(task="open", input_shape="request", secret=SECRET, input={"env": "staging"}),
        plain=hook(task="open"),
    )
    c = FakeTriggerContext(ws, secrets={}, redact=redact)
    yield c
    await c.close()


@pytest.fixture
async def client(ctx: FakeTriggerContext) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(create_webhook_router(ctx))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        yield c


async def test_the_request_is_the_input(client: httpx.AsyncClient, ctx: FakeTriggerContext) -> None:
    r = await client.post(
        "/hooks/strom?region=eu&secret=" + SECRET,
        json={"ref": "refs/heads/main", "commits": []},
        headers={"X-GitHub-Event": "push"},
    )
    assert r.status_code == 202, r.text
    job = ctx.store.jobs[r.json()["job_id"]]
    assert job.input["body"] == {"ref": "refs/heads/main", "commits": []}
    assert job.input["method"] == "POST"
    assert job.input["query"] == {"region": "eu"}  # never the secret
    assert job.input["headers"]["x-github-event"] == "push"
    assert job.input["env"] == "staging"  # the trigger's defaults, at the top level


async def test_credentials_are_not_kept_in_the_input(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    r = await client.post("/hooks/strom", content=b"plain text", headers=bearer())
    assert r.status_code == 202, r.text
    job = ctx.store.jobs[r.json()["job_id"]]
    assert job.input["body"] == "plain text"  # not JSON: the text, as Strøm
    assert "authorization" not in job.input["headers"]
    assert SECRET not in str(job.input)


async def test_get_is_accepted_with_a_null_body(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    r = await client.get("/hooks/strom?x=1", headers=bearer())
    assert r.status_code == 202, r.text
    job = ctx.store.jobs[r.json()["job_id"]]
    assert job.input["body"] is None and job.input["method"] == "GET"
    assert job.input["query"] == {"x": "1"}


async def test_the_default_shape_is_unchanged(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    r = await client.post("/hooks/plain", json={"ref": "main"})
    assert ctx.store.jobs[r.json()["job_id"]].input == {"ref": "main"}
    r = await client.get("/hooks/plain")
    assert r.status_code == 202
    assert ctx.store.jobs[r.json()["job_id"]].input == {}
