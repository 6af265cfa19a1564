"""Functions bound to receivers: each message becomes a job whose one step calls the
function in the worker (``type: function``), for a built-in receiver (Redis Streams)
and for a user's own ``EventReceiver`` with a checkpoint and backfill."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from headwater.node import Node, NodeSettings
from headwater.sdk.receiver_node import node_for
from headwater.sdk.registry import set_default_registry
from headwater.store.base import JobFilter, JobStatus
from tests.integration.sdk_pipeline import eventually, shared_redis_url
from tests.polling import join

pytestmark = pytest.mark.timeout(120)

APP = '''
import asyncio
import headwater

registry = headwater.Registry(app="{app}", secrets={{"upto": "{{{{ env.HW_TEST_UPTO }}}}"}})
SEEN = []


class Counter(headwater.EventReceiver):
    """Emits events 1..upto, resuming after its checkpoint (the DBOS seed's backfill)."""

    def __init__(self, upto: int) -> None:
        self.upto = int(upto)
        self._task = None

    async def start(self, ctx):
        self.ctx = ctx
        self._task = asyncio.create_task(self._run())

    async def _run(self):
        checkpoint = await self.ctx.get_checkpoint() or {{"done": 0}}
        for n in range(checkpoint["done"] + 1, self.upto + 1):
            message = {{"payload": {{"n": n}}, "metadata": {{"id": str(n)}}}}
            event = self.ctx.event(message, f"counter:{{n}}")
            await self.ctx.dispatch([event])
            await self.ctx.put_checkpoint({{"done": n}})
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
        return {{"upto": self.upto}}


@registry.on_receiver(Counter, name="counted", upto="{{{{ secret.upto }}}}")
def counted(payload, metadata):
    SEEN.append(payload["n"])
    return {{"twice": payload["n"] * 2}}


@registry.on_redis_stream("{stream}", name="from-redis", url="{redis}", start_id="0")
async def from_redis(payload, metadata):
    await asyncio.sleep(0)
    if payload.get("fail"):
        raise RuntimeError("cannot take this one")
    return {{"got": payload, "id": metadata["id"]}}
'''


def _write_app(tmp_path: Path, stream: str) -> str:
    app = f"sdkapp{uuid.uuid4().hex[:8]}"
    text = APP.format(app=app, stream=stream, redis=shared_redis_url())
    (tmp_path / f"{app}.py").write_text(text)
    return str(tmp_path / f"{app}.py")


async def _jobs(node: Node, task: str) -> list[Any]:
    return await node.store.list_jobs(JobFilter(task=task, limit=100))


async def _finished(node: Node, task: str, n: int) -> list[Any]:
    jobs = await _jobs(node, task)
    done = [j for j in jobs if j.status.is_terminal]
    return done if len(done) >= n else []


async def _run_node(spec: str, db_url: str) -> tuple[Node, asyncio.Event, list[Any]]:
    node = node_for(spec, NodeSettings(db_url=db_url))
    await node.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
    ]
    return node, stop, tasks


async def test_receiver_bound_functions_run_as_jobs(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = f"stream:test:recv:{uuid.uuid4().hex[:8]}"
    spec = _write_app(tmp_path, stream)
    previous = set_default_registry(None)
    monkeypatch.setenv("HW_TEST_UPTO", "3")  # the app's secret: how far the counter goes
    node, stop, tasks = await _run_node(spec, db_url)
    try:
        redis = node_redis()
        await redis.xadd(stream, {"payload": '{"order": 1}'})
        await redis.xadd(stream, {"payload": '{"fail": true}'})
        jobs = await eventually(lambda: _finished(node, "from-redis", 2), what="2 redis jobs")
        (bad_job, ok_job) = sorted(jobs, key=lambda j: "order" in j.input["payload"])
        assert ok_job.status is JobStatus.COMPLETED, ok_job.error
        assert ok_job.output["handler"]["got"] == {"order": 1}
        assert ok_job.source_type == "redis_stream"
        assert ok_job.source_id == f"{node.workspace().name}/from-redis"
        assert bad_job.status is JobStatus.FAILED
        assert "RuntimeError: cannot take this one" in (bad_job.error or "")
        logs = await node.store.get_logs(bad_job.id)
        assert any("Traceback" in r.line for r in logs)

        counted = await eventually(lambda: _finished(node, "counted", 3), what="3 counted")
        assert sorted(j.output["handler"]["twice"] for j in counted) == [2, 4, 6]
        await redis.delete(stream)
        await redis.aclose()
    finally:
        stop.set()
        try:
            await join(tasks)
        finally:
            await node.close()

    # Restarted with more to emit: it resumes after its checkpoint, no job twice.
    monkeypatch.setenv("HW_TEST_UPTO", "5")
    node, stop, tasks = await _run_node(spec, db_url)
    try:
        counted = await eventually(lambda: _finished(node, "counted", 5), what="5 counted")
        assert sorted(j.input["payload"]["n"] for j in counted) == [1, 2, 3, 4, 5]
    finally:
        stop.set()
        try:
            await join(tasks)
        finally:
            await node.close()
            set_default_registry(previous)
        sys.modules.pop(Path(spec).stem, None)


def node_redis() -> Any:
    from headwater.sdk.redis_util import connect

    return connect(shared_redis_url())


def test_the_app_text_is_valid_python() -> None:
    compile(textwrap.dedent(APP.format(app="x", stream="s", redis="r")), "app", "exec")
