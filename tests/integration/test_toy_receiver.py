"""A receiver from outside headwater, added with one catalog line (issue 16 item 5), is
a YAML trigger type, a Node runs it, the SDK decorates with it; and a receiver whose
client library is missing fails at `validate` and at start with the install line."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import headwater
from headwater.errors import RegistrationError
from headwater.node import Node, NodeSettings
from headwater.sdk.registry import Registry
from headwater.store.base import JobFilter, JobStatus
from headwater.workspace.loader import check_workspace
from headwater.workspace.receiver_triggers import RECEIVERS
from tests.integration.toy_receiver import ToyTrigger, register
from tests.polling import eventually, join, stays_true_for

pytestmark = pytest.mark.timeout(120)

WORKSPACE = """\
actions:
  show:
    type: script
    env:
      N: "{{ input.payload.n }}"
    script: echo "toy ${N}"
tasks:
  handle:
    input:
      payload: { type: object, required: true }
    flow:
      show:
        action: show
        input:
          payload: "{{ input.payload }}"
triggers:
  toys:
    type: toy
    target_task: handle
    prefix: demo
    count: 3
"""


@pytest.fixture
def toy() -> Iterator[None]:
    register()
    try:
        yield
    finally:
        RECEIVERS.unregister("toy")


def _write(tmp_path: Path, text: str = WORKSPACE) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    return path


def test_an_unregistered_type_is_refused(tmp_path: Path) -> None:
    report = check_workspace(_write(tmp_path), environ={})
    assert any("unknown type 'toy'" in p.message for p in report.errors), report.problems


def test_a_toy_trigger_validates_and_a_bad_key_has_its_line(toy: None, tmp_path: Path) -> None:
    report = check_workspace(_write(tmp_path), environ={})
    assert report.valid, report.problems
    assert report.workspace is not None
    assert isinstance(report.workspace.triggers["toys"], ToyTrigger)

    bad = check_workspace(_write(tmp_path, WORKSPACE.replace("count: 3", "cuont: 3")), {})
    (problem,) = bad.errors
    assert "cuont" in problem.message
    assert problem.file is not None and problem.file.endswith("toy.yaml")
    assert problem.line == WORKSPACE.splitlines().index("    count: 3") + 1


async def _jobs_done(node: Node, task: str, n: int) -> list[Any]:
    jobs = await node.store.list_jobs(JobFilter(task=task, limit=100))
    done = [j for j in jobs if j.status.is_terminal]
    return done if len(done) >= n else []


async def _serve(node: Node) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    await node.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
    ]
    return stop, tasks


async def _close(node: Node, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stop.set()
    try:
        await join(tasks)
    finally:
        await node.close()


async def test_a_node_runs_the_toy_trigger_and_its_messages_become_jobs(
    toy: None, db_url: str, tmp_path: Path
) -> None:
    node = Node(_write(tmp_path), NodeSettings(db_url=db_url))
    stop, tasks = await _serve(node)
    try:
        jobs = await eventually(lambda: _jobs_done(node, "handle", 3), what="3 toy jobs")
        assert {j.status for j in jobs} == {JobStatus.COMPLETED}, [j.error for j in jobs]
        assert sorted(j.input["payload"]["n"] for j in jobs) == [1, 2, 3]
        assert {j.source_type for j in jobs} == {"toy"}
    finally:
        await _close(node, stop, tasks)


def toy_handler(payload: dict[str, Any]) -> dict[str, Any]:
    return {"twice": payload["n"] * 2}


def test_the_sdk_decorator_takes_the_models_argument_and_checks_its_fields(toy: None) -> None:
    registry = Registry(app="toyapp")
    previous = headwater.set_default_registry(registry)
    try:
        headwater.on("toy", "sdk", name="toy-fn", count=2, retry=1)(toy_handler)
        with pytest.raises(RegistrationError, match="cuont"):
            headwater.on("toy", "sdk", name="bad", cuont=2)
    finally:
        headwater.set_default_registry(previous)
    (reg,) = registry.receivers
    assert isinstance(reg.trigger, ToyTrigger)
    assert (reg.trigger.prefix, reg.trigger.count, reg.trigger.target_task) == ("sdk", 2, "toy-fn")
    assert reg.retry is not None and reg.retry.count == 1


async def test_an_sdk_bound_toy_receiver_runs_its_function(
    toy: None, db_url: str, tmp_path: Path
) -> None:
    registry = Registry(app="toyapp")
    registry.on("toy", "sdk", name="toy-fn", count=2)(toy_handler)
    workspace = registry.workspace(tmp_path)
    node = Node(
        tmp_path,
        NodeSettings(db_url=db_url),
        loader=lambda _p: workspace,
        functions=registry.functions(),
    )
    stop, tasks = await _serve(node)
    try:
        jobs = await eventually(lambda: _jobs_done(node, "toy-fn", 2), what="2 toy-fn jobs")
        assert sorted(j.output["handler"]["twice"] for j in jobs) == [2, 4]
    finally:
        await _close(node, stop, tasks)


INSTALL = "pip install 'headwater[toy]'"


async def test_a_missing_client_fails_validate_and_start_without_retrying(
    toy: None, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ToyTrigger, "client_modules", ("headwater_test_no_such_client",))
    path = _write(tmp_path)
    report = check_workspace(path, environ={})
    (problem,) = report.errors
    assert INSTALL in problem.message
    assert problem.line == WORKSPACE.splitlines().index("    type: toy") + 1

    node = Node(path, NodeSettings(db_url=db_url))
    stop, tasks = await _serve(node)
    try:

        async def failed() -> dict[str, Any] | None:
            state = dict((await node.trigger_states())["toys"])
            return state if state["state"] == "failed" else None

        state = await eventually(failed, what="the toy trigger to fail")
        assert INSTALL in state["last_error"]

        async def not_retried() -> bool:
            state = (await node.trigger_states())["toys"]
            return state["state"] == "failed" and state["restarts"] == 0

        await stays_true_for(not_retried, 1.5, what="no restart")
    finally:
        await _close(node, stop, tasks)


def toy_batch_handler(events: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return {"ns": [e["payload"]["n"] for e in events], "key": key}


async def test_an_sdk_receiver_with_a_batch_calls_its_function_once_with_the_batch(
    toy: None, sqlite_url: str, tmp_path: Path
) -> None:
    """Debounce/batch through the SDK: the node's receiver buffers the messages, its
    flusher makes one job when the batch is full, the worker calls the function with
    ``events`` (each message's payload and metadata, in order) and ``key``."""
    registry = Registry(app="toyapp")
    registry.on("toy", "sdk", name="toy-batch", count=3, batch={"size": 3, "window": "1m"})(
        toy_batch_handler
    )
    workspace = registry.workspace(tmp_path)
    node = Node(
        tmp_path,
        NodeSettings(db_url=sqlite_url),
        loader=lambda _p: workspace,
        functions=registry.functions(),
    )
    stop, tasks = await _serve(node)
    try:
        (job,) = await eventually(lambda: _jobs_done(node, "toy-batch", 1), what="the batch job")
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output["handler"] == {"ns": [1, 2, 3], "key": ""}
    finally:
        await _close(node, stop, tasks)
