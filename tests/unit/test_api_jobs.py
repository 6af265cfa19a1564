"""/api/jobs: list with filters and pagination, read, cancel, logs and following them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from headwater.server import routes_jobs
from headwater.server.app import create_app
from headwater.store.base import JobStatus, LogStream, StepStatus
from tests.fakes import MASK, SECRET, FakeRuntime, InMemoryStore, add_step


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def store(runtime: FakeRuntime) -> InMemoryStore:
    return runtime.store


@pytest.fixture
async def client(runtime: FakeRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        yield c


# -- list ---------------------------------------------------------------------------


async def test_list_returns_newest_first_without_steps(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    first = store.add_job("hello", JobStatus.COMPLETED)
    second = store.add_job("deploy", JobStatus.RUNNING)
    add_step(store, first.id, "greet", StepStatus.COMPLETED)

    resp = await client.get("/api/jobs")

    assert resp.status_code == 200
    body = resp.json()
    assert [j["id"] for j in body["jobs"]] == [second.id, first.id]
    assert body["next_before"] is None
    assert "steps" not in body["jobs"][0]
    job = body["jobs"][1]
    for key in [
        "id",
        "workspace",
        "task",
        "status",
        "input",
        "output",
        "source_type",
        "source_id",
        "created_at",
        "started_at",
        "finished_at",
    ]:
        assert key in job
    assert job["status"] == "completed"
    assert job["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("query", "expected_tasks"),
    [
        ({"task": "deploy"}, ["deploy"]),
        ({"status": "failed"}, ["hello"]),
        ({"source_type": "webhook"}, ["deploy"]),
        ({"source_id": "tail"}, ["hello"]),
        ({"task": "hello", "status": "completed"}, []),
    ],
)
async def test_list_filters(
    client: httpx.AsyncClient,
    store: InMemoryStore,
    query: dict[str, str],
    expected_tasks: list[str],
) -> None:
    store.add_job("hello", JobStatus.FAILED, source_type="event_source", source_id="tail")
    store.add_job("deploy", JobStatus.PENDING, source_type="webhook", source_id="github")

    resp = await client.get("/api/jobs", params=query)

    assert resp.status_code == 200
    assert [j["task"] for j in resp.json()["jobs"]] == expected_tasks


async def test_list_rejects_unknown_status_listing_the_allowed_ones(
    client: httpx.AsyncClient,
) -> None:
    resp = await client.get("/api/jobs", params={"status": "done"})

    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["type"] == "invalid_request"
    for status in JobStatus:
        assert status.value in error["message"]
    assert error["details"][0]["loc"] == ["query", "status"]


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
async def test_list_limit_is_bounded(client: httpx.AsyncClient, limit: str) -> None:
    resp = await client.get("/api/jobs", params={"limit": limit})
    assert resp.status_code == 422
    assert "limit" in resp.json()["error"]["message"]


async def test_list_paginates_with_keyset_cursor(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    ids = [store.add_job().id for _ in range(5)]
    newest_first = list(reversed(ids))

    seen: list[str] = []
    before = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if before:
            params["before"] = before
        body = (await client.get("/api/jobs", params=params)).json()
        seen += [j["id"] for j in body["jobs"]]
        pages += 1
        before = body["next_before"]
        if before is None:
            break

    assert seen == newest_first
    assert pages == 3


async def test_exact_page_has_no_next_cursor(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    for _ in range(2):
        store.add_job()
    body = (await client.get("/api/jobs", params={"limit": 2})).json()
    assert len(body["jobs"]) == 2
    assert body["next_before"] is None


# -- one job ------------------------------------------------------------------------


async def test_get_job_includes_steps(client: httpx.AsyncClient, store: InMemoryStore) -> None:
    job = store.add_job("hello", JobStatus.RUNNING, {"name": "ada"})
    add_step(store, job.id, "greet", StepStatus.COMPLETED)

    resp = await client.get(f"/api/jobs/{job.id}")

    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == job.id
    assert body["input"] == {"name": "ada"}
    assert body["steps"][0]["name"] == "greet"
    assert body["steps"][0]["status"] == "completed"


async def test_unknown_job_is_a_404_json_error(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/jobs/nope")

    assert resp.status_code == 404
    assert resp.json() == {
        "error": {"type": "not_found", "message": "job 'nope' not found", "details": None}
    }


async def test_secret_in_job_input_is_redacted(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job("deploy", input={"token": SECRET, "url": f"https://x:{SECRET}@host"})

    single = (await client.get(f"/api/jobs/{job.id}")).text
    listed = (await client.get("/api/jobs")).text

    for text in (single, listed):
        assert SECRET not in text
    assert (await client.get(f"/api/jobs/{job.id}")).json()["input"] == {
        "token": MASK,
        "url": f"https://x:{MASK}@host",
    }


# -- cancel -------------------------------------------------------------------------


async def test_cancel_pending_job(client: httpx.AsyncClient, store: InMemoryStore) -> None:
    job = store.add_job(status=JobStatus.PENDING)

    resp = await client.post(f"/api/jobs/{job.id}/cancel")

    assert resp.status_code == 200
    assert resp.json()["status"] == "cancelled"
    assert resp.json()["steps"] == []


async def test_cancel_running_job_requests_cancel(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job(status=JobStatus.RUNNING)

    resp = await client.post(f"/api/jobs/{job.id}/cancel")

    assert resp.status_code == 200
    assert resp.json()["status"] == "running"
    assert resp.json()["cancel_requested"] is True


async def test_cancel_final_job_is_a_conflict(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job(status=JobStatus.COMPLETED)

    resp = await client.post(f"/api/jobs/{job.id}/cancel")

    assert resp.status_code == 409
    assert resp.json()["error"]["type"] == "conflict"


async def test_cancel_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/jobs/missing/cancel")
    assert resp.status_code == 404


# -- logs ---------------------------------------------------------------------------


async def test_logs_after_limit_and_step(client: httpx.AsyncClient, store: InMemoryStore) -> None:
    job = store.add_job(status=JobStatus.RUNNING)
    other = store.add_job()
    recs = [store.log(job.id, f"line {i}", step="a" if i % 2 else "b") for i in range(6)]
    store.log(other.id, "not mine")

    body = (await client.get(f"/api/jobs/{job.id}/logs")).json()
    assert [r["line"] for r in body["logs"]] == [f"line {i}" for i in range(6)]
    assert body["last_seq"] == recs[-1].seq
    assert body["job_status"] == "running"
    assert set(body["logs"][0]) >= {"seq", "step", "stream", "line", "ts"}

    page = (
        await client.get(f"/api/jobs/{job.id}/logs", params={"after": recs[1].seq, "limit": 2})
    ).json()
    assert [r["line"] for r in page["logs"]] == ["line 2", "line 3"]
    assert page["last_seq"] == recs[3].seq

    only_a = (await client.get(f"/api/jobs/{job.id}/logs", params={"step": "a"})).json()
    assert [r["line"] for r in only_a["logs"]] == ["line 1", "line 3", "line 5"]


async def test_logs_without_new_lines_keep_the_cursor(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job(status=JobStatus.COMPLETED)
    body = (await client.get(f"/api/jobs/{job.id}/logs", params={"after": 42})).json()
    assert body == {"logs": [], "last_seq": 42, "job_status": "completed"}


async def test_logs_of_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/jobs/nope/logs")).status_code == 404
    assert (await client.get("/api/jobs/nope/logs", params={"follow": "true"})).status_code == 404


async def test_secret_in_log_line_is_redacted(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job(status=JobStatus.COMPLETED)
    store.log(job.id, f"token={SECRET};", stream=LogStream.STDERR)

    body = (await client.get(f"/api/jobs/{job.id}/logs")).json()
    followed = (await client.get(f"/api/jobs/{job.id}/logs", params={"follow": "true"})).text

    assert body["logs"][0]["line"] == f"token={MASK};"
    assert SECRET not in followed
    assert f"token={MASK};" in followed


def _ndjson(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line]


async def test_follow_of_a_final_job_sends_all_lines_then_end(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job(status=JobStatus.FAILED)
    store.log(job.id, "one")
    store.log(job.id, "two")

    resp = await client.get(f"/api/jobs/{job.id}/logs", params={"follow": "true"})

    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    records = _ndjson(resp.text)
    assert [r.get("line") for r in records[:-1]] == ["one", "two"]
    assert records[-1] == {"event": "end", "status": "failed"}


async def test_follow_streams_until_the_job_finishes(
    client: httpx.AsyncClient, store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A follower that waited for the safety timeout instead of the store's wake-ups would
    # take 30 s per line here: the elapsed-time check below cannot pass by load or luck.
    monkeypatch.setattr(routes_jobs, "FOLLOW_SAFETY_TIMEOUT", 30.0)
    job = store.add_job(status=JobStatus.RUNNING)
    store.log(job.id, "before")

    async def worker() -> None:
        # Each step yields to the event loop; the follower must be woken by the store's
        # channels.
        for i in range(3):
            await asyncio.sleep(0.02)
            store.log(job.id, f"during {i}")
        await asyncio.sleep(0.02)
        store.log(job.id, "last words")
        store.set_status(job.id, JobStatus.COMPLETED)

    loop = asyncio.get_running_loop()
    started = loop.time()
    driver = asyncio.create_task(worker())
    resp = await client.get(f"/api/jobs/{job.id}/logs", params={"follow": "true", "after": 0})
    await driver
    elapsed = loop.time() - started

    records = _ndjson(resp.text)
    lines = [r["line"] for r in records if "line" in r]
    assert lines == ["before", "during 0", "during 1", "during 2", "last words"]
    assert records[-1] == {"event": "end", "status": "completed"}
    assert elapsed < 20, "the follower waited for the safety timeout instead of a wake-up"


async def test_follow_ignores_wakeups_of_other_jobs(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job(status=JobStatus.RUNNING)
    other = store.add_job(status=JobStatus.RUNNING)

    async def worker() -> None:
        await asyncio.sleep(0.02)
        store.log(other.id, "noise")
        store.set_status(other.id, JobStatus.COMPLETED)
        await asyncio.sleep(0.02)
        store.log(job.id, "mine")
        store.set_status(job.id, JobStatus.CANCELLED)

    driver = asyncio.create_task(worker())
    resp = await client.get(f"/api/jobs/{job.id}/logs", params={"follow": "true"})
    await driver

    records = _ndjson(resp.text)
    assert [r.get("line") for r in records] == ["mine", None]
    assert records[-1] == {"event": "end", "status": "cancelled"}


async def test_follow_with_step_and_after(client: httpx.AsyncClient, store: InMemoryStore) -> None:
    job = store.add_job(status=JobStatus.COMPLETED)
    first = store.log(job.id, "a1", step="a")
    store.log(job.id, "b1", step="b")
    store.log(job.id, "a2", step="a")

    resp = await client.get(
        f"/api/jobs/{job.id}/logs", params={"follow": "true", "step": "a", "after": first.seq}
    )

    assert [r.get("line") for r in _ndjson(resp.text)] == ["a2", None]


async def test_follow_ends_when_the_store_closes(
    client: httpx.AsyncClient, store: InMemoryStore
) -> None:
    job = store.add_job(status=JobStatus.RUNNING)

    async def shutdown() -> None:
        await asyncio.sleep(0.05)
        await store.close()

    driver = asyncio.create_task(shutdown())
    resp = await asyncio.wait_for(
        client.get(f"/api/jobs/{job.id}/logs", params={"follow": "true"}), timeout=5
    )
    await driver

    # No end event: the client knows the job did not finish and may reconnect.
    assert _ndjson(resp.text) == []


@pytest.mark.parametrize("before", ["junk", "1", "' OR 1=1 --"])
async def test_list_with_a_cursor_that_is_not_a_job_id_is_422(
    client: httpx.AsyncClient, store: InMemoryStore, before: str
) -> None:
    """Issue 14: an empty 200 would look like the end of the list."""
    store.add_job()
    resp = await client.get("/api/jobs", params={"before": before})

    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["details"][0]["loc"] == ["query", "before"]
