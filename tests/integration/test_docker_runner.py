"""DockerRunner with the real Docker SDK against a fake engine that records every call.

No Docker engine runs here: tests/fake_docker.py answers the Engine API the way dockerd
does, so these tests check everything up to the wire — the exact create body, the order
of calls, cleanup on every path, line handling and backpressure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from headwater.runners.base import StepOutcome, StepResult, StepSpec
from headwater.runners.config import DockerConfig, PullPolicy
from headwater.runners.docker import DockerRunner
from headwater.runners.identity import ProcessIdentity
from headwater.store.base import LogStream
from headwater.workspace.models import Language
from tests.conftest import require_module
from tests.fake_docker import FakeDockerEngine, Script

IMAGE = "myorg/kafka-consumer:1.0"
SECRET = "s3cr3t-brokers-password"
ME = ProcessIdentity("worker-host", os.getpid(), "boot/1")
OUT, ERR = 1, 2

require_module("docker", "runners")


@pytest.fixture
def engine() -> Iterator[FakeDockerEngine]:
    fake = FakeDockerEngine()
    fake.images.add(IMAGE)
    yield fake
    fake.close()


def runner_for(engine: FakeDockerEngine, **config: Any) -> DockerRunner:
    return DockerRunner(DockerConfig(base_url=engine.url, **config), identity=ME, eof_grace=0.2)


@pytest.fixture
async def runner(engine: FakeDockerEngine) -> Any:
    r = runner_for(engine)
    yield r
    await r.aclose()


@dataclass
class Sink:
    lines: list[tuple[LogStream, str, bool]] = field(default_factory=list)
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    wait_for: str | None = None

    async def __call__(self, stream: LogStream, line: str, truncated: bool) -> None:
        self.lines.append((stream, line, truncated))
        if self.wait_for is not None and line == self.wait_for:
            self.seen.set()

    def texts(self) -> list[str]:
        return [line for _, line, _ in self.lines]


def spec(**kw: Any) -> StepSpec:
    kw.setdefault("image", IMAGE)
    kw.setdefault("env", {})
    kw.setdefault("workdir", Path("."))
    kw.setdefault("labels", {"headwater.job": "job-1", "headwater.step": "poll"})
    kw.setdefault("kill_grace", 1.0)
    return StepSpec(job_id="0190a1b2-c3d4-7e5f-8a9b-0123456789ab", step="poll", **kw)


async def run(
    runner: DockerRunner,
    step: StepSpec,
    sink: Sink | None = None,
    cancel: asyncio.Event | None = None,
) -> tuple[StepResult, Sink]:
    sink = sink or Sink()
    result = await asyncio.wait_for(runner.run(step, sink, cancel or asyncio.Event()), 30)
    return result, sink


def calls(engine: FakeDockerEngine) -> list[str]:
    """The container calls, with the container id replaced by ID."""
    ids = list(engine.containers)
    out = []
    for line in engine.summary():
        if line.endswith("/version"):
            continue
        for ident in ids:
            line = line.replace(ident, "ID")
        out.append(line)
    return out


async def test_a_step_runs_as_a_container_that_is_removed_afterwards(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(
        output=[
            (OUT, b"starting\n"),
            (ERR, b"a warning\n"),
            (OUT, b'OUTPUT: {"orderId": "123"}\nsplit '),
            (OUT, b"across frames\n"),
        ]
    )
    step = spec(
        env={"KAFKA_BROKERS": SECRET, "KAFKA_TOPIC": "events"},
        entrypoint=("/app/consume",),
        cmd=("--group", "g1"),
        resources={"cpu": "500m", "memory": "256Mi"},
    )
    result, sink = await run(runner, step)
    assert result == StepResult(StepOutcome.SUCCEEDED, 0)
    assert sink.lines == [
        (LogStream.STDOUT, "starting", False),
        (LogStream.STDERR, "a warning", False),
        (LogStream.STDOUT, 'OUTPUT: {"orderId": "123"}', False),
        (LogStream.STDOUT, "split across frames", False),
    ]
    assert calls(engine) == [
        "POST /containers/create",
        "POST /containers/ID/attach",
        "POST /containers/ID/start",
        "POST /containers/ID/wait",
        "DELETE /containers/ID",
    ]
    body = engine.create_body()
    assert body["Image"] == IMAGE
    assert body["Entrypoint"] == ["/app/consume"]
    assert body["Cmd"] == ["--group", "g1"]
    assert body["Env"] == [
        f"KAFKA_BROKERS={SECRET}",
        "KAFKA_TOPIC=events",
        "HEADWATER_JOB_ID=0190a1b2-c3d4-7e5f-8a9b-0123456789ab",
        "HEADWATER_STEP=poll",
    ]
    assert body["Labels"] == {
        "headwater.job": "job-1",
        "headwater.step": "poll",
        "headwater.managed": "true",
        "headwater.host": "worker-host",
        "headwater.worker": ME.token,
    }
    assert body["HostConfig"]["Memory"] == 256 * 2**20
    assert body["HostConfig"]["NanoCpus"] == 500_000_000
    assert body["HostConfig"]["Init"] is True
    assert body["Tty"] is False and body["OpenStdin"] is False
    (name,) = {r.query["name"] for r in engine.calls(lambda r: r.path == "/containers/create")}
    assert re.fullmatch(r"hw-poll-456789ab-[0-9a-f]{5}", name)
    (attach,) = engine.calls(lambda r: r.path.endswith("/attach"))
    assert attach.query == {"stdout": "1", "stderr": "1", "stream": "1", "logs": "1"}
    (delete,) = engine.calls(lambda r: r.method == "DELETE")
    assert delete.query == {"force": "True", "v": "True", "link": "False"}
    assert engine.only().removed


async def test_the_image_runs_as_built_without_cmd_or_entrypoint(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    await run(runner, spec())
    body = engine.create_body()
    assert body.get("Entrypoint") is None and body.get("Cmd") is None


async def test_a_script_runs_in_the_image_given(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.images.add("python:3.12-slim")
    script = "import sys\nprint('hi')\n"
    result, _ = await run(
        runner, spec(image="python:3.12-slim", script=script, language=Language.PYTHON)
    )
    assert result.outcome is StepOutcome.SUCCEEDED
    body = engine.create_body()
    assert body["Entrypoint"] == ["python", "-c"]
    assert body["Cmd"] == [script]


async def test_a_non_zero_exit_fails_and_the_container_is_still_removed(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(output=[(ERR, b"boom\n")], exit_code=3)
    result, sink = await run(runner, spec())
    assert result == StepResult(StepOutcome.FAILED, 3, "exit code 3")
    assert sink.texts() == ["boom"]
    assert calls(engine)[-1] == "DELETE /containers/ID"


async def test_an_oom_kill_says_so(engine: FakeDockerEngine, runner: DockerRunner) -> None:
    engine.script = Script(exit_code=137, oom_killed=True)
    result, _ = await run(runner, spec(resources={"memory": "64Mi"}))
    assert result.outcome is StepOutcome.FAILED and result.exit_code == 137
    assert result.error == "exit code 137 (out of memory: the container reached its memory limit)"


async def test_a_missing_image_is_pulled_then_the_container_created(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.images.clear()
    result, sink = await run(runner, spec())
    assert result.outcome is StepOutcome.SUCCEEDED
    assert calls(engine)[:3] == [
        "POST /containers/create",
        "POST /images/create",
        "POST /containers/create",
    ]
    (pull,) = engine.calls(lambda r: r.path == "/images/create")
    assert pull.query == {"fromImage": "myorg/kafka-consumer", "tag": "1.0"}
    assert sink.lines[0] == (LogStream.STDERR, f"headwater: pulling image {IMAGE}", False)


async def test_pull_always_pulls_first(engine: FakeDockerEngine) -> None:
    runner = runner_for(engine, pull=PullPolicy.ALWAYS)
    try:
        await run(runner, spec())
    finally:
        await runner.aclose()
    assert calls(engine)[:2] == ["POST /images/create", "POST /containers/create"]


async def test_pull_never_fails_on_a_missing_image(engine: FakeDockerEngine) -> None:
    engine.images.clear()
    runner = runner_for(engine, pull=PullPolicy.NEVER)
    try:
        result, _ = await run(runner, spec())
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.FAILED
    assert result.error == (
        f"image {IMAGE!r} is not on the Docker engine and the pull policy is never"
        " (HEADWATER_DOCKER_PULL)"
    )
    assert calls(engine) == ["POST /containers/create"]


@pytest.mark.parametrize(
    ("status", "stream_error", "expected"),
    [
        (200, "manifest for myorg/kafka-consumer:1.0 not found", "manifest for"),
        (404, None, "pull access denied for myorg/kafka-consumer"),
    ],
)
async def test_a_failed_pull_fails_the_step_without_a_container(
    engine: FakeDockerEngine,
    runner: DockerRunner,
    status: int,
    stream_error: str | None,
    expected: str,
) -> None:
    engine.images.clear()
    engine.pull_status, engine.pull_error = status, stream_error
    result, _ = await run(runner, spec())
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None
    assert result.error.startswith(f"cannot pull image {IMAGE!r}: ")
    assert expected in result.error
    assert not engine.containers
    assert "DELETE" not in " ".join(calls(engine))


async def test_a_timeout_stops_the_container_with_grace_drains_and_removes_it(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(
        output=[(OUT, b"consuming\n")],
        run_until_stopped=True,
        output_on_stop=[(OUT, b'OUTPUT: {"last": true}\n'), (ERR, b"bye\n")],
    )
    result, sink = await run(runner, spec(timeout=0.5, kill_grace=2.0))
    assert result.outcome is StepOutcome.TIMED_OUT
    assert result.error == "timed out after 0.5s"
    assert result.exit_code == 143
    assert sink.texts() == ["consuming", 'OUTPUT: {"last": true}', "bye"]
    (stop,) = engine.calls(lambda r: r.path.endswith("/stop"))
    assert stop.query == {"t": "2"}
    assert calls(engine)[-1] == "DELETE /containers/ID"


async def test_a_container_that_ignores_sigterm_is_killed_after_the_grace(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(run_until_stopped=True, honours_term=False)
    result, _ = await run(runner, spec(timeout=0.3, kill_grace=1.0))
    assert result.outcome is StepOutcome.TIMED_OUT and result.exit_code == 137
    assert engine.only().removed


async def test_cancel_stops_and_removes_the_container(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(output=[(OUT, b"ready\n")], run_until_stopped=True)
    cancel = asyncio.Event()
    sink = Sink(wait_for="ready")

    async def cancel_when_ready() -> None:
        await sink.seen.wait()
        cancel.set()

    canceller = asyncio.create_task(cancel_when_ready())
    result, _ = await run(runner, spec(), sink, cancel)
    await canceller
    assert result.outcome is StepOutcome.CANCELLED and result.error == "cancelled"
    assert [c for c in calls(engine) if "stop" in c or "DELETE" in c] == [
        "POST /containers/ID/stop",
        "DELETE /containers/ID",
    ]


async def test_cancelled_before_it_started_creates_nothing(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    cancel = asyncio.Event()
    cancel.set()
    result, _ = await run(runner, spec(), cancel=cancel)
    assert result.outcome is StepOutcome.CANCELLED
    assert engine.calls() == []


async def test_a_sink_error_propagates_and_the_container_is_removed(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(output=[(OUT, b"one\n")], run_until_stopped=True)

    async def failing(stream: LogStream, line: str, truncated: bool) -> None:
        raise RuntimeError("store is down")

    with pytest.raises(RuntimeError, match="store is down"):
        await asyncio.wait_for(runner.run(spec(), failing, asyncio.Event()), 30)
    assert engine.only().removed


async def test_cancelling_run_itself_removes_the_container(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(output=[(OUT, b"ready\n")], run_until_stopped=True)
    sink = Sink(wait_for="ready")
    task = asyncio.create_task(runner.run(spec(), sink, asyncio.Event()))
    await asyncio.wait_for(sink.seen.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.only().removed


async def test_long_lines_are_cut_to_max_line_bytes(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(output=[(OUT, b"x" * 3000 + b"\nshort\n"), (ERR, b"e" * 10)])
    _, sink = await run(runner, spec(max_line_bytes=1000))
    assert sink.lines == [
        (LogStream.STDOUT, "x" * 1000, True),
        (LogStream.STDOUT, "short", False),
        (LogStream.STDERR, "e" * 10, False),
    ]


async def test_a_slow_sink_holds_the_container_back(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    """While the sink does not return, the runner stops reading: the fake container's
    blocking send stalls far below what it has to say; nothing is lost after."""
    line = b"y" * 1023 + b"\n"
    total_lines = 64 * 1024  # 64 MiB
    engine.script = Script(output=[(OUT, line * 64)] * (total_lines // 64))
    release = asyncio.Event()
    count = 0

    async def slow(stream: LogStream, text: str, truncated: bool) -> None:
        nonlocal count
        count += 1
        if count == 1:
            await release.wait()

    task = asyncio.create_task(runner.run(spec(), slow, asyncio.Event()))
    while not engine.containers or engine.only().sent == 0:
        await asyncio.sleep(0.05)
    container = engine.only()
    # Wait until the fake's send has stopped making progress.
    previous = -1
    while container.sent != previous:
        previous = container.sent
        await asyncio.sleep(0.5)
    assert container.sent < 32 * 2**20, "the runner buffered the output instead of pushing back"
    release.set()
    result = await asyncio.wait_for(task, 120)
    assert result.outcome is StepOutcome.SUCCEEDED
    assert count == total_lines
    assert container.sent == total_lines * len(line)


async def test_an_engine_that_does_not_answer_fails_the_step_clearly() -> None:
    runner = DockerRunner(DockerConfig(base_url="http://127.0.0.1:9", timeout=2), identity=ME)
    try:
        result, _ = await run(runner, spec())
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None
    assert result.error.startswith("cannot reach the Docker engine at http://127.0.0.1:9: ")


async def test_secrets_in_the_env_are_never_logged(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(exit_code=1)
    with structlog.testing.capture_logs() as logs:
        await run(runner, spec(env={"PASSWORD": SECRET}))
    assert logs, "the runner logs its containers"
    assert SECRET not in repr(logs)


async def test_the_sweep_removes_containers_of_dead_workers_of_this_host_only(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    alive = ProcessIdentity.current()
    alive = ProcessIdentity(ME.host, alive.pid, alive.started)
    dead = ProcessIdentity(ME.host, 2**22 + 17, "boot/1")  # above pid_max: never alive
    elsewhere = ProcessIdentity("other-host", 2**22 + 17, "boot/1")

    def summary(ident: str, owner: ProcessIdentity) -> dict[str, Any]:
        labels = {
            "headwater.managed": "true",
            "headwater.host": owner.host,
            "headwater.worker": owner.token,
        }
        return {"Id": ident, "Names": [f"/{ident}"], "Labels": labels, "State": "running"}

    engine.extra_containers = [
        summary("a" * 64, dead),
        summary("b" * 64, alive),
        summary("c" * 64, elsewhere),
        summary("d" * 64, ME),
    ]
    assert await runner.sweep_orphans() == 1
    (listing,) = engine.calls(lambda r: r.path == "/containers/json")
    assert listing.query["all"] in ("1", "True", "true")
    assert '"headwater.host=worker-host"' in listing.query["filters"]
    assert engine.removed_ids == ["a" * 64]


async def test_open_runners_sweeps_the_engine_at_start(engine: FakeDockerEngine) -> None:
    from headwater.runners import close_runners, open_runners
    from headwater.runners.config import RunnersConfig
    from headwater.workspace.models import RunnerKind

    config = RunnersConfig(frozenset({RunnerKind.DOCKER}), docker=DockerConfig(base_url=engine.url))
    runners = await open_runners(config)
    try:
        assert set(runners) == {RunnerKind.DOCKER}
        (listing,) = engine.calls(lambda r: r.path == "/containers/json")
        assert '"headwater.managed=true"' in listing.query["filters"]
    finally:
        await close_runners(runners)


async def test_folders_go_into_the_container_and_its_output_folders_come_out(
    engine: FakeDockerEngine, runner: DockerRunner, tmp_path: Path
) -> None:
    state, artifacts = tmp_path / "state", tmp_path / "artifacts"
    state.mkdir()
    artifacts.mkdir()
    (state / "cert.pem").write_text("old cert")
    engine.script = Script(
        writes={"/artifacts/report.html": b"<p>hi</p>", "/artifacts/deep/a.txt": b"a"}
    )
    step = spec(copy_in=(("/state", state), ("/artifacts", artifacts)))
    step = dataclasses.replace(step, copy_out=(("/artifacts", artifacts),))
    result, _ = await run(runner, step)
    assert result.outcome is StepOutcome.SUCCEEDED
    # before the start: one archive at / holding the folders; after the exit: the copy out
    order = [
        (r.method, r.path.rsplit("/", 1)[-1], r.query.get("path"))
        for r in engine.calls(lambda r: r.path.endswith(("/archive", "/start")))
    ]
    assert order == [
        ("PUT", "archive", "/"),
        ("POST", "start", None),
        ("GET", "archive", "/artifacts"),
    ]
    assert engine.only().files["/state/cert.pem"] == b"old cert"
    assert (artifacts / "report.html").read_bytes() == b"<p>hi</p>"
    assert (artifacts / "deep" / "a.txt").read_text() == "a"
    assert engine.only().removed


async def test_a_cancelled_container_keeps_nothing(
    engine: FakeDockerEngine, runner: DockerRunner, tmp_path: Path
) -> None:
    engine.script = Script(run_until_stopped=True, writes={"/artifacts/x": b"x"})
    cancel = asyncio.Event()
    step = spec(copy_in=(("/artifacts", tmp_path),), copy_out=(("/artifacts", tmp_path),))
    task = asyncio.ensure_future(run(runner, step, cancel=cancel))
    await asyncio.sleep(0)
    while not engine.containers or engine.only().status != "running":
        await asyncio.sleep(0.02)
    cancel.set()
    result, _ = await task
    assert result.outcome is StepOutcome.CANCELLED
    assert engine.calls(lambda r: r.method == "GET" and r.path.endswith("/archive")) == []
    assert list(tmp_path.iterdir()) == []
