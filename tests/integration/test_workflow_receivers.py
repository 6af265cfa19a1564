"""Receivers start workflows exactly once (the dedup key is the workflow id, so a replay
of the same events after downtime starts nothing twice), a YAML receiver's
``target_workflow`` and a ``type: workflow`` step run a Python workflow, and
``headwater.submit`` inside a workflow is one recorded call; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import headwater
from headwater.node import Node, NodeSettings
from headwater.sdk.receiver_node import node_for
from headwater.sdk.registry import set_default_registry
from headwater.store.base import JobFilter, JobStatus
from tests.integration.sdk_pipeline import eventually
from tests.polling import join

pytestmark = pytest.mark.timeout(120)

APP = '''
import asyncio
import headwater

registry = headwater.Registry(app="{app}")


class Replayer(headwater.EventReceiver):
    """Dispatches events 1..upto twice: the second pass is a backfill from a checkpoint
    that lagged behind (the DBOS seed's "at least once" invocation)."""

    def __init__(self, upto: int, prefix: str) -> None:
        self.upto, self.prefix = int(upto), prefix
        self._task = None

    async def start(self, ctx):
        self.ctx = ctx
        self._task = asyncio.create_task(self._run())

    async def _run(self):
        for _ in range(2):
            for n in range(1, self.upto + 1):
                message = {{"payload": {{"n": n}}, "metadata": {{"id": str(n)}}}}
                await self.ctx.dispatch([self.ctx.event(message, f"{{self.prefix}}:{{n}}")])
        await asyncio.Event().wait()

    async def stop(self):
        if self._task:
            self._task.cancel()

    async def wait(self):
        if self._task:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def describe(self):
        return {{}}


@headwater.step(name="double")
def double(n):
    return n * 2


@registry.on_receiver(Replayer, name="stacked", upto=3, prefix="st")
@headwater.workflow(name="process", registry=registry)
def process(payload, metadata):
    return {{"doubled": double(payload["n"]), "id": metadata["id"]}}


@headwater.workflow(name="explicit_wf", registry=registry)
def explicit_wf(payload, metadata):
    job = headwater.submit("noted", {{"n": payload["n"]}})
    return {{"doubled": double(payload["n"]), "job": job}}


registry.on_receiver(
    Replayer, name="explicit", upto=2, prefix="ex", target_workflow=explicit_wf
)


@headwater.workflow(name="noted", registry=registry)
def noted(n):
    return n
'''


@pytest.fixture
def app(tmp_path: Path) -> Iterator[str]:
    name = f"wfapp{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(APP.format(app=name)))
    previous = set_default_registry(None)
    try:
        yield str(path)
    finally:
        set_default_registry(previous)
        sys.modules.pop(name, None)


async def _finished(node: Node, task: str, n: int) -> list[Any]:
    jobs = await node.store.list_jobs(JobFilter(task=task, limit=100))
    done = [j for j in jobs if j.status.is_terminal]
    return jobs if len(done) >= n else []


async def test_receivers_start_each_workflow_once(app: str, db_url: str) -> None:
    node = node_for(app, NodeSettings(db_url=db_url))
    await node.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
    ]
    try:
        stacked = await eventually(lambda: _finished(node, "stacked", 3), what="3 workflows")
        # Each event dispatched twice, one run each: the dedup key is the workflow id.
        assert sorted(j.dedup_key for j in stacked) == ["st:1", "st:2", "st:3"]
        for job in stacked:
            assert job.status is JobStatus.COMPLETED, job.error
            n = int(job.dedup_key.rpartition(":")[2])
            assert job.output["handler"] == {"doubled": 2 * n, "id": str(n)}
            steps = await node.store.workflow_steps(job.id)
            assert [(s.seq, s.name) for s in steps] == [(0, "double")]
        async with headwater.WorkflowClient(db_url) as client:
            handle = await client.handle("st:2")
            assert handle.job_id == next(j.id for j in stacked if j.dedup_key == "st:2")

        explicit = await eventually(lambda: _finished(node, "explicit", 2), what="2 explicit")
        assert sorted(j.dedup_key for j in explicit) == ["ex:1", "ex:2"]
        noted = await eventually(lambda: _finished(node, "noted", 2), what="2 noted jobs")
        for job in explicit:
            assert job.status is JobStatus.COMPLETED, job.error
            steps = await node.store.workflow_steps(job.id)
            assert [s.name for s in steps] == ["submit:noted", "double"]
            # The submitted job's key is the call's place in the workflow: once per run.
            assert job.output["handler"]["job"] == steps[0].output
        assert sorted(j.dedup_key for j in noted) == ["api:ex:1/0", "api:ex:2/0"]
        assert {j.parent_job_id for j in noted} == {j.id for j in explicit}
    finally:
        stop.set()
        try:
            await join(tasks)
        finally:
            await node.close()


WORKSPACE = """
tasks:
  checkout:
    input:
      order: {{type: integer, required: true}}
    flow:
      run:
        type: workflow
        workflow: "{mod}:checkout"
        input: {{order: "{{{{ input.order }}}}"}}
triggers:
  replayed:
    type: custom
    receiver: "{mod}:Replayer"
    options: {{upto: 2, prefix: yaml}}
    target_workflow: "{mod}:process"
"""


async def test_yaml_receivers_and_steps_run_python_workflows(
    app: str, db_url: str, tmp_path: Path
) -> None:
    mod = Path(app).stem
    ws = tmp_path / "ws.yaml"
    ws.write_text(WORKSPACE.format(mod=mod))
    (tmp_path / f"{mod}.py").write_text(
        Path(app).read_text()
        + textwrap.dedent(
            """
            @headwater.workflow(registry=registry)
            def checkout(order):
                return {"order": order, "doubled": double(order)}
            """
        )
    )
    node = Node(ws, NodeSettings(db_url=db_url))
    await node.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
    ]
    try:
        outcome = await node.submit("checkout", {"order": 21})
        runs = await eventually(lambda: _finished(node, "replayed", 2), what="2 YAML runs")
        assert sorted(j.dedup_key for j in runs) == ["yaml:1", "yaml:2"]
        assert all(j.status is JobStatus.COMPLETED for j in runs), [j.error for j in runs]
        (job,) = await eventually(lambda: _finished(node, "checkout", 1), what="checkout")
        assert job.id == outcome.id and job.status is JobStatus.COMPLETED, job.error
        assert job.output["run"] == {"order": 21, "doubled": 42}
        steps = await node.store.workflow_steps(job.id)
        assert [s.name for s in steps] == ["double"]
    finally:
        stop.set()
        try:
            await join(tasks)
        finally:
            await node.close()
