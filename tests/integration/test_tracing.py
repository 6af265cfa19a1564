"""OpenTelemetry traces of jobs (the ``otel`` extra), checked with the SDK's in-memory
exporter: one trace per job, its id the job's UUID, spans dispatch → job → step:<name>."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.telemetry.tracing import Tracing, otel_enabled, trace_id_of, tracing_from_env
from tests.polling import eventually, join

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

WORKSPACE = """
actions:
  ok: { type: script, script: "echo hi" }
  boom: { type: script, script: "exit 3" }
  say: { type: function, function: "telemetry_fns:say" }
tasks:
  said:
    flow:
      s: { action: say }
  two:
    flow:
      first: { action: ok }
      second: { action: boom, depends_on: [first] }
"""


def _say() -> dict[str, str]:
    structlog.get_logger("test.step").info("step_says_hello")
    return {"said": "hello"}


@pytest.fixture
def exporter() -> object:
    return in_memory.InMemorySpanExporter()


@pytest.fixture
async def node(tmp_path: Path, sqlite_url: str, exporter: object) -> AsyncIterator[Node]:
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(WORKSPACE))
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    node = Node(
        tmp_path / "ws.yaml",
        NodeSettings(db_url=sqlite_url),
        functions={"telemetry_fns:say": _say},
        tracing=Tracing(provider),
    )
    await node.start()
    stop = asyncio.Event()
    running = asyncio.create_task(node.run_worker(stop))
    try:
        yield node
    finally:
        stop.set()
        await join([running])
        await node.close()


async def test_a_job_is_one_trace_from_dispatch_through_each_step(
    node: Node, exporter: object
) -> None:
    job_id = (await node.submit("two", {})).id

    def spans() -> list[object]:
        found = exporter.get_finished_spans()  # type: ignore[attr-defined]
        return list(found) if any(s.name == "job" for s in found) else []

    finished = await eventually(spans, what="the job span")
    by_name = {s.name: s for s in finished}  # type: ignore[attr-defined]
    assert set(by_name) == {"dispatch", "job", "step:first", "step:second"}
    trace_id = int(job_id.replace("-", ""), 16)
    assert {s.context.trace_id for s in finished} == {trace_id}  # type: ignore[attr-defined]
    job_span = by_name["job"]
    assert by_name["step:first"].parent.span_id == job_span.context.span_id
    assert by_name["step:second"].parent.span_id == job_span.context.span_id
    assert by_name["dispatch"].parent.span_id == job_span.parent.span_id  # the job's root
    assert job_span.attributes["headwater.status"] == "failed"
    assert by_name["step:first"].status.is_ok is not False  # the ok step is not an error
    assert by_name["step:second"].status.status_code.name == "ERROR"
    assert by_name["step:first"].end_time <= by_name["step:second"].start_time


async def test_log_lines_of_a_job_carry_its_trace_id(node: Node) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        job_id = (await node.submit("said", {})).id

        async def done() -> bool:
            job = await node.store.get_job(job_id)
            return job is not None and job.status.is_terminal

        await eventually(done, what="the job finished")
    said = [e for e in logs if e["event"] == "step_says_hello"]
    assert said, logs
    assert said[0]["job_id"] == job_id
    assert said[0]["trace_id"] == job_id.replace("-", "")


async def test_the_job_json_carries_its_trace_id(node: Node) -> None:
    job_id = (await node.submit("two", {})).id
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        job = (await client.get(f"/api/jobs/{job_id}")).json()
        listed = (await client.get("/api/jobs")).json()["jobs"]
    assert job["trace_id"] == job_id.replace("-", "")
    assert [j["trace_id"] for j in listed if j["id"] == job_id] == [job["trace_id"]]


def test_tracing_is_off_unless_asked_for() -> None:
    assert not otel_enabled({})
    assert tracing_from_env({}) is None
    assert otel_enabled({"HEADWATER_OTEL": "1"})
    assert otel_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not otel_enabled({"HEADWATER_OTEL": "1", "OTEL_SDK_DISABLED": "true"})
    assert isinstance(
        tracing_from_env({"HEADWATER_OTEL": "1", "OTEL_TRACES_EXPORTER": "console"}), Tracing
    )


def test_the_trace_id_is_the_job_uuid() -> None:
    assert trace_id_of("0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b") == "0190a5b27c3d7e4f8a9b0c1d2e3f4a5b"
    assert trace_id_of("not-a-uuid") is None
