"""The worker protocol on a real store (SQLite and PostgreSQL): a server (Node + worker
router on uvicorn, in this process) and a remote worker over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from headwater.distributed.ownership import TriggerOwnership, lease_name
from headwater.distributed.tokens import WorkerTokenVerifier, issue_token
from headwater.errors import AuthError, ConflictError, StaleConsumerError
from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.server.routes_worker import create_worker_router
from headwater.server.worker_service import (
    ConsumerLease,
    WorkerService,
    WorkerServiceSettings,
    consumer_lease_name,
)
from headwater.store.base import JobFilter, JobRecord, JobStatus, NewJob, StepStatus, Store
from headwater.triggers.event_source import CONSUMER_SOURCE_TYPE, consumer_source_id
from headwater.worker.remote import RemoteWorker, RemoteWorkerSettings
from headwater.worker.worker import WorkerSettings
from tests.integration.test_store_leases import live_token
from tests.polling import stays_true_for

SECRET = "s3cr3t-value-xyz"

WORKSPACE = f"""
secrets:
  token: "{SECRET}"
actions:
  echo:
    type: script
    script: |
      echo "using {{{{ secret.token }}}}"
      echo 'OUTPUT: {{"n": {{{{ input.n }}}}}}'
  gpu-thing:
    type: script
    tags: [gpu]
    script: echo gpu
  consume:
    type: script
    language: python
    script: |
      import json, time
      for n in range(5):
          print("OUTPUT: " + json.dumps({{"n": n}}), flush=True)
      time.sleep(60)
  child:
    type: task
    task: hello
  boom:
    type: script
    script: "exit 3"
  repeat:
    type: script
    script: |
      test "{{{{ input.word }}}}" = "{SECRET}" || exit 3
      echo 'OUTPUT: {{"same": true, "word": "{{{{ input.word }}}}"}}'
tasks:
  hooked:
    flow:
      fail: {{ action: boom }}
    on_error:
      - action: echo
        input: {{ n: 5 }}
  repeat:
    input:
      word: {{ type: string }}
    flow:
      say: {{ action: repeat, input: {{ word: "{{{{ input.word }}}}" }} }}
  hello:
    input:
      n: {{ type: integer, default: 1 }}
    flow:
      say: {{ action: echo, input: {{ n: "{{{{ input.n }}}}" }} }}
  gpu:
    flow:
      run: {{ action: gpu-thing }}
  parent:
    flow:
      call: {{ action: child, input: {{ n: 7 }} }}
  consumer:
    flow:
      read: {{ action: consume }}
  loop:
    flow:
      fan: {{ action: echo, for_each: [1, 2], input: {{ n: "{{{{ each.item }}}}" }} }}
  gated:
    input:
      n: {{ type: integer }}
    on_suspended:
      - action: echo
        input: {{ n: 9 }}
    flow:
      gate: {{ type: approval, message: "go with {{{{ input.n }}}}?" }}
      after:
        action: echo
        depends_on: [gate]
        input: {{ n: "{{{{ gate.output.input.n }}}}" }}
triggers:
  stream:
    type: event_source
    task: consumer
    target_task: hello
    dedup_key: "{{{{ payload.n }}}}"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    node: Node
    service: WorkerService
    url: str
    token: str
    tmp: Path

    @property
    def store(self) -> Store:
        return self.node.store

    async def submit(self, task: str, **payload: Any) -> str:
        outcome = await self.node.submit(task, payload)
        return outcome.id

    async def wait_job(self, job_id: str, timeout: float = 30) -> JobRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = await self.store.get_job(job_id)
            if job is not None and job.status.is_terminal:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {job}")

    @contextlib.asynccontextmanager
    async def remote_worker(
        self, tags: frozenset[str] = frozenset({"script"})
    ) -> AsyncIterator[RemoteWorker]:
        worker = RemoteWorker(
            RemoteWorkerSettings(
                servers=(self.url,),
                token=self.token,
                tags=tags,
                cache_dir=self.tmp / "cache",
                worker=WorkerSettings(heartbeat_interval=0.2, shutdown_timeout=0.5),
                claim_wait=5.0,
                kill_grace=0.5,
            )
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await _until(lambda: worker.worker is not None and worker.worker.ready.is_set())
            yield worker
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


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


@pytest.fixture
async def cluster(db_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    node = Node(path, NodeSettings(db_url=db_url, run_worker=False, kill_grace=0.5))
    await node.start()
    service = WorkerService(node, WorkerServiceSettings(stale_after=1.0, orphan_grace=0.5))
    issued = issue_token("test")
    await node.store.insert_worker_token(issued.record)
    app = create_app(node)
    app.include_router(
        create_worker_router(service, WorkerTokenVerifier(node.store, cache_secs=0.2))
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    await _until(lambda: server.started, what="uvicorn")
    try:
        yield Cluster(node, service, f"http://127.0.0.1:{port}", issued.token, tmp_path)
    finally:
        service.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        await node.close()


# -- tokens ------------------------------------------------------------------------------


async def test_worker_tokens_are_stored_hashed_and_refused_when_wrong_or_revoked(
    store: Store,
) -> None:
    issued = issue_token("host-a")
    await store.insert_worker_token(issued.record)
    (stored,) = await store.list_worker_tokens()
    assert issued.token.split("_")[2] not in repr(stored)  # only the digest is kept
    verifier = WorkerTokenVerifier(store, cache_secs=0)
    assert (await verifier.verify(issued.token)).id == issued.record.id

    token_id = issued.record.id
    wrong = f"hwt_{token_id}_{'0' * 64}"
    for bad in (wrong, f"hwt_{'f' * 12}_{'0' * 64}", "Bearer nonsense", issued.token + "x"):
        with pytest.raises(AuthError):
            await verifier.verify(bad)
    assert await store.revoke_worker_token(token_id)
    with pytest.raises(AuthError, match="revoked"):
        await verifier.verify(issued.token)
    assert not await store.revoke_worker_token(token_id)  # already revoked


async def test_worker_routes_need_a_valid_token(cluster: Cluster) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=cluster.url) as client:
        assert (await client.get("/worker/workspace")).status_code == 401
        bad = {"Authorization": "Bearer hwt_000000000000_" + "0" * 64}
        assert (await client.get("/worker/workspace", headers=bad)).status_code == 401
        good = {"Authorization": f"Bearer {cluster.token}"}
        doc = (await client.get("/worker/workspace", headers=good)).json()
        assert doc["secrets"] == {"token": SECRET}
        assert doc["name"] == "ws"


async def test_a_token_acts_only_for_workers_under_its_own_id(cluster: Cluster) -> None:
    import httpx

    other = issue_token("other-host")
    await cluster.store.insert_worker_token(other.record)
    mine = cluster.token.split("_")[1]
    body = {"name": "h:1", "tags": ["script"]}
    async with httpx.AsyncClient(base_url=cluster.url) as client:
        as_other = {"Authorization": f"Bearer {other.token}"}
        ok = await client.post(
            "/worker/register",
            json={**body, "worker_id": f"{other.record.id}.a1"},
            headers=as_other,
        )
        assert ok.status_code == 200, ok.text
        # The other token may not register, heartbeat or finish as this token's worker.
        for path, extra in (
            ("/worker/register", body),
            ("/worker/heartbeat", {}),
            ("/worker/sync", {}),
        ):
            refused = await client.post(
                path, json={**extra, "worker_id": f"{mine}.b2"}, headers=as_other
            )
            assert refused.status_code == 401, (path, refused.text)
            assert "does not belong to this worker token" in refused.text


# -- remote worker end to end ----------------------------------------------------------


async def test_a_remote_worker_runs_jobs_sub_tasks_and_masks_secrets(cluster: Cluster) -> None:
    async with cluster.remote_worker():
        job = await cluster.wait_job(await cluster.submit("hello", n=3))
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output == {"say": {"n": 3}}
        lines = [r.line for r in await cluster.store.get_logs(job.id)]
        assert "using ••••••" in lines
        assert not any(SECRET in line for line in lines)

        parent = await cluster.wait_job(await cluster.submit("parent"))
        assert parent.status is JobStatus.COMPLETED, parent.error
        assert parent.output == {"call": {"say": {"n": 7}}}


async def test_a_remote_worker_runs_a_for_each_loop(cluster: Cluster) -> None:
    async with cluster.remote_worker():
        job = await cluster.wait_job(await cluster.submit("loop"))
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output == {"fan": [{"n": 1}, {"n": 2}]}
        steps = {s.name: s.status for s in job.steps}
        assert steps == {n: StepStatus.COMPLETED for n in ("fan", "fan[0]", "fan[1]")}


async def test_an_approval_waits_on_the_server_and_resumes_on_a_remote_worker(
    cluster: Cluster,
) -> None:
    async with cluster.remote_worker() as worker:
        job_id = await cluster.submit("gated", n=4)

        async def waiting() -> JobRecord | None:
            job = await cluster.store.get_job(job_id)
            return job if job is not None and job.suspended else None

        job = await _until(waiting, what="the approval wait")
        assert [(s.name, s.status) for s in job.steps] == [("gate", StepStatus.SUSPENDED)]
        assert job.steps[0].output == {"approval_message": "go with 4?"}
        # The remote worker let the job go: it runs nothing while the job waits.
        assert worker.worker is not None

        def idle() -> bool:
            return worker.worker is not None and job_id not in worker.worker.active_jobs

        await _until(idle, what="the worker to let the job go")
        await stays_true_for(idle, 0.5)
        # The server fired the on_suspended hook; the remote worker ran it.
        hooks = await _until(
            lambda: cluster.store.list_jobs(JobFilter(source_type="hook", source_id=job_id)),
            what="the on_suspended hook job",
        )
        hook = await cluster.wait_job(hooks[0].id)
        assert hook.task == "_hook:echo" and hook.output == {"hook": {"n": 9}}

        async with httpx.AsyncClient(base_url=cluster.url) as client:
            resp = await client.post(
                f"/api/jobs/{job_id}/steps/gate/approve", json={"input": {"n": 11}}
            )
        assert resp.status_code == 200, resp.text
        done = await cluster.wait_job(job_id)
        assert done.status is JobStatus.COMPLETED, done.error
        assert done.output is not None and done.output["after"] == {"n": 11}
        assert done.worker_id is not None  # a worker (the remote one) resumed it


async def test_the_server_observes_the_claims_and_finishes_of_remote_workers(
    cluster: Cluster,
) -> None:
    registry = CollectorRegistry()
    cluster.node.job_metrics.register(registry)
    async with cluster.remote_worker():
        job = await cluster.wait_job(await cluster.submit("hello", n=3))
        assert job.status is JobStatus.COMPLETED, job.error
        labels = {"task": "hello", "status": "completed"}
        await _until(
            lambda: registry.get_sample_value("headwater_jobs_finished_total", labels) == 1.0,
            what="the finish counted on the server",
        )
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{cluster.url}/metrics")).text
    assert registry.get_sample_value("headwater_job_queue_wait_seconds_count", {"task": "hello"})
    assert job.started_at is not None and job.finished_at is not None
    stored = (job.finished_at - job.started_at).total_seconds()
    observed = registry.get_sample_value("headwater_job_duration_seconds_sum", {"task": "hello"})
    assert observed == pytest.approx(stored, abs=1e-3)  # the stored times, not a guess
    assert 'route="/worker/sync"' in text and 'route="/worker/claim"' in text


async def test_the_server_fires_the_hooks_of_a_job_a_remote_worker_finished(
    cluster: Cluster,
) -> None:
    async with cluster.remote_worker():
        job = await cluster.wait_job(await cluster.submit("hooked"))
        assert job.status is JobStatus.FAILED
        hooks = await _until(
            lambda: cluster.store.list_jobs(JobFilter(source_type="hook", source_id=job.id)),
            what="the hook job",
        )
        hook = await cluster.wait_job(hooks[0].id)
        assert hook.task == "_hook:echo" and hook.status is JobStatus.COMPLETED, hook.error
        assert hook.output == {"hook": {"n": 5}}


async def test_a_job_waits_visibly_until_a_worker_with_its_tags_claims_it(
    cluster: Cluster,
) -> None:
    import httpx

    job_id = await cluster.submit("gpu")
    async with cluster.remote_worker(frozenset({"script"})):
        async with httpx.AsyncClient(base_url=cluster.url) as client:

            async def pending() -> bool:
                body = (await client.get(f"/api/jobs/{job_id}")).json()
                return bool(body["status"] == "pending")

            await stays_true_for(pending, 0.5, what="the job pending")
            body = (await client.get(f"/api/jobs/{job_id}")).json()
        assert body["status"] == "pending"
        assert body["tags"] == ["gpu", "script"]
        assert "gpu" in body["waiting_for"]
        async with cluster.remote_worker(frozenset({"script", "gpu"})):
            assert (await cluster.wait_job(job_id)).status is JobStatus.COMPLETED


# -- claim long-poll -------------------------------------------------------------------


async def test_a_waiting_claim_answers_as_soon_as_a_job_for_its_tags_arrives(
    cluster: Cluster,
) -> None:
    await cluster.store.register_worker("w-1", "test", frozenset({"script"}))
    if hasattr(cluster.store, "wait_listening"):
        await cluster.store.wait_listening(5)
    started = time.monotonic()
    claim = asyncio.create_task(cluster.service.claim("w-1", frozenset({"script"}), 5, 20.0))
    await stays_true_for(lambda: not claim.done(), 0.3, what="the claim waiting")
    await cluster.submit("gpu")  # not for this worker: it keeps waiting
    await stays_true_for(lambda: not claim.done(), 0.3, what="the claim waiting")
    job_id = await cluster.submit("hello")
    jobs = await asyncio.wait_for(claim, 10)
    assert [j.id for j in jobs] == [job_id]
    assert time.monotonic() - started < 15  # woken by the insert, not by the 20 s timeout


async def test_a_claimed_job_its_worker_never_received_is_requeued(cluster: Cluster) -> None:
    store = cluster.store
    await store.register_worker("w-1", "test", frozenset({"script"}))
    job_id = await cluster.submit("hello")
    (job,) = await cluster.service.claim("w-1", frozenset({"script"}), 1, 0)
    # Claimed just now: not an orphan yet (its answer may still be on the way).
    answer = await cluster.service.heartbeat("w-1", [], [])
    assert (await store.get_job(job_id)).status is JobStatus.RUNNING  # type: ignore[union-attr]
    await asyncio.sleep(0.6)
    answer = await cluster.service.heartbeat("w-1", ["some-other-job"], [])
    assert answer.stop == ("some-other-job",)  # it runs a job that is not its: stop it
    requeued = await store.get_job(job_id)
    assert requeued is not None and requeued.status is JobStatus.PENDING
    assert job.attempt == 1


# -- event-source fencing ----------------------------------------------------------------


async def _consumer_job(cluster: Cluster) -> str:
    (outcome,) = await cluster.store.insert_jobs(
        [
            NewJob(
                workspace="ws",
                task="consumer",
                input={},
                source_type=CONSUMER_SOURCE_TYPE,
                source_id=consumer_source_id("ws/stream"),
                dedup_key="consumer:ws/stream:1",
            )
        ]
    )
    return outcome.id


async def test_a_consumer_with_a_stale_fencing_token_is_refused(cluster: Cluster) -> None:
    store, service = cluster.store, cluster.service
    job_id = await _consumer_job(cluster)
    await store.register_worker("w-a", "a", frozenset({"script"}))
    (claimed,) = await service.claim("w-a", frozenset({"script"}), 1, 0)
    first = await service.emit("w-a", "ws/stream", job_id, 1, None, [("k1", {"n": 1})])
    assert (first.accepted, first.duplicates) == (1, 0)
    again = await service.emit(
        "w-a", "ws/stream", job_id, 1, first.token, [("k1", {"n": 1}), ("k2", {"n": 2})]
    )
    assert (again.accepted, again.duplicates, again.token) == (1, 1, first.token)

    # Worker A goes silent: its job is recovered and worker B runs it (attempt 2).
    await store.deregister_worker("w-a")
    await store.recover_stale_jobs(0)
    await store.register_worker("w-b", "b", frozenset({"script"}))
    (reclaimed,) = await service.claim("w-b", frozenset({"script"}), 1, 0)
    assert reclaimed.id == job_id and reclaimed.attempt == 2
    # B's first emit waits for A's lease to expire (1 s), then gets a newer token.
    with pytest.raises(ConflictError):
        await service.emit("w-b", "ws/stream", job_id, 2, None, [("k3", {"n": 3})])
    await asyncio.sleep(1.1)
    second = await service.emit("w-b", "ws/stream", job_id, 2, None, [("k3", {"n": 3})])
    assert second.token > first.token
    # A comes back: whatever it sends is refused, so two consumers never feed the trigger.
    with pytest.raises(StaleConsumerError):
        await service.emit("w-a", "ws/stream", job_id, 1, first.token, [("k4", {"n": 4})])
    with pytest.raises(StaleConsumerError):
        await service.emit("w-b", "ws/stream", job_id, 2, first.token, [("k4", {"n": 4})])
    keys = {j.dedup_key for j in await store.list_jobs(JobFilter(source_id="ws/stream"))}
    assert keys == {"k1", "k2", "k3"}
    # Heartbeats renew B's lease; finishing the consumer releases it at once.
    lease = ConsumerLease("ws/stream", job_id, 2, second.token)
    assert (await service.heartbeat("w-b", [job_id], [lease])).lost_leases == ()
    await service.finish("w-b", [(job_id, JobStatus.COMPLETED, None, None)], [lease])
    assert await live_token(store, consumer_lease_name("ws/stream")) is None
    assert claimed.attempt == 1


async def test_a_remote_consumer_feeds_its_trigger_with_backpressure_and_dedup(
    cluster: Cluster,
) -> None:
    node = cluster.node
    stop = asyncio.Event()
    triggers = asyncio.create_task(node.event_sources.run(stop))
    try:
        async with cluster.remote_worker():

            async def five_done() -> bool:
                jobs = await cluster.store.list_jobs(JobFilter(source_id="ws/stream", limit=100))
                return len(jobs) == 5 and all(j.status is JobStatus.COMPLETED for j in jobs)

            await _until(five_done, 30, "the consumer's five events")
            jobs = await cluster.store.list_jobs(JobFilter(source_id="ws/stream", limit=100))
            assert sorted(j.dedup_key or "" for j in jobs) == [
                f"es:ws/stream:{n}" for n in range(5)
            ]
            leases = await cluster.store.list_leases("consumer:")
            assert [le.name for le in leases] == ["consumer:ws/stream"]
    finally:
        stop.set()
        await asyncio.wait_for(triggers, 10)


async def test_emit_answers_the_room_left_under_max_in_flight(cluster: Cluster) -> None:
    node = cluster.node
    ws = node.holder.workspace
    trigger = ws.triggers["stream"].model_copy(update={"max_in_flight": 3})
    node.holder.workspace = ws.model_copy(update={"triggers": {**ws.triggers, "stream": trigger}})
    job_id = await _consumer_job(cluster)
    await cluster.store.register_worker("w-a", "a", frozenset({"script"}))
    await cluster.service.claim("w-a", frozenset({"script"}), 1, 0)
    answer = await cluster.service.emit(
        "w-a", "ws/stream", job_id, 1, None, [("a", {"n": 1}), ("b", {"n": 2})]
    )
    assert (answer.in_flight, answer.room) == (2, 1)
    started = time.monotonic()
    assert await cluster.service.wait_room("ws/stream", below=2, timeout=0.3) == 2
    assert time.monotonic() - started >= 0.25  # no room: it waited for its timeout
    one = (await cluster.store.list_jobs(JobFilter(source_id="ws/stream", limit=1)))[0]
    waiting = asyncio.create_task(cluster.service.wait_room("ws/stream", below=2, timeout=10))
    await stays_true_for(lambda: not waiting.done(), 0.2, what="wait_room waiting for room")
    await cluster.store.finish_job(one.id, None, JobStatus.CANCELLED)
    assert await asyncio.wait_for(waiting, 5) == 1


# -- trigger ownership -------------------------------------------------------------------


async def test_one_server_owns_a_trigger_and_another_takes_over_when_it_dies(
    cluster: Cluster,
) -> None:
    store, ws = cluster.store, cluster.node.workspace
    first = TriggerOwnership(store, ws, owner="server-1", ttl=0.6, check_interval=0.1)
    second = TriggerOwnership(store, ws, owner="server-2", ttl=0.6, check_interval=0.1)
    await first.check()
    await second.check()
    assert first.owns("stream") and first.is_janitor()
    assert not second.owns("stream") and not second.is_janitor()
    token = first.held()[lease_name("ws", "stream")]

    # server-1 dies (no release, no renewal): within the ttl, server-2 holds it.
    deadline = time.monotonic() + 5
    while not second.owns("stream"):
        assert time.monotonic() < deadline, "no takeover"
        await asyncio.sleep(0.1)
        await second.check()
    assert second.held()[lease_name("ws", "stream")] > token
    assert second.took_over("stream") and not second.took_over("stream")
    assert not first.owns("stream")  # it stopped acting before anybody else could hold it
    await first.check()
    assert not first.owns("stream")

    # A clean stop releases at once.
    await second.release_all()
    await first.check()
    assert first.owns("stream")


async def test_event_sources_start_only_the_consumers_of_owned_triggers(cluster: Cluster) -> None:
    node = cluster.node
    other = TriggerOwnership(node.store, node.workspace, owner="elsewhere", ttl=30)
    await other.check()
    mine = TriggerOwnership(node.store, node.workspace, owner="here", ttl=30)
    await mine.check()
    from headwater.triggers.event_source import EventSourceManager

    manager = EventSourceManager(node.store, node.dispatcher, node.workspace, owner=mine)
    await manager.reconcile()
    consumers = await node.store.list_jobs(JobFilter(source_type=CONSUMER_SOURCE_TYPE))
    assert consumers == []
    await other.release_all()
    await mine.check()
    await manager.reconcile()
    consumers = await node.store.list_jobs(JobFilter(source_type=CONSUMER_SOURCE_TYPE))
    assert len(consumers) == 1


async def test_a_cleanly_stopped_worker_frees_its_consumer_leases_at_once(
    cluster: Cluster,
) -> None:
    store, service = cluster.store, cluster.service
    job_id = await _consumer_job(cluster)
    await store.register_worker("w-a", "a", frozenset({"script"}))
    await service.claim("w-a", frozenset({"script"}), 1, 0)
    answer = await service.emit("w-a", "ws/stream", job_id, 1, None, [("k1", {"n": 1})])
    assert await live_token(store, consumer_lease_name("ws/stream")) == answer.token
    await service.deregister("w-a")
    assert await live_token(store, consumer_lease_name("ws/stream")) is None
    # Its job is recovered and the next consumer gets the lease without waiting.
    await store.recover_stale_jobs(60)
    await store.register_worker("w-b", "b", frozenset({"script"}))
    await service.claim("w-b", frozenset({"script"}), 1, 0)
    second = await service.emit("w-b", "ws/stream", job_id, 2, None, [("k2", {"n": 2})])
    assert second.token > answer.token


async def test_a_worker_whose_token_is_revoked_stops(cluster: Cluster) -> None:
    worker = RemoteWorker(
        RemoteWorkerSettings(
            servers=(cluster.url,),
            token=cluster.token,
            cache_dir=cluster.tmp / "cache",
            worker=WorkerSettings(heartbeat_interval=0.2, shutdown_timeout=0.5),
            claim_wait=5.0,
        )
    )
    run = asyncio.create_task(worker.run(asyncio.Event()))
    await _until(lambda: worker.worker is not None and worker.worker.ready.is_set())
    (token,) = await cluster.store.list_worker_tokens()
    await cluster.store.revoke_worker_token(token.id)
    with pytest.raises(AuthError, match="revoked"):
        await asyncio.wait_for(run, 20)


async def test_a_remote_worker_picks_up_a_reloaded_workspace_before_its_next_job(
    cluster: Cluster,
) -> None:
    async with cluster.remote_worker():
        first = await cluster.wait_job(await cluster.submit("hello", n=1))
        assert first.status is JobStatus.COMPLETED
        path = cluster.node.holder.path
        added_task = "  added:\n    flow:\n      go: { action: echo, input: { n: 42 } }\n"
        path.write_text(path.read_text().replace("tasks:\n", "tasks:\n" + added_task, 1))
        await cluster.node.reload_workspace()
        added = await cluster.wait_job(await cluster.submit("added"))
        assert added.status is JobStatus.COMPLETED, added.error
        assert added.output == {"go": {"n": 42}}


async def test_a_token_reads_and_cancels_only_the_jobs_of_its_own_workers(
    cluster: Cluster,
) -> None:
    import httpx

    other = issue_token("other-host")
    await cluster.store.insert_worker_token(other.record)
    async with cluster.remote_worker():
        job = await cluster.wait_job(await cluster.submit("hello", n=3))
        parent = await cluster.wait_job(await cluster.submit("parent"))
    assert job.status is JobStatus.COMPLETED, job.error
    child = (await cluster.store.list_jobs(JobFilter(task="hello", limit=10)))[0]
    assert child.parent_job_id == parent.id
    embedded = await cluster.submit("hello", n=4)  # nobody claimed it (no embedded worker)
    async with httpx.AsyncClient(base_url=cluster.url) as client:
        mine = {"Authorization": f"Bearer {cluster.token}"}
        theirs = {"Authorization": f"Bearer {other.token}"}
        # The token whose worker ran the job (and the sub-task's child) reads them.
        for job_id in (job.id, child.id):
            assert (await client.get(f"/worker/jobs/{job_id}", headers=mine)).status_code == 200
        # Another token neither reads, waits for nor cancels them, nor any unclaimed job.
        for job_id in (job.id, child.id, embedded):
            got = await client.get(f"/worker/jobs/{job_id}", headers=theirs)
            assert got.status_code == 404, got.text
            waited = await client.post(
                "/worker/jobs/wait", json={"job_ids": [job_id], "timeout": 0}, headers=theirs
            )
            assert waited.status_code == 404, waited.text
            cancel = await client.post(f"/worker/jobs/{job_id}/cancel", headers=theirs)
            assert cancel.status_code == 404, cancel.text
    untouched = await cluster.store.get_job(embedded)
    assert untouched is not None and not untouched.cancel_requested


async def test_a_remote_worker_fills_in_secret_references_and_stores_no_secret(
    cluster: Cluster,
) -> None:
    from headwater.workspace.secret_refs import seal

    sealed = seal({"word": SECRET}, {"token": SECRET}, "ws/feed")
    (outcome,) = await cluster.store.insert_jobs(
        [
            NewJob(
                workspace="ws",
                task="repeat",
                input=sealed,
                source_type="webhook",
                source_id="ws/feed",
                dedup_key=None,
            )
        ]
    )
    async with cluster.remote_worker():
        job = await cluster.wait_job(outcome.id)
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.input == sealed
    assert job.output == {"say": {"same": True, "word": "••••••"}}
    (step,) = job.steps
    assert step.output == {"same": True, "word": "••••••"}


async def test_emit_records_the_events_a_worker_refused_as_rejected(cluster: Cluster) -> None:
    """Issue 14: an OUTPUT line no store can keep, refused by the consumer's worker, is a
    rejected event with its reason on the server, and its batch-mates are jobs."""
    job_id = await _consumer_job(cluster)
    await cluster.store.register_worker("w-a", "a", frozenset({"script"}))
    await cluster.service.claim("w-a", frozenset({"script"}), 1, 0)
    reason = "the string at $.n contains \\u0000 (NUL), which the store cannot keep"
    answer = await cluster.service.emit(
        "w-a",
        "ws/stream",
        job_id,
        1,
        None,
        [("a", {"n": 1}), ("b", {"n": "a\ufffdb"}), ("c", {"n": 3})],
        {1: reason},
    )
    assert (answer.accepted, answer.rejected) == (2, 1)
    (rejected,) = await cluster.store.list_rejected(source_id="ws/stream")
    assert rejected.reason == reason
    assert rejected.payload == {"n": "a\ufffdb"}


async def test_a_remote_consumer_resumes_from_the_cursor_its_emits_stored(
    cluster: Cluster,
) -> None:
    """Cursors travel over /worker/event-source/emit and back as HEADWATER_CURSOR."""
    path = cluster.node.holder.path
    resuming = (
        "      import json, os, sys\n"
        "      start = int(os.environ.get('HEADWATER_CURSOR', '0'))\n"
        "      for n in range(start + 1, start + 4):\n"
        "          print('OUTPUT: ' + json.dumps({'n': n, '_headwater_cursor': str(n)}),"
        " flush=True)\n"
        "      sys.exit(1)\n"
    )
    text = path.read_text()
    old = text[text.index("      import json, time\n") : text.index("  child:\n")]
    text = text.replace(old, resuming).replace('    dedup_key: "{{ payload.n }}"\n', "")
    text = text.replace("    target_task: hello\n", "    target_task: hello\n    backoff_secs: 0\n")
    path.write_text(text)
    await cluster.node.reload_workspace()
    node = cluster.node
    stop = asyncio.Event()
    triggers = asyncio.create_task(node.event_sources.run(stop))
    try:
        async with cluster.remote_worker():

            async def six_or_more() -> bool:
                jobs = await cluster.store.list_jobs(JobFilter(source_id="ws/stream", limit=100))
                return len(jobs) >= 6

            await _until(six_or_more, 30, "two consumer runs")
    finally:
        stop.set()
        await asyncio.wait_for(triggers, 10)
    jobs = await cluster.store.list_jobs(JobFilter(source_id="ws/stream", limit=100))
    numbers = sorted(j.input["n"] for j in jobs)
    assert numbers == list(range(1, len(numbers) + 1))  # resumed: no gap, no repeat
    assert all(j.dedup_key == f"es:ws/stream:cursor:{j.input['n']}" for j in jobs)
    cursor = await cluster.store.get_cursor("ws/stream")
    assert cursor is not None and int(cursor.cursor) >= 6
