"""Durable workflows on a remote worker (SQLite and PostgreSQL): a server (Node with no
worker of its own, the worker router on uvicorn, the workflow timers) and a
``RemoteWorker`` over real HTTP, in this process. The worker keeps every workflow
record through ``/worker/workflows/*``; the calls of a worker that lost its job are
refused. The kill -9 test is tests/e2e/test_remote_workflow_crash.py.

One server and one worker per backend for the whole module (starting them is most of
the time); each test uses workflow ids and log files of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn

from headwater.core.workflows import WorkflowStart, WorkflowStepKind
from headwater.dispatch.dispatcher import workflow_event
from headwater.distributed.tokens import WorkerTokenVerifier, issue_token
from headwater.engine.workflow_timers import run_workflow_timers
from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.server.routes_worker import create_worker_router
from headwater.server.routes_worker_workflows import WORKFLOW_BODY_LIMIT
from headwater.server.worker_service import WorkerService, WorkerServiceSettings
from headwater.store.base import JobRecord, JobStatus
from headwater.store.ids import tag_signature
from headwater.worker.remote import RemoteWorker, RemoteWorkerSettings
from headwater.worker.worker import WorkerSettings
from tests.conftest import PG_ADMIN_URL, require_service
from tests.integration import remote_workflow_app as app
from tests.pg_databases import create_database, drop_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP = Path(app.__file__)


@dataclass
class Cluster:
    node: Node
    url: str
    token: str
    token_id: str
    folder: Path
    worker: RemoteWorker

    def log(self) -> str:
        return str(self.folder / f"effects-{uuid.uuid4().hex[:8]}.log")

    async def start(self, task: str, workflow_id: str, **inputs: Any) -> str:
        start = WorkflowStart(task, inputs, workflow_id)
        return (await self.node.dispatcher.submit(workflow_event(start))).id

    async def wait_job(self, job_id: str, timeout: float = 30) -> JobRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = await self.node.store.get_job(job_id)
            if job is not None and job.status.is_terminal:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {job}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(check: Callable[[], Any], timeout: float = 20, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _workspace(folder: Path) -> Path:
    """The app under a module name of its own, and one task per workflow; ``elsewhere``
    needs a tag the remote worker lacks (the fencing test claims it by hand)."""
    module = f"rwf_{uuid.uuid4().hex[:8]}"
    shutil.copy(APP, folder / f"{module}.py")
    path = folder / "ws.yaml"
    path.write_text(
        app.workspace_yaml(module)
        + "  elsewhere:\n    flow:\n      workflow:\n"
        + f'        {{type: workflow, workflow: "{module}:child", tags: [elsewhere]}}\n'
    )
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    folder = tmp_path_factory.mktemp(f"remote-wf-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{folder}/hw.db"
    else:
        require_service("postgres")
        db_url = await create_database(PG_ADMIN_URL, prefix="hw_wf_remote")
    workspace = _workspace(folder)
    node = Node(workspace, NodeSettings(db_url=db_url, run_worker=False, kill_grace=0.5))
    await node.start()
    service = WorkerService(node, WorkerServiceSettings(stale_after=5.0, orphan_grace=5.0))
    issued = issue_token("wf-remote")
    await node.store.insert_worker_token(issued.record)
    api = create_app(node)
    api.include_router(
        create_worker_router(service, WorkerTokenVerifier(node.store, cache_secs=0.2))
    )
    api.state.body_limits["/worker/workflows"] = WORKFLOW_BODY_LIMIT  # as headwater server
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(server.serve())
    # As `headwater server` without --worker: the server wakes the waiting workflows.
    timers = asyncio.create_task(run_workflow_timers(node.store, stop))
    await _until(lambda: server.started, what="uvicorn")
    url = f"http://127.0.0.1:{port}"
    worker = RemoteWorker(
        RemoteWorkerSettings(
            servers=(url,),
            token=issued.token,
            tags=frozenset({"script", "function"}),
            cache_dir=folder / "cache",
            worker=WorkerSettings(heartbeat_interval=0.2, shutdown_timeout=0.5, concurrency=4),
            claim_wait=5.0,
            kill_grace=0.5,
        )
    )
    running = asyncio.create_task(worker.run(stop))
    try:
        await _until(lambda: worker.worker is not None and worker.worker.ready.is_set())
        yield Cluster(node, url, issued.token, issued.record.id, folder, worker)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        await timers
        service.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        await node.close()
        for name in [m for m in sys.modules if m.startswith("rwf_")]:
            del sys.modules[name]
        if request.param == "postgres":
            await drop_database(PG_ADMIN_URL, db_url)


def _lines(path: str) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return Path(path).read_text().split()
    return []


async def test_a_remote_worker_runs_steps_sleep_messages_events_and_a_child(
    cluster: Cluster,
) -> None:
    log, t = cluster.log(), uuid.uuid4().hex[:8]
    tour = await cluster.start("tour", f"tour-{t}", log=log)
    ping = await cluster.start("pinger", f"ping-{t}", log=log, target=f"tour-{t}")
    done = await cluster.wait_job(tour)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.output == {
        "workflow": {
            "first": "a",
            "message": {"from": "pinger", "stage": "waiting"},
            "child": 40,
            "last": "b",
        }
    }
    pinged = await cluster.wait_job(ping)
    assert pinged.status is JobStatus.COMPLETED, pinged.error
    assert pinged.output == {"workflow": "ping"}
    # Every step's side effect once, though the workflow functions ran several times.
    assert sorted(_lines(log)) == ["a", "b", "child-4", "ping"]

    store = cluster.node.store
    records = await store.workflow_steps(tour)
    assert [(r.kind, r.name) for r in records] == [
        (WorkflowStepKind.STEP, "effect"),
        (WorkflowStepKind.SLEEP, "sleep"),
        (WorkflowStepKind.SET_EVENT, "set_event:stage"),
        (WorkflowStepKind.RECV, "recv:go (deadline)"),
        (WorkflowStepKind.RECV, "recv:go"),
        (WorkflowStepKind.CHILD, "child"),
        (WorkflowStepKind.RESULT, f"result:tour-{t}/5 (deadline)"),
        (WorkflowStepKind.RESULT, f"result:tour-{t}/5"),
        (WorkflowStepKind.STEP, "effect"),
        (WorkflowStepKind.SET_EVENT, "set_event:stage"),
    ]
    # The sleep woke on time: the next call was recorded within a second or so of it.
    wake_at = datetime.fromisoformat(records[1].output["wake_at"])
    after = records[2].finished_at
    assert after is not None and timedelta(0) <= after - wake_at <= timedelta(seconds=1.5)
    assert await store.get_workflow_event(tour, "stage") == (True, "done")
    child = await store.find_workflow(f"tour-{t}/5")
    assert child is not None and child.parent_job_id == tour
    assert child.status is JobStatus.COMPLETED and child.output == {"workflow": 40}
    # The pinger's durable calls: the event it waited for, the send recorded with it.
    kinds = [r.kind for r in await store.workflow_steps(ping)]
    assert kinds == [
        WorkflowStepKind.GET_EVENT,
        WorkflowStepKind.GET_EVENT,
        WorkflowStepKind.SEND,
        WorkflowStepKind.STEP,
    ]
    # Ran on the remote worker (the server has none), and let go while waiting.
    assert done.worker_id is not None and done.worker_id.startswith(f"{cluster.token_id}.")
    lines = [x.line for x in await store.get_logs(tour)]
    assert any("the worker lets it go" in line for line in lines), lines


async def test_a_workflow_id_starts_one_run_and_a_transaction_step_fails_clearly(
    cluster: Cluster,
) -> None:
    log, t = cluster.log(), uuid.uuid4().hex[:8]
    first = await cluster.start("transactional", f"tx-{t}", log=log)
    again = await cluster.start("transactional", f"tx-{t}", log=log)
    assert again == first
    job = await cluster.wait_job(first)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and "remote worker" in job.error, job.error
    records = await cluster.node.store.workflow_steps(first)
    assert [(r.name, r.status) for r in records] == [
        ("effect", "completed"),
        ("remember", "failed"),
    ]
    assert _lines(log) == ["before"]


async def test_the_calls_of_a_worker_that_lost_its_job_are_refused(cluster: Cluster) -> None:
    store = cluster.node.store
    t = uuid.uuid4().hex[:8]
    job_id = await cluster.start("elsewhere", f"fence-{t}", log=cluster.log(), n=1)
    job = await store.get_job(job_id)
    assert job is not None
    me = f"{cluster.token_id}.fake{t}"  # a worker of this token that claimed it by hand
    (claimed,) = await store.claim_jobs(me, [tag_signature(job.tags)], 1)
    call = {"worker_id": me, "job_id": job_id, "attempt": claimed.attempt}

    def step(seq: int, output: Any = "ok") -> dict[str, Any]:
        return {
            "seq": seq,
            "name": "effect",
            "kind": "step",
            "status": "completed",
            "output": output,
        }

    auth = {"Authorization": f"Bearer {cluster.token}"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=auth) as client:

        async def record(body: dict[str, Any], seq: int = 0) -> httpx.Response:
            return await client.post("/worker/workflows/record", json={**body, "step": step(seq)})

        # Another worker of the token, another attempt: refused, nothing written.
        for stale in ({**call, "worker_id": f"{cluster.token_id}.other"}, {**call, "attempt": 9}):
            resp = await record(stale)
            assert resp.status_code == 409, resp.text
        assert await store.workflow_steps(job_id) == []
        # The claim's own calls are kept; a record's second write returns the first.
        assert (await record(call)).status_code == 200
        replay = await client.post(
            "/worker/workflows/record", json={**call, "step": step(0, "other")}
        )
        assert replay.json()["step"]["output"] == "ok"
        steps = await client.post("/worker/workflows/steps", json={**call, "of": job_id})
        assert [s["output"] for s in steps.json()["steps"]] == ["ok"]
        # It writes only its own records, and reads only its own (or its retried run's).
        other = await cluster.start("elsewhere", f"fence-other-{t}", log=cluster.log(), n=2)
        resp = await client.post("/worker/workflows/steps", json={**call, "of": other})
        assert resp.status_code == 404, resp.text
        wait = {**call, "job_id": other}  # its caller is the job it claims to be: fenced
        assert (await client.post("/worker/workflows/wait", json=wait)).status_code == 409

        # The worker goes silent: recovery requeues the job, and this worker claims it
        # again (attempt 2). The first claim's calls are refused from then on.
        recovered = await store.recover_stale_jobs(5.0)
        assert job_id in [r.id for r in recovered if r.requeued]
        for op, extra in (
            ("record", {"step": step(1)}),
            ("receive", {"topic": "t", "step": step(1)}),
            ("set-event", {"key": "k", "value": 1, "step": step(1)}),
            ("start", {"task": "child", "input": {"log": "x", "n": 3}, "workflow_id": f"c-{t}"}),
        ):
            resp = await client.post(f"/worker/workflows/{op}", json={**call, **extra})
            assert resp.status_code == 409, (op, resp.text)
        (again,) = await store.claim_jobs(me, [tag_signature(job.tags)], 1)
        assert again.attempt == claimed.attempt + 1
        assert (await record(call, seq=1)).status_code == 409
        assert (await record({**call, "attempt": again.attempt}, seq=1)).status_code == 200
        assert [s.seq for s in await store.workflow_steps(job_id)] == [0, 1]
        assert await store.find_workflow(f"c-{t}") is None  # no start went through

        # A token is needed, and the worker id must be the token's.
        async with httpx.AsyncClient(base_url=cluster.url) as anonymous:
            bare = await anonymous.post("/worker/workflows/record", json={**call, "step": step(2)})
        assert bare.status_code == 401
        other_token = issue_token("someone-else")
        await store.insert_worker_token(other_token.record)
        theirs = await client.post(
            "/worker/workflows/record",
            json={**call, "step": step(2)},
            headers={"Authorization": f"Bearer {other_token.token}"},
        )
        assert theirs.status_code == 401, theirs.text
        # Inputs are bounded: a name too long, a body over the limit.
        long = {**step(2), "name": "x" * 3000}
        resp = await client.post("/worker/workflows/record", json={**call, "step": long})
        assert resp.status_code == 422, resp.text
        huge = b'{"x": "' + b"a" * WORKFLOW_BODY_LIMIT + b'"}'
        resp = await client.post(
            "/worker/workflows/record",
            content=huge,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 413, resp.text
    await store.finish_job(job_id, me, JobStatus.CANCELLED)
    await store.request_cancel(other)
