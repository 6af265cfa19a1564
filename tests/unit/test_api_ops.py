"""Auth, health, metrics, error shapes and OpenAPI of the HTTP app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing
from fastapi import APIRouter, FastAPI

from headwater.errors import ConfigError, StoreError
from headwater.server.app import create_app
from headwater.server.auth import is_loopback, key_matches, require_api_key_for
from headwater.server.metrics import Metrics, job_status_refresher
from headwater.store.base import JobStatus
from tests.fakes import FakeRuntime

KEYS = ("key-one", "key-two")


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hw")


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
async def client(runtime: FakeRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(runtime)) as c:
        yield c


@pytest.fixture
async def secured(runtime: FakeRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(runtime, api_keys=KEYS)) as c:
        yield c


# -- auth ---------------------------------------------------------------------------

API_CALLS = [
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/x"),
    ("GET", "/api/jobs/x/logs"),
    ("POST", "/api/jobs/x/cancel"),
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks/hello/run"),
    ("GET", "/api/triggers"),
    ("GET", "/api/not-a-route"),
]


@pytest.mark.parametrize(("method", "path"), API_CALLS)
async def test_api_requires_a_key_when_configured(
    secured: httpx.AsyncClient, method: str, path: str
) -> None:
    missing = await secured.request(method, path)
    wrong = await secured.request(method, path, headers={"Authorization": "Bearer nope"})
    wrong_scheme = await secured.request(method, path, headers={"Authorization": "Basic key-one"})

    for resp in (missing, wrong, wrong_scheme):
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "unauthorized"
        assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    assert wrong.json()["error"]["message"] == "the API key is not valid"


@pytest.mark.parametrize("key", KEYS)
async def test_any_configured_key_is_accepted(
    secured: httpx.AsyncClient, runtime: FakeRuntime, key: str
) -> None:
    job = runtime.store.add_job()
    headers = {"Authorization": f"Bearer {key}"}

    assert (await secured.get("/api/jobs", headers=headers)).status_code == 200
    assert (await secured.get(f"/api/jobs/{job.id}", headers=headers)).status_code == 200
    resp = await secured.post("/api/tasks/deploy/run", json={}, headers=headers)
    assert resp.status_code == 201


async def test_health_metrics_and_docs_stay_open(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/healthz")).status_code == 200
    assert (await secured.get("/metrics")).status_code == 200
    assert (await secured.get("/openapi.json")).status_code == 200
    assert (await secured.get("/docs")).status_code == 200


async def test_without_keys_the_api_is_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/jobs")).status_code == 200


async def test_routers_added_later_under_api_are_protected(runtime: FakeRuntime) -> None:
    app = create_app(runtime, api_keys=KEYS)
    extra = APIRouter()

    @extra.get("/api/extra")
    async def extra_route() -> dict[str, str]:
        return {"ok": "yes"}

    @extra.post("/hooks/thing")
    async def hook() -> dict[str, str]:
        return {"ok": "hook"}

    app.include_router(extra)
    async with _client(app) as c:
        assert (await c.get("/api/extra")).status_code == 401
        ok = await c.get("/api/extra", headers={"Authorization": "Bearer key-two"})
        assert ok.json() == {"ok": "yes"}
        # /hooks/* authenticates on its own: not the API key's business.
        assert (await c.post("/hooks/thing")).status_code == 200


async def test_cross_site_browser_writes_are_refused(client: httpx.AsyncClient) -> None:
    forged = await client.post("/api/tasks/deploy/run", headers={"Sec-Fetch-Site": "cross-site"})
    sandboxed = await client.post("/api/tasks/deploy/run", headers={"Origin": "null"})
    same_origin = await client.post(
        "/api/tasks/deploy/run", headers={"Sec-Fetch-Site": "same-origin"}
    )
    cross_site_read = await client.get("/api/jobs", headers={"Sec-Fetch-Site": "cross-site"})

    assert forged.status_code == sandboxed.status_code == 403
    assert forged.json()["error"]["type"] == "forbidden"
    assert same_origin.status_code == 201
    assert cross_site_read.status_code == 200


def test_key_matches_compares_every_key() -> None:
    assert key_matches("b", ["a", "b"])
    assert not key_matches("c", ["a", "b"])
    assert not key_matches("a", [])
    assert key_matches("ключ", ["ключ"])  # non-ASCII keys work (compared as bytes)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_require_api_key_for_non_loopback_hosts() -> None:
    require_api_key_for("127.0.0.1", [])
    require_api_key_for("0.0.0.0", ["k"])
    with pytest.raises(ConfigError, match="without an API key"):
        require_api_key_for("0.0.0.0", [])
    with pytest.raises(ConfigError, match="empty"):
        require_api_key_for("127.0.0.1", [" "])


def test_create_app_refuses_an_empty_key(runtime: FakeRuntime) -> None:
    with pytest.raises(ConfigError):
        create_app(runtime, api_keys=[""])


# -- health -------------------------------------------------------------------------


async def test_healthz_ok(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz")

    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "worker": "ok", "workspace": "test", "store": "ok"}


async def test_healthz_503_when_the_store_fails(
    client: httpx.AsyncClient, runtime: FakeRuntime
) -> None:
    runtime.store.broken = True

    resp = await client.get("/healthz")

    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "error"
    assert body["store"] == "error: StoreError"
    assert "hunter2" not in resp.text  # the store's message stays in the server log


# -- metrics ------------------------------------------------------------------------


async def test_metrics_expose_job_gauges_and_request_counters(
    client: httpx.AsyncClient, runtime: FakeRuntime
) -> None:
    runtime.store.add_job(status=JobStatus.COMPLETED)
    runtime.store.add_job(status=JobStatus.COMPLETED)
    runtime.store.add_job(status=JobStatus.FAILED)
    job = runtime.store.add_job(status=JobStatus.RUNNING)
    await client.get("/api/jobs")
    await client.get(f"/api/jobs/{job.id}")
    await client.get("/api/jobs/unknown")

    resp = await client.get("/metrics")

    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'headwater_jobs{status="completed"} 2.0' in text
    assert 'headwater_jobs{status="failed"} 1.0' in text
    assert 'headwater_jobs{status="running"} 1.0' in text
    assert 'headwater_jobs{status="pending"} 0.0' in text
    assert 'headwater_api_requests_total{method="GET",route="/api/jobs",status="200"} 1.0' in text
    # Route templates, not raw paths: one series for every job id.
    assert 'route="/api/jobs/{job_id}",status="200"} 1.0' in text
    assert 'route="/api/jobs/{job_id}",status="404"} 1.0' in text
    assert job.id not in text
    assert "headwater_api_request_seconds_bucket" in text


async def test_metrics_count_the_queue_at_every_scrape_and_finished_jobs_less_often() -> None:
    # Counting finished jobs reads their whole index: at 1,000,000 jobs a scrape every
    # few seconds would cost a core. The queue's gauges stay exact at every scrape.
    runtime = FakeRuntime()
    metrics = Metrics()
    refresh = job_status_refresher(metrics, runtime.store, finished_every=3600)
    runtime.store.add_job(status=JobStatus.COMPLETED)
    await refresh()
    runtime.store.add_job(status=JobStatus.COMPLETED)
    runtime.store.add_job(status=JobStatus.PENDING)
    runtime.store.add_job(status=JobStatus.RUNNING)
    await refresh()
    text = (await metrics.render()).decode()
    assert 'headwater_jobs{status="pending"} 1.0' in text
    assert 'headwater_jobs{status="running"} 1.0' in text
    assert 'headwater_jobs{status="completed"} 1.0' in text  # the first scrape's count
    fresh = job_status_refresher(metrics, runtime.store, finished_every=0)
    await fresh()
    assert 'headwater_jobs{status="completed"} 2.0' in (await metrics.render()).decode()


async def test_metrics_survive_a_store_outage(
    client: httpx.AsyncClient, runtime: FakeRuntime
) -> None:
    runtime.store.broken = True

    resp = await client.get("/metrics")

    assert resp.status_code == 200
    assert "headwater_metrics_refresh_errors_total 1.0" in resp.text


async def test_each_app_has_its_own_registry() -> None:
    a, b = FakeRuntime(), FakeRuntime()
    a.store.add_job()
    async with _client(create_app(a)) as ca, _client(create_app(b)) as cb:
        await ca.get("/api/jobs")
        text_a = (await ca.get("/metrics")).text
        text_b = (await cb.get("/metrics")).text
    assert 'headwater_jobs{status="pending"} 1.0' in text_a
    assert 'headwater_jobs{status="pending"} 0.0' in text_b
    assert 'route="/api/jobs"' not in text_b


async def test_metrics_class_is_extensible() -> None:
    metrics = Metrics()
    dispatched = metrics.counter("jobs_dispatched", "Jobs dispatched", ("source_type",))
    lag = metrics.gauge("consumer_lag", "Lag")
    dispatched.labels("webhook").inc(3)

    async def refresh() -> None:
        lag.set(7)

    metrics.on_scrape(refresh)
    text = (await metrics.render()).decode()

    assert 'headwater_jobs_dispatched_total{source_type="webhook"} 3.0' in text
    assert "headwater_consumer_lag 7.0" in text


# -- errors and OpenAPI -------------------------------------------------------------


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    wrong_method = await client.delete("/api/jobs")

    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "method_not_allowed"


class ExplodingRuntime(FakeRuntime):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def workspace(self) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [StoreError("INSERT failed: password=hunter2"), RuntimeError("boom hunter2")],
)
async def test_internal_errors_hide_their_message(error: Exception) -> None:
    app = create_app(ExplodingRuntime(error))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    # Captured, not rendered: the dev renderer's pretty traceback takes seconds.
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
            resp = await c.get("/api/tasks")

    assert logs[0]["log_level"] == "error"  # the details go to the server log

    assert resp.status_code == 500
    assert "hunter2" not in resp.text
    assert "Traceback" not in resp.text
    assert resp.json()["error"]["message"].endswith("see the server log")


async def test_openapi_documents_the_job_json(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    paths = schema["paths"]
    for path in (
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/logs",
        "/api/jobs/{job_id}/cancel",
        "/api/tasks",
        "/api/tasks/{task}/run",
        "/api/triggers",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
    job = schema["components"]["schemas"]["JobOut"]["properties"]
    for field in ("id", "workspace", "task", "status", "input", "output", "steps", "created_at"):
        assert field in job
    assert set(job["status"]["enum"]) == {s.value for s in JobStatus}
    run = paths["/api/tasks/{task}/run"]["post"]
    assert "201" in run["responses"]
    assert "422" in run["responses"]


class _RuntimeWithTriggers(FakeRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, dict[str, Any]] = {
            "orders": {"type": "kafka", "lag_events": 42, "lag_ms": 1500.5, "in_flight": 3},
            "hook": {"type": "webhook", "lag_events": None},
        }

    async def trigger_states(self) -> dict[str, dict[str, Any]]:
        return self.states


async def test_metrics_export_receiver_lag_and_drop_triggers_that_went_away() -> None:
    runtime = _RuntimeWithTriggers()
    async with _client(create_app(runtime)) as client:
        text = (await client.get("/metrics")).text
        assert 'headwater_trigger_lag_events{trigger="orders",type="kafka"} 42.0' in text
        assert 'headwater_trigger_lag_ms{trigger="orders",type="kafka"} 1500.5' in text
        assert 'headwater_trigger_in_flight{trigger="orders",type="kafka"} 3.0' in text
        assert 'trigger="hook"' not in text  # unknown lag is no series, not a zero
        runtime.states = {}
        assert 'trigger="orders"' not in (await client.get("/metrics")).text


async def test_a_receiver_password_written_in_clear_is_not_listed() -> None:
    from headwater.workspace.models import Workspace

    ws = Workspace.model_validate(
        {
            "actions": {"noop": {"type": "script", "script": "true"}},
            "tasks": {"handle": {"flow": {"run": {"action": "noop"}}}},
            "triggers": {
                "clear": {
                    "type": "amqp",
                    "url": "amqp://guest:hunter2@127.0.0.1:5672/",
                    "queue": "q",
                    "target_task": "handle",
                },
                "templated": {
                    "type": "redis_stream",
                    "url": "{{ secret.redis_url }}",
                    "stream": "s",
                    "target_task": "handle",
                },
            },
        }
    )
    async with _client(create_app(FakeRuntime(workspace=ws))) as client:
        listed = {t["name"]: t for t in (await client.get("/api/triggers")).json()}
    assert "hunter2" not in json.dumps(listed)
    assert listed["clear"]["task"] == "handle" and listed["clear"]["queue"] == "q"
    assert listed["templated"]["url"] == "{{ secret.redis_url }}"


@pytest.mark.parametrize("error", [StoreError("down"), RuntimeError("bug")])
async def test_metrics_count_5xx_responses_by_route_and_status(error: Exception) -> None:
    app = create_app(ExplodingRuntime(error))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with structlog.testing.capture_logs():
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
            failed = await c.get("/api/tasks")
            text = (await c.get("/metrics")).text
    assert failed.status_code == 500
    line = 'headwater_api_requests_total{method="GET",route="/api/tasks",status="500"} 1.0'
    assert line in text, text


async def test_metrics_expose_the_store_size(
    client: httpx.AsyncClient, runtime: FakeRuntime
) -> None:
    job = runtime.store.add_job(status=JobStatus.COMPLETED)
    runtime.store.log(job.id, "hello")
    text = (await client.get("/metrics")).text
    assert 'headwater_store_rows{table="jobs"} 1.0' in text
    assert 'headwater_store_rows{table="logs"} 1.0' in text
    assert 'headwater_store_rows{table="rejected_events"} 0.0' in text
