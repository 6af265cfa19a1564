"""Re-run from a step, bulk retry and cancel by filter, pausing tasks and triggers: on
SQLite and PostgreSQL (the claim's pause predicate also in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.server.routes_webhooks import create_webhook_router
from headwater.store.base import (
    Channel,
    JobFilter,
    JobStatus,
    NewJob,
    PauseKind,
    StepStatus,
    StepUpdate,
    Store,
)
from headwater.worker.worker import WorkerSettings
from tests.integration.test_engine import write_workspace
from tests.polling import eventually, stays_true_for

WORKSPACE = """
actions:
  first:
    type: script
    script: |
      echo run >> {tmp}/first_runs
      echo 'OUTPUT: {{"v": 41}}'
  second:
    type: script
    input:
      n: {{ type: integer }}
    script: |
      [ -f {tmp}/ok ] || exit 3
      echo "OUTPUT: {{\\"v\\": $(( {{{{ input.n }}}} + 1 ))}}"
  third:
    type: script
    script: echo run >> {tmp}/third_runs
  quick:
    type: script
    script: "true"
tasks:
  pipe:
    flow:
      a: {{ action: first }}
      b: {{ action: second, depends_on: [a], input: {{ n: "{{{{ a.output.v }}}}" }} }}
      c: {{ action: third, depends_on: [b] }}
  x:
    input:
      n: {{ type: integer }}
    flow:
      s: {{ action: quick }}
  y:
    flow:
      s: {{ action: quick }}
triggers:
  hook:
    type: webhook
    task: y
"""


def node_for(tmp_path: Path, db_url: str, worker: bool) -> Node:
    text = WORKSPACE.format(tmp=tmp_path)
    return Node(
        write_workspace(tmp_path, text),
        NodeSettings(
            db_url=db_url,
            run_worker=worker,
            kill_grace=1.0,
            worker=WorkerSettings(safety_wakeup=1.0),
        ),
    )


@asynccontextmanager
async def running(tmp_path: Path, db_url: str, worker: bool = True) -> AsyncIterator[Node]:
    """A node with its worker running (or none), and its paused-trigger view read."""
    node = node_for(tmp_path, db_url, worker)
    await node.start()
    await node.paused_triggers.refresh()
    stop = asyncio.Event()
    task = asyncio.create_task(node.run_worker(stop))
    try:
        yield node
    finally:
        stop.set()
        await task
        await node.close()


@asynccontextmanager
async def api(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(node)
    app.include_router(create_webhook_router(node.trigger_ctx))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        yield client


async def status_of(node: Node, job_id: str) -> JobStatus | None:
    job = await node.store.get_job(job_id)
    return job.status if job is not None else None


async def final(node: Node, job_id: str) -> Any:
    async def done() -> Any:
        job = await node.store.get_job(job_id)
        return job if job is not None and job.status.is_terminal else None

    return await eventually(done, timeout=20, what=f"job {job_id} to finish")


# -- re-run from a step --------------------------------------------------------------


async def test_rerun_from_a_step_keeps_the_earlier_outputs_and_runs_from_there(
    tmp_path: Path, db_url: str
) -> None:
    async with running(tmp_path, db_url) as node, api(node) as client:
        first = (await client.post("/api/tasks/pipe/run", json={})).json()["job_id"]
        failed = await final(node, first)
        assert failed.status is JobStatus.FAILED
        steps = {s.name: s.status for s in failed.steps}
        assert steps == {"a": "completed", "b": "failed", "c": "skipped"}

        # c cannot be the start: b before it did not complete.
        refused = await client.post(f"/api/jobs/{first}/retry", json={"from_step": "c"})
        assert refused.status_code == 409
        assert "b (failed)" in refused.json()["error"]["message"]
        missing = await client.post(f"/api/jobs/{first}/retry", json={"from_step": "zz"})
        assert missing.status_code == 404

        (tmp_path / "ok").touch()
        made = await client.post(f"/api/jobs/{first}/retry", json={"from_step": "b"})
        assert made.status_code == 201, made.text
        rerun = made.json()
        assert rerun["source_type"] == "retry"
        assert rerun["source_id"] == first
        # Stored with the new job (the worker may have run b already: it is quick).
        assert ("a", "completed") in [(s["name"], s["status"]) for s in rerun["steps"]]

        done = await final(node, rerun["id"])
        assert done.status is JobStatus.COMPLETED, done.error
        assert done.output == {"a": {"v": 41}, "b": {"v": 42}}
        assert (tmp_path / "first_runs").read_text() == "run\n"  # a did not run again
        assert (tmp_path / "third_runs").read_text() == "run\n"  # c ran, once
        kept = next(s for s in done.steps if s.name == "a")
        assert kept.finished_at == next(s for s in failed.steps if s.name == "a").finished_at

        again = await client.post(f"/api/jobs/{rerun['id']}/retry", json={"from_step": "a"})
        assert again.status_code == 201
        assert again.json()["source_id"] == rerun["id"]  # from the first step: nothing kept
        await final(node, again.json()["id"])
        assert (tmp_path / "first_runs").read_text() == "run\nrun\n"


# -- bulk cancel and retry -----------------------------------------------------------


async def test_bulk_cancel_and_retry_by_filter_with_a_dry_run_that_lists_them(
    tmp_path: Path, db_url: str
) -> None:
    async with running(tmp_path, db_url, worker=False) as node, api(node) as client:

        async def run(task: str, **job_input: Any) -> str:
            made = await client.post(f"/api/tasks/{task}/run", json={"input": job_input})
            return str(made.json()["job_id"])

        xs = [await run("x", n=i) for i in range(3)]
        ys = [await run("y") for _ in range(2)]
        middle = (await node.store.get_job(xs[1])).created_at  # type: ignore[union-attr]

        dry = (await client.post("/api/jobs/cancel", json={"task": "x", "dry_run": True})).json()
        assert dry["dry_run"] is True
        assert [j["id"] for j in dry["jobs"]] == xs[::-1]  # newest first
        assert {await status_of(node, i) for i in xs + ys} == {JobStatus.PENDING}

        # A time range narrows it: created at or after the second x.
        ranged = await client.post(
            "/api/jobs/cancel",
            json={"task": "x", "created_after": middle.isoformat(), "dry_run": True},
        )
        assert [j["id"] for j in ranged.json()["jobs"]] == [xs[2], xs[1]]

        done = (await client.post("/api/jobs/cancel", json={"task": "x"})).json()
        assert sorted(j["id"] for j in done["jobs"]) == sorted(xs)
        assert {j["outcome"] for j in done["jobs"]} == {"cancelled"}
        assert {await status_of(node, i) for i in xs} == {JobStatus.CANCELLED}
        assert {await status_of(node, i) for i in ys} == {JobStatus.PENDING}

        body = {"task": "x", "status": "cancelled"}
        dry = (await client.post("/api/jobs/retry", json={**body, "dry_run": True})).json()
        assert sorted(j["id"] for j in dry["jobs"]) == sorted(xs)
        assert all(j["new_job_id"] is None for j in dry["jobs"])
        retried = (await client.post("/api/jobs/retry", json=body)).json()
        new_ids = [j["new_job_id"] for j in retried["jobs"]]
        assert len(set(new_ids)) == 3
        for item in retried["jobs"]:
            new = await node.store.get_job(item["new_job_id"])
            assert new is not None
            assert (new.source_type, new.source_id) == ("retry", item["id"])
            assert new.input == (await node.store.get_job(item["id"])).input  # type: ignore[union-attr]
        # Retrying the same selection again touches nothing: each was retried.
        twice = (await client.post("/api/jobs/retry", json=body)).json()
        assert twice["jobs"] == []
        assert len(twice["skipped"]) == 3
        assert all("already retried" in s["reason"] for s in twice["skipped"])

        limited = await client.post("/api/jobs/cancel", json={"task": "y", "limit": 1})
        assert [j["id"] for j in limited.json()["jobs"]] == [ys[1]]
        assert limited.json()["truncated"] is True

        no_filter = await client.post("/api/jobs/cancel", json={"dry_run": True})
        assert no_filter.status_code == 422
        wrong = await client.post("/api/jobs/cancel", json={"status": "failed"})
        assert wrong.status_code == 422
        wrong = await client.post("/api/jobs/retry", json={"status": "pending"})
        assert wrong.status_code == 422


# -- pause and resume ----------------------------------------------------------------


async def test_a_paused_tasks_jobs_stay_pending_across_a_restart_and_start_on_resume(
    tmp_path: Path, db_url: str
) -> None:
    async with running(tmp_path, db_url) as node, api(node) as client:
        paused = await client.post("/api/tasks/x/pause")
        assert paused.json() == {"kind": "task", "name": "x", "paused": True, "changed": True}
        again = await client.post("/api/tasks/x/pause")
        assert again.json()["changed"] is False
        assert (await client.post("/api/tasks/nope/pause")).status_code == 404

        held = (await client.post("/api/tasks/x/run", json={"input": {"n": 1}})).json()["job_id"]
        other = (await client.post("/api/tasks/y/run", json={})).json()["job_id"]
        assert (await final(node, other)).status is JobStatus.COMPLETED
        await stays_true_for(
            lambda: status_of_is(node, held, JobStatus.PENDING), 0.5, what="x pending"
        )
        waiting = (await client.get(f"/api/jobs/{held}")).json()["waiting_for"]
        assert waiting == "task x is paused (headwater resume task x)"
        tasks = {t["name"]: t["paused"] for t in (await client.get("/api/tasks")).json()}
        assert tasks == {"pipe": False, "x": True, "y": False}
        metrics = (await client.get("/metrics")).text
        assert 'headwater_paused{kind="task",name="x"} 1.0' in metrics

    # A restart: the pause is in the store, the job still waits.
    async with running(tmp_path, db_url) as node, api(node) as client:
        await stays_true_for(
            lambda: status_of_is(node, held, JobStatus.PENDING), 0.5, what="x pending"
        )
        resumed = await client.post("/api/tasks/x/resume")
        assert resumed.json()["changed"] is True
        assert (await final(node, held)).status is JobStatus.COMPLETED
        assert (await client.get("/api/paused")).json() == []
        assert "headwater_paused{" not in (await client.get("/metrics")).text


async def status_of_is(node: Node, job_id: str, status: JobStatus) -> bool:
    return await status_of(node, job_id) is status


async def test_a_paused_webhook_answers_503_with_retry_after_until_resumed(
    tmp_path: Path, db_url: str
) -> None:
    async with running(tmp_path, db_url, worker=False) as node, api(node) as client:
        assert (await client.post("/api/triggers/hook/pause")).json()["changed"] is True
        listed = {t["name"]: t["paused"] for t in (await client.get("/api/triggers")).json()}
        assert listed == {"hook": True}
        refused = await client.post("/hooks/hook", json={})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "30"
        assert refused.json()["error"]["type"] == "paused"
        assert await node.store.list_jobs(JobFilter(source_type="webhook")) == []
        await client.post("/api/triggers/hook/resume")
        # Another server learns of a pause from the store, on its own loop.
        other = node_for(tmp_path, db_url, worker=False)
        await other.start()
        stop = asyncio.Event()
        watching = asyncio.create_task(other.paused_triggers.run(stop))
        try:
            async with api(other) as elsewhere:
                assert (await elsewhere.post("/hooks/hook", json={})).status_code < 300
                await client.post("/api/triggers/hook/pause")

                async def refused_there() -> bool:
                    return (await elsewhere.post("/hooks/hook", json={})).status_code == 503

                await eventually(refused_there, timeout=5, what="the other server to refuse")
                await client.post("/api/triggers/hook/resume")
        finally:
            stop.set()
            await watching
            await other.close()
        accepted = await client.post("/hooks/hook", json={})
        assert accepted.status_code in (200, 201, 202), accepted.text
        assert (await client.post("/api/triggers/nope/pause")).status_code == 404


# -- the store: the claim's predicate ------------------------------------------------


async def test_the_claim_leaves_a_paused_tasks_jobs_and_resume_wakes_workers(
    store: Store,
) -> None:
    ids = [
        o.id
        for o in await store.insert_jobs(
            [NewJob("ws", task, {}, "api", tags=frozenset()) for task in ("p", "q", "p")]
        )
    ]
    assert await store.set_paused(PauseKind.TASK, "p", True) is True
    assert await store.set_paused(PauseKind.TASK, "p", True) is False
    assert await store.set_paused(PauseKind.TRIGGER, "t", True) is True
    listed = [(p.kind, p.name) for p in await store.list_paused()]
    assert listed == [(PauseKind.TASK, "p"), (PauseKind.TRIGGER, "t")]
    assert [p.name for p in await store.list_paused(PauseKind.TRIGGER)] == ["t"]
    assert abs((await store.list_paused())[0].paused_at - datetime.now(UTC)) < timedelta(minutes=1)

    claimed = await store.claim_jobs("w1", [""], 10)
    assert [j.id for j in claimed] == [ids[1]]
    assert await store.claim_jobs("w1", [""], 10) == []

    with store.subscribe(Channel.JOBS) as jobs_sub:
        if getattr(store, "dialect", "") == "postgresql":
            await store.wait_listening(timeout=5)  # type: ignore[attr-defined]
        assert await store.set_paused(PauseKind.TASK, "p", False) is True
        assert await jobs_sub.wait(timeout=5)
    assert await store.set_paused(PauseKind.TASK, "p", False) is False
    claimed = await store.claim_jobs("w1", [""], 10)
    assert [j.id for j in claimed] == [ids[0], ids[2]]  # in their order, none lost


async def test_a_job_inserted_with_steps_is_claimed_with_them(store: Store) -> None:
    done = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    kept = [
        StepUpdate("a", "first", StepStatus.COMPLETED, 0, {"v": [1, "x"]}, None, 1, done, done),
        StepUpdate("s", None, StepStatus.SKIPPED, error="skipped: when was false"),
    ]
    with store.subscribe(Channel.JOBS) as jobs_sub:
        if getattr(store, "dialect", "") == "postgresql":
            await store.wait_listening(timeout=5)  # type: ignore[attr-defined]
        job_id = await store.insert_job_with_steps(
            NewJob("ws", "pipe", {"n": 1}, "retry", source_id="old", tags=frozenset({"t"})),
            kept,
        )
        assert await jobs_sub.wait(timeout=5)
    (claimed,) = await store.claim_jobs("w1", ["t"], 10)
    assert claimed.id == job_id
    assert (claimed.source_type, claimed.source_id, claimed.input) == ("retry", "old", {"n": 1})
    steps = {s.name: s for s in claimed.steps}
    assert steps["a"].output == {"v": [1, "x"]}
    assert (steps["a"].status, steps["a"].finished_at) == (StepStatus.COMPLETED, done)
    assert steps["s"].status is StepStatus.SKIPPED
