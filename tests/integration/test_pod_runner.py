"""PodRunner with the real Kubernetes client against a fake API server that records calls.

No cluster runs here: tests/fake_kube.py answers the core/v1 pod API (create, watch,
log follow, delete, list) with the shapes of the Kubernetes API reference and moves
pods along a script, so these tests check the exact pod sent (manifest merged), the
calls made, start failures, log handling and cleanup on every path.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from headwater.runners.base import StepOutcome, StepResult, StepSpec
from headwater.runners.config import KubeConfig
from headwater.runners.identity import ProcessIdentity
from headwater.runners.pod import PodRunner
from headwater.store.base import LogStream
from tests.conftest import require_module
from tests.fake_kube import FakeKubeApi, PodScript, waiting

IMAGE = "myorg/amqp-consumer:latest"
SECRET = "amqp://user:s3cr3t@rabbit/"
ME = ProcessIdentity("worker-host", os.getpid(), "boot/1")
SEED_MANIFEST: dict[str, Any] = {
    "metadata": {"labels": {"app": "stroem-rabbitmq-consumer"}},
    "spec": {
        "serviceAccountName": "stroem-worker",
        "imagePullSecrets": [{"name": "myorg-registry"}],
        "containers": [
            {
                "name": "main",
                "resources": {
                    "requests": {"memory": "256Mi", "cpu": "250m"},
                    "limits": {"memory": "512Mi", "cpu": "500m"},
                },
            }
        ],
    },
}

require_module("kubernetes", "runners")


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi()
    yield fake
    fake.close()


def runner_for(api: FakeKubeApi, **config: Any) -> PodRunner:
    config.setdefault("namespace", "jobs")
    return PodRunner(
        KubeConfig(host=api.url, **config), identity=ME, eof_grace=0.2, eof_recheck=0.3
    )


@pytest.fixture
async def runner(api: FakeKubeApi) -> Any:
    r = runner_for(api)
    yield r
    await r.aclose()


@dataclass
class Sink:
    lines: list[tuple[LogStream, str, bool]] = field(default_factory=list)
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    wait_for: str | None = None

    async def __call__(self, stream: LogStream, line: str, truncated: bool) -> None:
        self.lines.append((stream, line, truncated))
        if line == self.wait_for:
            self.seen.set()

    def texts(self) -> list[str]:
        return [line for _, line, _ in self.lines]


def spec(**kw: Any) -> StepSpec:
    kw.setdefault("image", IMAGE)
    kw.setdefault("env", {"AMQP_URL": SECRET, "QUEUE_NAME": "orders"})
    kw.setdefault("workdir", Path("."))
    kw.setdefault("labels", {"headwater.job": "job-1", "headwater.step": "poll"})
    kw.setdefault("kill_grace", 2.0)
    return StepSpec(job_id="0190a1b2-c3d4-7e5f-8a9b-0123456789ab", step="poll", **kw)


async def run(
    runner: PodRunner, step: StepSpec, sink: Sink | None = None, cancel: asyncio.Event | None = None
) -> tuple[StepResult, Sink]:
    sink = sink or Sink()
    result = await asyncio.wait_for(runner.run(step, sink, cancel or asyncio.Event()), 60)
    return result, sink


def calls(api: FakeKubeApi) -> list[str]:
    out = []
    for request in api.calls():
        path = request.path
        for pod in api.calls(lambda r: r.method == "POST"):
            path = path.replace(pod.body["metadata"]["name"], "NAME")
        kind = " (watch)" if request.query.get("watch") else ""
        out.append(f"{request.method} {path}{kind}")
    return out


async def test_a_step_runs_as_a_pod_with_the_manifest_merged_and_is_deleted(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    api.script = PodScript(
        pending=[waiting("ContainerCreating", "")],
        lines=["connected", 'OUTPUT: {"orderId": "123"}', "", "done"],
    )
    step = spec(manifest=SEED_MANIFEST, cmd=("--queue", "orders"), entrypoint=("/consume",))
    result, sink = await run(runner, step)
    assert result == StepResult(StepOutcome.SUCCEEDED, 0)
    assert sink.lines == [
        (LogStream.STDOUT, "connected", False),
        (LogStream.STDOUT, 'OUTPUT: {"orderId": "123"}', False),
        (LogStream.STDOUT, "", False),
        (LogStream.STDOUT, "done", False),
    ]
    assert calls(api) == [
        "POST /api/v1/namespaces/jobs/pods",
        "GET /api/v1/namespaces/jobs/pods (watch)",
        "GET /api/v1/namespaces/jobs/pods/NAME/log",
        "DELETE /api/v1/namespaces/jobs/pods/NAME",
    ]
    body = api.created_body()
    name = body["metadata"]["name"]
    assert name.startswith("hw-poll-456789ab-") and len(name) <= 63
    assert body["apiVersion"] == "v1" and body["kind"] == "Pod"
    assert body["metadata"]["labels"] == {
        "app": "stroem-rabbitmq-consumer",
        "headwater.job": "job-1",
        "headwater.step": "poll",
        "headwater.managed": "true",
        "headwater.host": "worker-host",
    }
    assert body["metadata"]["annotations"]["headwater.worker"] == ME.token
    assert body["spec"]["restartPolicy"] == "Never"
    assert body["spec"]["terminationGracePeriodSeconds"] == 2
    assert body["spec"]["serviceAccountName"] == "stroem-worker"
    assert body["spec"]["imagePullSecrets"] == [{"name": "myorg-registry"}]
    (container,) = body["spec"]["containers"]
    assert container == {
        "name": "main",
        "image": IMAGE,
        "command": ["/consume"],
        "args": ["--queue", "orders"],
        "env": [
            {"name": "AMQP_URL", "value": SECRET},
            {"name": "QUEUE_NAME", "value": "orders"},
            {"name": "HEADWATER_JOB_ID", "value": "0190a1b2-c3d4-7e5f-8a9b-0123456789ab"},
            {"name": "HEADWATER_STEP", "value": "poll"},
        ],
        "resources": SEED_MANIFEST["spec"]["containers"][0]["resources"],
    }
    (watch,) = api.calls(lambda r: r.query.get("watch"))
    assert watch.query["fieldSelector"] == f"metadata.name={name}"
    assert watch.query["resourceVersion"] == "101"
    (logs,) = api.calls(lambda r: r.path.endswith("/log"))
    assert logs.query == {"container": "main", "follow": "True", "timestamps": "True"}
    (delete,) = api.calls(lambda r: r.method == "DELETE")
    assert delete.query == {"gracePeriodSeconds": "2", "propagationPolicy": "Background"}


async def test_resources_become_requests_and_limits(api: FakeKubeApi, runner: PodRunner) -> None:
    await run(runner, spec(resources={"cpu": "1", "memory": "1Gi"}))
    (container,) = api.created_body()["spec"]["containers"]
    amounts = {"cpu": "1", "memory": "1Gi"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}


async def test_stroem_s_step_container_name_means_main(api: FakeKubeApi, runner: PodRunner) -> None:
    manifest = {"spec": {"containers": [{"name": "step", "resources": {"limits": {"cpu": "1"}}}]}}
    await run(runner, spec(manifest=manifest))
    (container,) = api.created_body()["spec"]["containers"]
    assert container["name"] == "main" and container["resources"] == {"limits": {"cpu": "1"}}


async def test_the_namespace_is_the_worker_s(api: FakeKubeApi) -> None:
    runner = runner_for(api, namespace="stroem-jobs")
    try:
        await run(runner, spec())
    finally:
        await runner.aclose()
    assert calls(api)[0] == "POST /api/v1/namespaces/stroem-jobs/pods"


async def test_a_non_zero_exit_fails_and_the_pod_is_deleted(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    api.script = PodScript(lines=["boom"], exit_code=2)
    result, sink = await run(runner, spec())
    assert result == StepResult(StepOutcome.FAILED, 2, "exit code 2")
    assert sink.texts() == ["boom"]
    assert calls(api)[-1] == "DELETE /api/v1/namespaces/jobs/pods/NAME"


async def test_an_oom_kill_says_so(api: FakeKubeApi, runner: PodRunner) -> None:
    api.script = PodScript(exit_code=137, reason="OOMKilled")
    result, _ = await run(runner, spec())
    assert result == StepResult(
        StepOutcome.FAILED,
        137,
        "exit code 137 (out of memory: the container reached its memory limit)",
    )


async def test_an_image_that_cannot_be_pulled_fails_after_the_grace(api: FakeKubeApi) -> None:
    message = 'Back-off pulling image "myorg/amqp-consumer:latest"'
    api.script = PodScript(
        pending=[
            waiting("ErrImagePull", "pull access denied"),
            waiting("ImagePullBackOff", message),
        ],
        stay_pending=True,
    )
    runner = runner_for(api, image_pull_grace=0.5)
    try:
        result, _ = await run(runner, spec())
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None
    assert result.error.endswith(f"cannot pull image {IMAGE!r}: ImagePullBackOff: {message}")
    assert calls(api)[-1] == "DELETE /api/v1/namespaces/jobs/pods/NAME"


async def test_an_invalid_image_fails_at_once(api: FakeKubeApi) -> None:
    api.script = PodScript(
        pending=[waiting("InvalidImageName", 'couldn\'t parse image reference "x::y"')],
        stay_pending=True,
    )
    runner = runner_for(api, image_pull_grace=60, start_timeout=60)
    try:
        result, _ = await run(runner, spec(image="x::y"))
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.FAILED
    assert (
        result.error is not None
        and "cannot start: InvalidImageName: couldn't parse" in result.error
    )


async def test_an_unschedulable_pod_fails_at_the_start_timeout_with_the_reason(
    api: FakeKubeApi,
) -> None:
    api.script = PodScript(unschedulable="0/3 nodes are available: 3 Insufficient memory.")
    runner = runner_for(api, start_timeout=0.5)
    try:
        result, _ = await run(runner, spec())
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None
    assert result.error.endswith(
        "was not scheduled within 0.5s (HEADWATER_POD_START_TIMEOUT):"
        " 0/3 nodes are available: 3 Insufficient memory."
    )
    assert calls(api)[-1] == "DELETE /api/v1/namespaces/jobs/pods/NAME"


async def test_a_timeout_deletes_the_pod_with_grace_and_drains_its_log(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    api.script = PodScript(lines=["consuming"], exit_code=None, lines_on_delete=["bye"])
    result, sink = await run(runner, spec(timeout=0.5, kill_grace=3.0))
    assert result == StepResult(StepOutcome.TIMED_OUT, 143, "timed out after 0.5s")
    assert sink.texts() == ["consuming", "bye"]
    deletes = api.calls(lambda r: r.method == "DELETE")
    assert deletes[0].query["gracePeriodSeconds"] == "3"


async def test_cancel_while_running_deletes_the_pod(api: FakeKubeApi, runner: PodRunner) -> None:
    api.script = PodScript(lines=["ready"], exit_code=None)
    sink = Sink(wait_for="ready")
    cancel = asyncio.Event()
    task = asyncio.create_task(run(runner, spec(), sink, cancel))
    await asyncio.wait_for(sink.seen.wait(), 30)
    cancel.set()
    result, _ = await task
    assert result.outcome is StepOutcome.CANCELLED and result.error == "cancelled"
    assert "DELETE /api/v1/namespaces/jobs/pods/NAME" in calls(api)


async def test_cancel_while_pending_deletes_the_pod(api: FakeKubeApi, runner: PodRunner) -> None:
    api.script = PodScript(pending=[waiting("ContainerCreating", "")], stay_pending=True)
    cancel = asyncio.Event()
    task = asyncio.create_task(run(runner, spec(), cancel=cancel))
    while not api.pods:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    cancel.set()
    result, _ = await task
    assert result == StepResult(StepOutcome.CANCELLED, None, "cancelled while the pod was starting")
    assert calls(api)[-1] == "DELETE /api/v1/namespaces/jobs/pods/NAME"


async def test_a_broken_log_stream_is_resumed_without_losing_or_repeating_lines(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    lines = [f"line {i}" for i in range(7)]
    api.script = PodScript(lines=lines, break_log_after=3, exit_code=None)
    sink = Sink(wait_for="line 6")
    cancel = asyncio.Event()
    task = asyncio.create_task(run(runner, spec(), sink, cancel))
    await asyncio.wait_for(sink.seen.wait(), 30)
    cancel.set()
    await task
    assert sink.texts() == lines
    first, second = api.calls(lambda r: r.path.endswith("/log"))
    assert "sinceSeconds" not in first.query
    assert int(second.query["sinceSeconds"]) > 0


async def test_a_sink_error_propagates_and_the_pod_is_deleted(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    api.script = PodScript(lines=["one"], exit_code=None)

    async def failing(stream: LogStream, line: str, truncated: bool) -> None:
        raise RuntimeError("store is down")

    with pytest.raises(RuntimeError, match="store is down"):
        await asyncio.wait_for(runner.run(spec(), failing, asyncio.Event()), 30)
    assert calls(api)[-1] == "DELETE /api/v1/namespaces/jobs/pods/NAME"


async def test_a_missing_exit_status_fails_after_the_timeout(api: FakeKubeApi) -> None:
    api.script = PodScript(lines=["hello"], report_exit=False)
    runner = runner_for(api, exit_status_timeout=0.3)
    try:
        result, _ = await run(runner, spec())
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None
    assert "its log ended but Kubernetes reported no exit status within 0.3s" in result.error


async def test_long_lines_are_cut_to_max_line_bytes(api: FakeKubeApi, runner: PodRunner) -> None:
    api.script = PodScript(lines=["x" * 3000, "short"])
    _, sink = await run(runner, spec(max_line_bytes=1000))
    assert sink.lines == [
        (LogStream.STDOUT, "x" * 1000, True),
        (LogStream.STDOUT, "short", False),
    ]


async def test_a_manifest_asking_for_host_access_is_refused_before_any_call(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    manifest = {"spec": {"containers": [{"name": "main", "securityContext": {"privileged": True}}]}}
    result, _ = await run(runner, spec(manifest=manifest))
    assert result.outcome is StepOutcome.FAILED
    assert result.error == (
        "the pod would get access to its node through `privileged: true` on container 'main';"
        " this worker's pod runner does not allow that (KubeConfig.allow_privileged)"
    )
    assert api.calls() == []


async def test_an_api_that_refuses_the_pod_fails_the_step_with_its_message(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    result, _ = await run(runner, spec(manifest={"spec": {"containers": [{"image": "x"}]}}))
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None and "`main` is the step's own" in result.error
    assert api.calls() == []


async def test_the_sweep_deletes_pods_of_dead_workers_of_this_host_only(
    api: FakeKubeApi, runner: PodRunner
) -> None:
    dead = ProcessIdentity(ME.host, 2**22 + 17, "boot/1")

    def pod(name: str, owner: ProcessIdentity) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "labels": {"headwater.managed": "true", "headwater.host": owner.host},
                "annotations": {"headwater.worker": owner.token},
            }
        }

    api.extra_pods = [pod("hw-dead", dead), pod("hw-mine", ME)]
    assert await runner.sweep_orphans() == 1
    (listing,) = api.calls(lambda r: r.method == "GET")
    assert listing.query["labelSelector"] == "headwater.managed=true,headwater.host=worker-host"
    assert [r.path for r in api.calls(lambda r: r.method == "DELETE")] == [
        "/api/v1/namespaces/jobs/pods/hw-dead"
    ]


async def test_a_watchdog_deletes_the_pod_when_its_worker_goes_away(api: FakeKubeApi) -> None:
    from headwater.runners.watchdog import CleanupOrder, Watchdog

    config = KubeConfig(host=api.url, namespace="jobs")
    watchdog = Watchdog.start(CleanupOrder("pod", "hw-poll-1", config.to_json(), "jobs", grace=4))
    process = watchdog._process
    assert process.stdin is not None
    process.stdin.close()  # what the kernel does when the worker dies
    assert await asyncio.to_thread(process.wait, 20) == 0
    (delete,) = api.calls(lambda r: r.method == "DELETE")
    assert delete.path == "/api/v1/namespaces/jobs/pods/hw-poll-1"
    assert delete.query["gracePeriodSeconds"] == "4"


async def test_a_kubeconfig_file_is_used_with_its_token_and_namespace(
    api: FakeKubeApi, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "{api.url}"}}
users:
- name: u
  user: {{token: "tok-123"}}
contexts:
- name: ctx
  context: {{cluster: c, user: u, namespace: team-jobs}}
current-context: ctx
"""
    )
    runner = PodRunner(KubeConfig(kubeconfig=str(kubeconfig)), identity=ME, eof_recheck=0.3)
    try:
        result, _ = await run(runner, spec())
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.SUCCEEDED
    (create,) = api.calls(lambda r: r.method == "POST")
    assert create.path == "/api/v1/namespaces/team-jobs/pods"
    assert create.headers.get("authorization") == "Bearer tok-123"


async def test_a_broken_kubeconfig_fails_the_step_with_the_reason(tmp_path: Path) -> None:
    runner = PodRunner(KubeConfig(kubeconfig=str(tmp_path / "missing")), identity=ME)
    try:
        result, _ = await run(runner, spec())
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None
    assert result.error.startswith(
        f"cannot use the Kubernetes configuration at {tmp_path / 'missing'}: "
    )
