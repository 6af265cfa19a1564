"""``worker.workflow_backend.RemoteWorkflowStore`` without a server: it covers every
store operation the workflow SDK makes, names its caller in each request, and turns a
refusal of a worker that lost its job into LeaseLostError (and stops the job here)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import headwater.sdk.submitting
import headwater.sdk.workflows
from headwater.core.workflows import WorkflowStep, WorkflowStepKind
from headwater.distributed.wire import wf_step_from_wire, wf_step_to_wire
from headwater.engine.function_context import CURRENT_FUNCTION, FunctionJob
from headwater.errors import LeaseLostError, WorkflowError
from headwater.store.base import Channel, JobRecord, JobStatus
from headwater.worker.http_control import HttpControlPlane
from headwater.worker.workflow_backend import RemoteWorkflowStore

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _sdk_store_calls() -> set[str]:
    """The store methods the workflow SDK calls (``store.x(``, ``store().x(``)."""
    folder = Path(headwater.sdk.workflows.__file__).parent
    files = [*folder.glob("*.py"), Path(headwater.sdk.submitting.__file__)]
    found: set[str] = set()
    for path in files:
        found |= set(re.findall(r"store(?:\(\))?\.([a-z_]+)\(", path.read_text()))
    return found


def test_it_implements_every_store_operation_the_workflow_sdk_makes() -> None:
    calls = _sdk_store_calls()
    assert {"record_workflow_step", "find_workflow", "get_job", "subscribe"} <= calls
    calls.discard("close")  # WorkflowClient's own store, never a worker's
    missing = sorted(c for c in calls if not callable(getattr(RemoteWorkflowStore, c, None)))
    assert missing == []
    assert not RemoteWorkflowStore.__abstractmethods__


def test_a_record_travels_as_json_and_back() -> None:
    step = WorkflowStep(3, "charge", WorkflowStepKind.STEP, "failed", None, "boom", 2, NOW, NOW)
    wire = json.loads(json.dumps(wf_step_to_wire(step)))
    assert wf_step_from_wire(wire) == step
    with pytest.raises(ValueError, match="no UTC offset"):
        wf_step_from_wire({**wire, "started_at": "2026-12-07T12:00:00"})
    with pytest.raises(ValueError, match="completed or failed"):
        wf_step_from_wire({**wire, "status": "running"})


def _job(attempt: int = 2) -> JobRecord:
    return JobRecord(
        "job-1", "ws", "tour", JobStatus.RUNNING, {}, None, None, "workflow", None, "wf-1",
        frozenset({"function"}), None, "tok.w1", attempt, 3, False, NOW, NOW, None,
    )  # fmt: skip


class _Server:
    def __init__(self, status: int = 200, answer: Any = None) -> None:
        self.status = status
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.url.path, json.loads(request.content)))
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "lost", "type": "x"}})
        return httpx.Response(200, json=self.answer)


@pytest.fixture
def in_job() -> Iterator[asyncio.Event]:
    cancel = asyncio.Event()
    loop = asyncio.new_event_loop()
    token = CURRENT_FUNCTION.set(FunctionJob(_job(), "workflow", "m:tour", loop, cancel))
    try:
        yield cancel
    finally:
        CURRENT_FUNCTION.reset(token)
        loop.close()


def _store(server: _Server) -> tuple[RemoteWorkflowStore, HttpControlPlane]:
    control = HttpControlPlane(
        ["http://server"], "hwt_x", frozenset({"function"}), transport=httpx.MockTransport(server)
    )
    control.worker_id = "tok.w1"
    return RemoteWorkflowStore(control), control


async def test_each_request_names_the_job_the_call_is_made_from(in_job: asyncio.Event) -> None:
    step = WorkflowStep(0, "effect", WorkflowStepKind.STEP, "completed", "ok")
    server = _Server(answer={"step": wf_step_to_wire(step)})
    store, control = _store(server)
    try:
        assert await store.record_workflow_step("job-1", step) == step
        with pytest.raises(WorkflowError, match="cannot write the workflow records of job"):
            await store.record_workflow_step("job-2", step)
        with pytest.raises(WorkflowError, match="transaction"):
            await store.run_transaction_step("job-1", step, None)
    finally:
        await control.close()
    ((path, body),) = server.requests
    assert path == "/worker/workflows/record"
    assert {k: body[k] for k in ("worker_id", "job_id", "attempt")} == {
        "worker_id": "tok.w1",
        "job_id": "job-1",
        "attempt": 2,
    }


async def test_a_refused_call_raises_lease_lost_and_stops_the_job(in_job: asyncio.Event) -> None:
    store, control = _store(_Server(status=409))
    stopped = control.subscribe(Channel.CANCEL)
    try:
        with pytest.raises(LeaseLostError, match="lost"):
            await store.get_workflow_event("job-9", "stage")
        assert await stopped.wait(1) == ["job-1"]
    finally:
        stopped.close()
        await control.close()


async def test_outside_a_function_step_it_refuses() -> None:
    store, control = _store(_Server())
    try:
        with pytest.raises(WorkflowError, match="no function step here"):
            await store.find_workflow("wf-1")
    finally:
        await control.close()
