"""Job telemetry of an embedded node: what ``/metrics`` shows after jobs ran."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from headwater.dispatch.dispatcher import Event
from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.store.base import JobStatus
from headwater.worker.worker import WorkerSettings
from tests.polling import eventually, join

WORKSPACE = """
actions:
  ok: { type: script, script: "true" }
  boom: { type: script, script: "exit 3" }
tasks:
  good:
    input:
      n: { type: integer, required: true }
    flow:
      s: { action: ok }
  bad:
    flow:
      s: { action: boom }
"""


@pytest.fixture
async def node(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Node]:
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(WORKSPACE))
    settings = NodeSettings(db_url=sqlite_url, worker=WorkerSettings(concurrency=2))
    node = Node(tmp_path / "ws.yaml", settings)
    await node.start()
    stop = asyncio.Event()
    running = asyncio.create_task(node.run_worker(stop))
    try:
        yield node
    finally:
        stop.set()
        await join([running])
        await node.close()


def _registry(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry()
    node.job_metrics.register(registry)
    return registry


async def _finished(node: Node, job_id: str) -> None:
    async def done() -> bool:
        job = await node.store.get_job(job_id)
        return job is not None and job.status.is_terminal

    await eventually(done, what=f"job {job_id} finished")


async def test_finished_jobs_are_counted_by_task_and_status_with_their_times(node: Node) -> None:
    registry = _registry(node)
    ids = [(await node.submit("good", {"n": n})).id for n in range(3)]
    ids.append((await node.submit("bad", {})).id)
    for job_id in ids:
        await _finished(node, job_id)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"headwater_{name}", labels)

    await eventually(
        lambda: sample("jobs_finished_total", task="bad", status="failed") == 1.0,
        what="the failed job counted",
    )
    assert sample("jobs_finished_total", task="good", status="completed") == 3.0
    assert sample("job_duration_seconds_count", task="good") == 3.0
    assert sample("job_duration_seconds_count", task="bad") == 1.0
    assert sample("job_queue_wait_seconds_count", task="good") == 3.0
    # Durations are the stored start-to-finish times: their sum bounds each of them.
    total = sample("job_duration_seconds_sum", task="good")
    assert total is not None and total >= 0.0
    stored = [await node.store.get_job(i) for i in ids[:3]]
    spans = [
        (j.finished_at - j.started_at).total_seconds()
        for j in stored
        if j is not None and j.finished_at is not None and j.started_at is not None
    ]
    assert total >= max(spans) * 0.5
    assert all(j is not None and j.status is JobStatus.COMPLETED for j in stored)


async def test_events_are_counted_by_outcome(node: Node) -> None:
    registry = _registry(node)
    await node.submit("good", {"n": 1}, dedup_key="k")
    await node.submit("good", {"n": 1}, dedup_key="k")

    def events(outcome: str) -> float | None:
        return registry.get_sample_value(
            "headwater_events_total", {"source_type": "api", "trigger": "", "outcome": outcome}
        )

    assert events("accepted") == 1.0
    assert events("duplicate") == 1.0


async def test_metrics_endpoint_exposes_the_node_series_and_counts_every_route(node: Node) -> None:
    app = create_app(node)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        resp = await client.post("/api/tasks/good/run", json={"input": {"n": 2}})
        assert resp.status_code == 201
        await _finished(node, resp.json()["job_id"])
        await eventually(lambda: _has_finished(app), what="the finish counted")
        text = (await client.get("/metrics")).text
    assert 'headwater_jobs_finished_total{status="completed",task="good"} 1.0' in text
    assert "headwater_job_duration_seconds_bucket" in text
    assert 'route="/api/tasks/{task}/run",status="201"' in text


def _has_finished(app: object) -> bool:
    registry = app.state.metrics.registry  # type: ignore[attr-defined]
    value = registry.get_sample_value(
        "headwater_jobs_finished_total", {"task": "good", "status": "completed"}
    )
    return value == 1.0


async def test_two_apps_over_one_node_share_its_series_without_collision(node: Node) -> None:
    first, second = create_app(node), create_app(node)
    await node.submit("good", {"n": 1})
    for app in (first, second):
        value = app.state.metrics.registry.get_sample_value(
            "headwater_events_total", {"source_type": "api", "trigger": "", "outcome": "accepted"}
        )
        assert value == 1.0


async def test_trigger_events_are_counted_by_trigger_and_outcome(node: Node) -> None:
    registry = _registry(node)
    events = [
        Event("good", {"n": 1}, "webhook", source_id="ws/orders", dedup_key="a"),
        Event("good", {"n": 1}, "webhook", source_id="ws/orders", dedup_key="a"),
        Event("good", {"n": 2}, "webhook", source_id="ws/orders", dedup_key="b"),
        Event("good", {"n": "not a number"}, "webhook", source_id="ws/orders"),
    ]
    await node.dispatcher.dispatch(events)

    def count(outcome: str) -> float | None:
        labels = {"source_type": "webhook", "trigger": "ws/orders", "outcome": outcome}
        return registry.get_sample_value("headwater_events_total", labels)

    assert (count("accepted"), count("duplicate"), count("rejected")) == (2.0, 1.0, 1.0)
