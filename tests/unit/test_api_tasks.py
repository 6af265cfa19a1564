"""/api/tasks (list, run) and /api/triggers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request

from headwater.server.app import create_app
from tests.fakes import MASK, SECRET, FakeRuntime


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
async def client(runtime: FakeRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime, max_body_bytes=2048))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        yield c


# -- run ----------------------------------------------------------------------------


async def test_run_creates_a_job(client: httpx.AsyncClient, runtime: FakeRuntime) -> None:
    resp = await client.post("/api/tasks/hello/run", json={"input": {"name": "ada", "times": 2}})

    assert resp.status_code == 201
    body = resp.json()
    assert body["created"] is True
    assert body["job"]["id"] == body["job_id"]
    assert body["job"]["task"] == "hello"
    assert body["job"]["status"] == "pending"
    assert body["job"]["input"] == {"name": "ada", "times": 2}
    assert body["job"]["source_type"] == "api"
    assert body["job"]["steps"] == []
    assert runtime.submitted[0]["source_type"] == "api"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"", {}),
        (b"", {"content-type": "application/json"}),
        (b"{}", {"content-type": "application/json"}),
    ],
)
async def test_run_accepts_an_empty_body(
    client: httpx.AsyncClient,
    runtime: FakeRuntime,
    content: bytes,
    headers: Mapping[str, str],
) -> None:
    resp = await client.post("/api/tasks/deploy/run", content=content, headers=headers)

    assert resp.status_code == 201, resp.text
    assert runtime.submitted[0]["input"] == {}


async def test_run_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/tasks/nope/run", json={"input": {}})

    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found"
    assert "nope" in resp.json()["error"]["message"]


async def test_run_invalid_input_lists_every_reason(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/api/tasks/hello/run", json={"input": {"times": "x", "colour": "red"}}
    )

    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["type"] == "invalid_input"
    assert error["details"]["task"] == "hello"
    # The product's input schema: every failing field, named; a field the task does not
    # declare ("colour") is passed through, not rejected.
    assert error["details"]["reasons"] == [
        "missing required field `name`",
        "`times` must be an integer, got string 'x'",
    ]


async def test_run_invalid_input_does_not_echo_secrets(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/tasks/hello/run", json={"input": {"name": "x", "times": SECRET}})

    assert resp.status_code == 422
    assert SECRET not in resp.text
    assert MASK in resp.text


@pytest.mark.parametrize(
    "body",
    [
        {"name": "ada"},  # the forgotten {"input": ...} wrapper
        {"input": ["not", "an", "object"]},
        "just a string",
    ],
)
async def test_run_malformed_body_is_422(client: httpx.AsyncClient, body: Any) -> None:
    resp = await client.post("/api/tasks/hello/run", json=body)

    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "invalid_request"


async def test_run_invalid_json_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/api/tasks/hello/run", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert "JSON" in resp.json()["error"]["message"]


async def test_idempotency_key_returns_the_first_job(
    client: httpx.AsyncClient, runtime: FakeRuntime
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post(
        "/api/tasks/hello/run", json={"input": {"name": "a"}}, headers=headers
    )
    again = await client.post(
        "/api/tasks/hello/run", json={"input": {"name": "a"}}, headers=headers
    )
    other = await client.post("/api/tasks/hello/run", json={"input": {"name": "a"}})

    assert first.status_code == again.status_code == 201
    assert first.json()["created"] is True
    assert again.json()["created"] is False
    assert again.json()["job_id"] == first.json()["job_id"]
    assert other.json()["job_id"] != first.json()["job_id"]
    # Prefixed, so it can never collide with a trigger's dedup key.
    assert runtime.submitted[0]["dedup_key"] == "api:order-42"
    assert runtime.submitted[2]["dedup_key"] is None


async def test_idempotency_key_reused_for_another_task_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "k1"}
    await client.post("/api/tasks/deploy/run", json={}, headers=headers)
    resp = await client.post("/api/tasks/hello/run", json={"input": {"name": "a"}}, headers=headers)

    assert resp.status_code == 409
    assert "deploy" in resp.json()["error"]["message"]


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient, runtime: FakeRuntime) -> None:
    big = {"input": {"name": "x" * 4096}}

    resp = await client.post("/api/tasks/hello/run", json=big)

    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "payload_too_large"
    assert runtime.submitted == []


async def test_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient, runtime: FakeRuntime
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"input": {"name": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}}'

    resp = await client.post(
        "/api/tasks/hello/run", content=chunks(), headers={"content-type": "application/json"}
    )

    assert resp.status_code == 413
    assert runtime.submitted == []


async def test_default_body_limit_is_one_mebibyte(runtime: FakeRuntime) -> None:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        ok = await c.post("/api/tasks/hello/run", json={"input": {"name": "x" * 500_000}})
        too_big = await c.post("/api/tasks/hello/run", json={"input": {"name": "x" * 1_100_000}})
    assert ok.status_code == 201
    assert too_big.status_code == 413


# -- tasks --------------------------------------------------------------------------


async def test_list_tasks(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/tasks")

    assert resp.status_code == 200
    tasks = {t["name"]: t for t in resp.json()}
    assert set(tasks) == {"hello", "deploy"}
    hello = tasks["hello"]
    assert hello["description"] == "Say hello"
    assert hello["mode"] == "distributed"
    assert hello["input"]["name"]["required"] is True
    assert hello["input"]["name"]["type"] == "string"
    assert hello["input"]["times"]["default"] == 1
    assert [s["name"] for s in hello["steps"]] == ["greet", "again"]
    assert hello["steps"][1]["depends_on"] == ["greet"]
    assert hello["steps"][0]["action"] == "echo"
    assert hello["steps"][0]["action_type"] == "script"


# -- triggers -----------------------------------------------------------------------


async def test_list_triggers_from_the_workspace(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/triggers")

    assert resp.status_code == 200
    triggers = {t["name"]: t for t in resp.json()}
    assert set(triggers) == {"nightly", "github", "tail"}
    nightly = triggers["nightly"]
    assert nightly["type"] == "scheduler"
    assert nightly["task"] == "hello"
    assert nightly["cron"] == "0 3 * * *"
    assert nightly["enabled"] is True
    assert nightly["target_task"] is None
    assert nightly["state"] is None
    tail = triggers["tail"]
    assert tail["target_task"] == "deploy"
    assert tail["cron"] is None
    github = triggers["github"]
    assert github["path"] == "/hooks/github"
    assert github["has_secret"] is True
    assert "secret" not in github
    # The webhook secret is never shown and other secret values are masked.
    assert SECRET not in resp.text
    assert tail["env"] == {"T": MASK}


class StatefulRuntime(FakeRuntime):
    async def trigger_states(self) -> Mapping[str, Mapping[str, Any]]:
        return {"tail": {"running": True, "restarts": 2, "last_error": f"bad {SECRET}"}}


async def test_triggers_merge_runtime_state_when_available() -> None:
    transport = httpx.ASGITransport(app=create_app(StatefulRuntime()))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        triggers = {t["name"]: t for t in (await c.get("/api/triggers")).json()}

    assert triggers["tail"]["state"] == {
        "running": True,
        "restarts": 2,
        "last_error": f"bad {MASK}",
    }
    assert triggers["nightly"]["state"] is None


async def test_a_router_added_later_can_set_its_own_body_limit(runtime: FakeRuntime) -> None:
    app = create_app(runtime, max_body_bytes=100)
    hooks = APIRouter()

    @hooks.post("/hooks/{name}")
    async def hook(name: str, request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.include_router(hooks)
    app.state.body_limits["/hooks"] = 1000
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hw") as c:
        hook_ok = await c.post("/hooks/x", content=b"x" * 500)
        hook_big = await c.post("/hooks/x", content=b"x" * 1001)
        api_big = await c.post("/api/tasks/deploy/run", json={"input": {"token": "x" * 500}})

    assert hook_ok.json() == {"size": 500}
    assert hook_big.status_code == 413
    assert api_big.status_code == 413


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"input": {"name": "ada", "times": NaN}}', "NaN is not a JSON number"),
        (b'{"input": {"name": "ada", "times": Infinity}}', "Infinity is not a JSON number"),
        (b'{"input": {"name": "\\u0000"}}', "\\u0000 (NUL)"),
        (b'{"input": {"name": "\\udc00"}}', "lone surrogate"),
        (b'{"input": ' + b"[" * 500 + b"}", "deeper than"),
    ],
)
async def test_run_with_a_value_no_store_can_keep_is_422(
    client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    """Issue 14: never a 500, never a job that cannot finish."""
    resp = await client.post(
        "/api/tasks/hello/run", content=content, headers={"content-type": "application/json"}
    )

    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "invalid_json"
    assert message in resp.json()["error"]["message"]


async def test_idempotency_key_reused_with_a_different_body_is_422(
    client: httpx.AsyncClient,
) -> None:
    """Issue 14: the IETF draft on idempotency keys answers 422 for a key reused with
    another payload; answering with the first job would hide the client's bug."""
    headers = {"Idempotency-Key": "order-43"}
    first = await client.post(
        "/api/tasks/hello/run", json={"input": {"name": "a", "times": 2}}, headers=headers
    )
    same = await client.post(
        "/api/tasks/hello/run", json={"input": {"name": "a", "times": 2}}, headers=headers
    )
    other = await client.post(
        "/api/tasks/hello/run", json={"input": {"name": "b", "times": 2}}, headers=headers
    )
    fewer = await client.post(
        "/api/tasks/hello/run", json={"input": {"name": "a"}}, headers=headers
    )

    assert first.status_code == same.status_code == 201
    assert same.json()["job_id"] == first.json()["job_id"]
    assert other.status_code == 422
    assert other.json()["error"]["type"] == "idempotency_key_reused"
    assert "different body" in other.json()["error"]["message"]
    # "times" has a default, but the first request set it to 2: not the same request.
    assert fewer.status_code == 422
