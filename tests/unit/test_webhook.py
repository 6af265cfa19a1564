"""``POST /hooks/{name}``: lookup, body, auth, idempotency, validation, waiting."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from headwater.server import routes_webhooks as webhook_module
from headwater.server.routes_webhooks import (
    create_webhook_router,
    max_webhook_body_bytes,
    sign_body,
)
from headwater.store.base import JobStatus
from headwater.workspace.models import (
    Action,
    ActionType,
    InputField,
    Step,
    Task,
    WebhookTrigger,
    Workspace,
)
from headwater.workspace.secret_refs import unseal
from tests.unit.test_scheduler_fakes import FakeTriggerContext

SECRET = "hook-secret-value-42"
MASK = "••••••"


def hook(**kw: Any) -> WebhookTrigger:
    return WebhookTrigger(type="webhook", task=kw.pop("task", "deploy"), **kw)


def make_ws(**triggers: WebhookTrigger) -> Workspace:
    return Workspace(
        name="ws",
        actions={"echo": Action(type=ActionType.SCRIPT, script="echo hi")},
        tasks={
            "deploy": Task(
                input={
                    "ref": InputField(required=True),
                    "env": InputField(default="dev"),
                    "count": InputField(type="integer", default=1),
                },
                flow={"ship": Step(action="echo")},
            ),
            "open": Task(flow={"run": Step(action="echo")}),
        },
        triggers=triggers,
    )


def redact(data: Any) -> Any:
    if isinstance(data, str):
        return data.replace(SECRET, MASK)
    if isinstance(data, dict):
        return {k: redact(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


@pytest.fixture
async def ctx() -> AsyncIterator[FakeTriggerContext]:
    ws = make_ws(
        public=hook(task="open"),
        gh=hook(name="github", secret="{{ secret.hook }}", input={"env": "{{ secret.env }}"}),
        plain=hook(secret=SECRET),
        off=hook(enabled=False),
        small=hook(task="open", max_body_bytes=2500),
        sync=hook(task="open", mode="sync", timeout_secs=1),
    )
    c = FakeTriggerContext(ws, secrets={"hook": SECRET, "env": "prod"}, redact=redact)
    yield c
    await c.close()


@pytest.fixture
async def client(ctx: FakeTriggerContext) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(create_webhook_router(ctx))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        yield c


def bearer(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# -- lookup ------------------------------------------------------------------------------------


async def test_unknown_and_disabled_hooks_are_404(client: httpx.AsyncClient) -> None:
    for name in ("nope", "off"):
        r = await client.post(f"/hooks/{name}", json={})
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found"
        assert name in r.json()["error"]["message"]


async def test_a_hook_is_served_at_its_name_else_its_key(client: httpx.AsyncClient) -> None:
    assert (await client.post("/hooks/public")).status_code == 202
    assert (
        await client.post("/hooks/github", json={"ref": "x"}, headers=bearer())
    ).status_code == 202
    assert (await client.post("/hooks/gh", json={"ref": "x"}, headers=bearer())).status_code == 404


def test_max_webhook_body_bytes(ctx: FakeTriggerContext) -> None:
    assert max_webhook_body_bytes(ctx.ws) == 1_048_576
    assert max_webhook_body_bytes(make_ws()) == 0


# -- body ----------------------------------------------------------------------------------------


async def test_the_body_is_the_input_over_rendered_defaults(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    r = await client.post("/hooks/github", json={"ref": "main", "count": 3}, headers=bearer())
    assert r.status_code == 202
    body = r.json()
    assert body == {"job_id": body["job_id"], "created": True, "status": "pending"}
    job = ctx.store.jobs[body["job_id"]]
    # "env" names a secret: stored as a reference the worker fills in.
    assert job.input["env"].startswith("⟦secret:env:")
    assert unseal(job.input, ctx.secrets(), job.source_id) == {
        "ref": "main",
        "env": "prod",
        "count": 3,
    }
    assert (job.source_type, job.source_id, job.dedup_key) == ("webhook", "ws/gh", None)
    # Body fields win over the trigger's defaults.
    r = await client.post("/hooks/github", json={"ref": "main", "env": "qa"}, headers=bearer())
    assert ctx.store.jobs[r.json()["job_id"]].input["env"] == "qa"


async def test_an_empty_body_is_an_empty_object(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    r = await client.post("/hooks/public")
    assert r.status_code == 202
    assert ctx.store.jobs[r.json()["job_id"]].input == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "not a JSON array"),
        (b'"text"', "not a JSON string"),
        (b"42", "not a JSON number"),
        (b"null", "not a JSON null"),
        (b"{oops", "not valid JSON"),
        # Issue 14: refused at the door, never a job whose finish cannot be written.
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": [Infinity]}', "Infinity is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e999}', "too large for a JSON number"),
        (b'{"a": ' + b"[" * 100_000 + b"}", "deeper than 100 levels"),
        (b'{"a": "x\\u0000y"}', "\\u0000 (NUL)"),
        (b'{"a": "\\ud800"}', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    r = await client.post("/hooks/public", content=content)
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "invalid_body"
    assert message in r.json()["error"]["message"]


async def test_a_declared_length_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/small", content=b"{" + b" " * 3000 + b"}")
    assert r.status_code == 413
    assert "2500 bytes" in r.json()["error"]["message"]


async def test_a_streamed_body_is_cut_at_the_limit(client: httpx.AsyncClient) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(20):
            sent.append(i)
            yield b" " * 1000

    r = await client.post("/hooks/small", content=chunks())  # chunked: no length declared
    assert r.status_code == 413
    # Reading stopped once past 2500 bytes: the rest was never pulled.
    assert len(sent) <= 4


async def test_a_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/small", content=b"{" + b" " * 2498 + b"}")
    assert r.status_code == 202


# -- authentication --------------------------------------------------------------------------------


async def test_a_hook_with_a_secret_refuses_anonymous_callers(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/plain", json={"ref": "x"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    message = r.json()["error"]["message"]
    assert "Authorization: Bearer" in message and "X-Hub-Signature-256" in message
    assert SECRET not in r.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": "Bearer "},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": "garbage"},
        {"X-Hub-Signature-256": sign_body(SECRET, b'{"ref": "other"}')},
        {"X-Hub-Signature-256": sign_body("wrong-secret", b'{"ref": "x"}')},
    ],
)
async def test_wrong_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.post("/hooks/plain", content=b'{"ref": "x"}', headers=headers)
    assert r.status_code == 401
    assert SECRET not in r.text


async def test_a_bearer_token_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/plain", json={"ref": "x"}, headers=bearer())
    assert r.status_code == 202
    r = await client.post(
        "/hooks/plain", json={"ref": "x"}, headers={"authorization": f"bearer {SECRET}"}
    )
    assert r.status_code == 202


@pytest.mark.parametrize("header", ["X-Hub-Signature-256", "X-Headwater-Signature-256"])
async def test_an_hmac_signature_of_the_raw_body_is_accepted(
    client: httpx.AsyncClient, ctx: FakeTriggerContext, header: str
) -> None:
    raw = b'{"ref": "refs/heads/main",   "env": "x"}'  # signed as sent, whitespace and all
    digest = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    r = await client.post("/hooks/plain", content=raw, headers={header: f"sha256={digest}"})
    assert r.status_code == 202
    assert ctx.store.jobs[r.json()["job_id"]].input["ref"] == "refs/heads/main"
    upper = {header: f"sha256={digest.upper()}"}
    assert (await client.post("/hooks/plain", content=raw, headers=upper)).status_code == 202


async def test_a_query_secret_is_accepted_for_stroem_compatibility(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/hooks/plain", params={"secret": SECRET}, json={"ref": "x"})
    assert r.status_code == 202
    r = await client.post("/hooks/plain", params={"secret": "nope"}, json={"ref": "x"})
    assert r.status_code == 401


async def test_a_templated_secret_is_rendered_from_the_secrets(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/github", json={"ref": "x"}, headers=bearer("{{ secret.hook }}"))
    assert r.status_code == 401
    assert (
        await client.post("/hooks/github", json={"ref": "x"}, headers=bearer())
    ).status_code == 202


async def test_credentials_are_compared_in_constant_time(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhook_module.hmac, "compare_digest", spy)
    raw = b'{"ref": "x"}'
    await client.post("/hooks/plain", content=raw, headers=bearer("nope"))
    await client.post("/hooks/plain", content=raw, headers={"X-Hub-Signature-256": "sha256=00"})
    assert (b"nope", SECRET.encode()) in calls
    assert (b"sha256=00", sign_body(SECRET, raw).encode()) in calls


async def test_a_secret_that_cannot_be_rendered_is_a_500_without_details(
    ctx: FakeTriggerContext, client: httpx.AsyncClient
) -> None:
    ctx.ws = make_ws(
        broken=hook(secret="{{ secret.missing }}"), empty=hook(secret="{{ secret.blank }}")
    )
    ctx._secrets["blank"] = ""
    for name in ("broken", "empty"):
        r = await client.post(f"/hooks/{name}", json={"ref": "x"}, headers=bearer(""))
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "webhook_misconfigured"
        assert "missing" not in r.json()["error"]["message"]


# -- idempotency and validation -------------------------------------------------------------------


async def test_an_idempotency_key_makes_a_repeat_answer_with_the_first_job(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    headers = {**bearer(), "Idempotency-Key": "delivery-1"}
    first = await client.post("/hooks/plain", json={"ref": "x"}, headers=headers)
    again = await client.post("/hooks/plain", json={"ref": "x"}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["created"] is True and again.json()["created"] is False
    assert again.json()["job_id"] == first.json()["job_id"]
    assert ctx.store.jobs[first.json()["job_id"]].dedup_key == "webhook:ws/plain:delivery-1"
    other = await client.post(
        "/hooks/plain", json={"ref": "x"}, headers={**bearer(), "Idempotency-Key": "delivery-2"}
    )
    assert other.status_code == 202 and other.json()["job_id"] != first.json()["job_id"]


async def test_an_idempotency_key_reused_with_another_body_is_422(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    """Issue 14 (the IETF draft on idempotency keys): not the first delivery's job."""
    headers = {**bearer(), "Idempotency-Key": "delivery-9"}
    first = await client.post("/hooks/plain", json={"ref": "x"}, headers=headers)
    other = await client.post("/hooks/plain", json={"ref": "y"}, headers=headers)
    same = await client.post("/hooks/plain", json={"ref": "x"}, headers=headers)
    assert (first.status_code, other.status_code, same.status_code) == (202, 422, 200)
    assert other.json()["error"]["type"] == "idempotency_key_reused"
    assert len(ctx.store.jobs) == 1


async def test_without_an_idempotency_key_every_post_is_a_job(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    for _ in range(2):
        assert (await client.post("/hooks/public")).status_code == 202
    assert len(ctx.store.jobs) == 2


async def test_an_overlong_idempotency_key_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/public", headers={"Idempotency-Key": "k" * 201})
    assert r.status_code == 400


async def test_an_invalid_input_is_422_with_every_reason_and_stored(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    r = await client.post("/hooks/plain", json={"count": "many"}, headers=bearer())
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "invalid_input"
    assert error["details"]["task"] == "deploy"
    assert len(error["details"]["reasons"]) == 2  # ref missing, count not an integer
    (rejected,) = ctx.store.rejected
    assert rejected.source_type == "webhook" and rejected.payload == {"count": "many"}
    assert ctx.store.jobs == {}


# -- waiting for the job ---------------------------------------------------------------------------


def finish_first_job(
    ctx: FakeTriggerContext,
    status: JobStatus = JobStatus.COMPLETED,
    output: Any = None,
    error: str | None = None,
    delay: float = 0.1,
) -> asyncio.Task[None]:
    """In the background: wait for a job to exist, then finish it (a worker's part)."""

    async def finish() -> None:
        while not ctx.store.jobs:
            await asyncio.sleep(0.01)
        await asyncio.sleep(delay)
        (job_id,) = ctx.store.jobs
        await ctx.store.finish_job(job_id, None, status, output=output, error=error)

    return asyncio.create_task(finish())


async def test_wait_true_answers_with_the_final_job(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    finisher = finish_first_job(ctx, output={"url": "https://x", "token": SECRET})
    started = time.monotonic()
    r = await client.post("/hooks/public", params={"wait": "true", "timeout": "10"})
    await finisher
    # Woken by the FINISHED notification, not by the 10 s timeout (that answers 202).
    assert time.monotonic() - started < 8
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "completed" and body["error"] is None
    assert body["output"] == {"url": "https://x", "token": MASK}


async def test_sync_mode_waits_and_reports_a_failure(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    finisher = finish_first_job(ctx, JobStatus.FAILED, error=f"exit 1 ({SECRET})")
    r = await client.post("/hooks/sync")
    await finisher
    assert r.status_code == 200
    assert r.json()["status"] == "failed" and r.json()["error"] == f"exit 1 ({MASK})"


async def test_a_wait_that_times_out_answers_202_with_the_status(
    client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    r = await client.post("/hooks/public", params={"wait": "1", "timeout": "0.2"})
    assert 0.15 < time.monotonic() - started < 10  # its 0.2 s timeout, then at once
    assert r.status_code == 202
    assert r.json() == {
        "job_id": r.json()["job_id"],
        "created": True,
        "status": "pending",
        "timed_out": True,
    }


async def test_sync_mode_times_out_after_timeout_secs(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    r = await client.post("/hooks/sync")
    assert 0.9 < time.monotonic() - started < 20  # its 1 s timeout, then at once
    assert r.status_code == 202 and r.json()["timed_out"] is True


async def test_wait_false_overrides_sync_mode(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/sync", params={"wait": "false"})
    assert r.status_code == 202 and "timed_out" not in r.json()


async def test_a_repeat_of_a_finished_job_answers_at_once(
    client: httpx.AsyncClient, ctx: FakeTriggerContext
) -> None:
    headers = {"Idempotency-Key": "k1"}
    first = await client.post("/hooks/public", headers=headers)
    await ctx.store.finish_job(first.json()["job_id"], None, JobStatus.COMPLETED, output=7)
    r = await client.post("/hooks/public", headers=headers, params={"wait": "true"})
    assert r.status_code == 200
    assert r.json()["output"] == 7 and r.json()["created"] is False


@pytest.mark.parametrize("timeout", ["soon", "-1", "nan"])
async def test_a_bad_timeout_is_400(client: httpx.AsyncClient, timeout: str) -> None:
    r = await client.post("/hooks/public", params={"wait": "true", "timeout": timeout})
    assert r.status_code == 400


async def test_the_wait_is_capped_at_300_seconds(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float] = []
    real: Callable[..., Any] = webhook_module._wait_for

    async def spy(ctx: Any, finished: Any, accepted: Any, timeout: float) -> Any:
        seen.append(timeout)
        return await real(ctx, finished, accepted, 0.01)

    monkeypatch.setattr(webhook_module, "_wait_for", spy)
    await client.post("/hooks/public", params={"wait": "true", "timeout": "86400"})
    assert seen == [300.0]
