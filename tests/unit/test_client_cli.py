"""The client commands against a real uvicorn server (in a thread) over the fake runtime."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

import headwater.cli.client_cmds
import headwater.cli.http_client
from headwater.cli import app
from headwater.cli.http_client import HeadwaterClient, Request, Response
from headwater.server.app import create_app
from headwater.store.base import JobStatus, LogStream, StepStatus
from tests.fakes import MASK, SECRET, FakeRuntime, InMemoryStore, add_step


class ServerThread:
    """uvicorn serving an app on a free port from its own thread and event loop."""

    def __init__(self, runtime: FakeRuntime, api_keys: tuple[str, ...] = ()) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(runtime, api_keys=api_keys), log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.loop.close()

    def later(self, delay: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the server's loop after ``delay`` seconds (the fake store is
        only safe to touch from that loop once requests are in flight)."""
        self.loop.call_soon_threadsafe(self.loop.call_later, delay, fn)


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def store(runtime: FakeRuntime) -> InMemoryStore:
    return runtime.store


@pytest.fixture
def server(runtime: FakeRuntime) -> Iterator[ServerThread]:
    srv = ServerThread(runtime)
    srv.start()
    yield srv
    srv.stop()


ENV = {
    "COLUMNS": "200",
    "HEADWATER_SERVER": None,
    "HEADWATER_API_KEY": None,
    "HEADWATER_API_KEYS": None,
}


def hw(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env={**ENV, **(env or {})})


# -- jobs ---------------------------------------------------------------------------


def test_jobs_table(server: ServerThread, store: InMemoryStore) -> None:
    done = store.add_job("hello", JobStatus.COMPLETED, duration=2.5)
    failed = store.add_job("deploy", JobStatus.FAILED, source_type="webhook", source_id="github")
    pending = store.add_job("hello", JobStatus.PENDING)

    result = hw("jobs", "--server", server.url)

    assert result.exit_code == 0, result.output
    out = result.output
    for j in (done, failed, pending):  # the short id: a job id's last 8 characters
        assert j.id[-8:] in out and j.id not in out
    assert out.index(pending.id[-8:]) < out.index(failed.id[-8:]) < out.index(done.id[-8:])
    for text in ("ID", "TASK", "STATUS", "SOURCE", "CREATED", "DURATION"):
        assert text in out
    assert "completed" in out and "failed" in out and "pending" in out
    assert "webhook:github" in out
    assert "2.5s" in out


def test_jobs_json_is_exactly_the_api_objects(server: ServerThread, store: InMemoryStore) -> None:
    store.add_job("hello", JobStatus.COMPLETED, {"name": "ada", "token": SECRET})
    store.add_job("deploy", JobStatus.RUNNING)

    result = hw("jobs", "--json", "--server", server.url)

    assert result.exit_code == 0, result.output
    api = httpx.get(f"{server.url}/api/jobs").json()["jobs"]
    assert json.loads(result.stdout) == api
    assert SECRET not in result.stdout
    assert json.loads(result.stdout)[1]["input"]["token"] == MASK


def test_jobs_filters(server: ServerThread, store: InMemoryStore) -> None:
    store.add_job("hello", JobStatus.FAILED)
    store.add_job("hello", JobStatus.COMPLETED)
    store.add_job("deploy", JobStatus.FAILED, source_type="webhook")

    by_status = json.loads(
        hw("jobs", "--json", "--status", "failed", "--server", server.url).stdout
    )
    by_both = json.loads(
        hw("jobs", "--json", "--status", "failed", "--task", "hello", "--server", server.url).stdout
    )
    by_source = json.loads(
        hw("jobs", "--json", "--source-type", "webhook", "--server", server.url).stdout
    )
    limited = json.loads(hw("jobs", "--json", "--limit", "1", "--server", server.url).stdout)

    assert {j["task"] for j in by_status} == {"hello", "deploy"}
    assert [(j["task"], j["status"]) for j in by_both] == [("hello", "failed")]
    assert [j["task"] for j in by_source] == ["deploy"]
    assert len(limited) == 1


def test_jobs_rejects_an_unknown_status_locally() -> None:
    result = hw("jobs", "--status", "done")
    assert result.exit_code == 2
    assert "pending" in result.output


def test_jobs_pages_past_the_api_limit(server: ServerThread, store: InMemoryStore) -> None:
    for _ in range(1005):
        store.add_job()

    result = hw("jobs", "--json", "--limit", "1003", "--server", server.url)

    jobs = json.loads(result.stdout)
    assert len(jobs) == 1003
    assert len({j["id"] for j in jobs}) == 1003


def test_no_jobs(server: ServerThread) -> None:
    result = hw("jobs", "--server", server.url)
    assert result.exit_code == 0
    assert "no jobs" in result.output


# -- job ----------------------------------------------------------------------------


def test_job_shows_steps(server: ServerThread, store: InMemoryStore) -> None:
    j = store.add_job("hello", JobStatus.FAILED, {"name": "ada"}, error="step again failed")
    add_step(store, j.id, "greet", StepStatus.COMPLETED)
    add_step(store, j.id, "again", StepStatus.FAILED)

    result = hw("job", j.id, "--server", server.url)

    assert result.exit_code == 0, result.output
    out = result.output
    assert j.id in out
    assert "failed" in out
    assert '{"name": "ada"}' in out
    assert "step again failed" in out
    assert "STEP" in out and "greet" in out and "again" in out


def test_job_shows_the_task_retry_that_followed_it(
    server: ServerThread, store: InMemoryStore
) -> None:
    failed = store.add_job("deploy", JobStatus.FAILED, error="step push failed")
    retry = store.add_job("deploy", JobStatus.RUNNING, source_type="retry", source_id=failed.id)

    shown = hw("job", failed.id, "--server", server.url).output
    assert f"retried   as job {retry.id}" in shown
    shown = hw("job", retry.id, "--server", server.url).output
    assert f"retry:{failed.id}" in shown  # its source: the failed attempt


def test_job_json(server: ServerThread, store: InMemoryStore) -> None:
    j = store.add_job("hello", JobStatus.COMPLETED)
    add_step(store, j.id, "greet", StepStatus.COMPLETED)

    result = hw("job", j.id, "--json", "--server", server.url)

    assert json.loads(result.stdout) == httpx.get(f"{server.url}/api/jobs/{j.id}").json()


def test_unknown_job_prints_the_api_message(server: ServerThread) -> None:
    result = hw("job", "nope", "--server", server.url)

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: job 'nope' not found"
    assert "Traceback" not in result.output


# -- logs ---------------------------------------------------------------------------


def test_logs_prints_step_prefixed_lines(server: ServerThread, store: InMemoryStore) -> None:
    j = store.add_job(status=JobStatus.COMPLETED)
    store.log(j.id, "hello [bold]world[/bold]", step="greet")
    store.log(j.id, "oops", step="greet", stream=LogStream.STDERR)
    store.log(j.id, f"token {SECRET}", step="again")
    store.log(j.id, "retrying", step=None, stream=LogStream.SYSTEM)

    result = hw("logs", j.id, "--server", server.url)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "[greet] hello [bold]world[/bold]",  # printed verbatim, not as markup
        "[greet:stderr] oops",
        f"[again] token {MASK}",
        "[job] retrying",
    ]


def test_logs_step_filter_and_json(server: ServerThread, store: InMemoryStore) -> None:
    j = store.add_job(status=JobStatus.COMPLETED)
    store.log(j.id, "a", step="greet")
    store.log(j.id, "b", step="again")

    result = hw("logs", j.id, "--step", "again", "--json", "--server", server.url)

    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["step"], r["line"]) for r in records] == [("again", "b")]


def test_logs_pages_through_everything(server: ServerThread, store: InMemoryStore) -> None:
    j = store.add_job(status=JobStatus.COMPLETED)
    for i in range(2500):
        store.log(j.id, f"line {i}")

    result = hw("logs", j.id, "--server", server.url)

    lines = result.stdout.splitlines()
    assert len(lines) == 2500
    assert lines[-1] == "[main] line 2499"


def test_logs_follow_until_completed(server: ServerThread, store: InMemoryStore) -> None:
    j = store.add_job(status=JobStatus.RUNNING)
    store.log(j.id, "starting")
    server.later(0.3, lambda: store.log(j.id, "working"))
    server.later(0.5, lambda: store.log(j.id, "done"))
    server.later(0.6, lambda: store.set_status(j.id, JobStatus.COMPLETED))

    started = time.monotonic()
    result = hw("logs", j.id, "--follow", "--no-timestamps", "--server", server.url)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["[main] starting", "[main] working", "[main] done"]
    assert time.monotonic() - started < 20  # it ends with the job, not at a timeout


@pytest.mark.parametrize("final", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_logs_follow_exits_1_unless_completed(
    server: ServerThread, store: InMemoryStore, final: JobStatus
) -> None:
    j = store.add_job(status=JobStatus.RUNNING)
    server.later(0.2, lambda: store.log(j.id, "boom", stream=LogStream.STDERR))
    server.later(0.3, lambda: store.set_status(j.id, final))

    result = hw("logs", j.id, "-f", "--no-timestamps", "--server", server.url)

    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["[main:stderr] boom"]
    assert final.value in result.stderr


def test_logs_follow_json_ends_with_the_end_event(
    server: ServerThread, store: InMemoryStore
) -> None:
    j = store.add_job(status=JobStatus.COMPLETED)
    store.log(j.id, "only")

    result = hw("logs", j.id, "-f", "--json", "--server", server.url)

    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["line"] == "only"
    assert records[-1] == {"event": "end", "status": "completed"}
    assert result.exit_code == 0


# -- cancel -------------------------------------------------------------------------


def test_cancel(server: ServerThread, store: InMemoryStore) -> None:
    pending = store.add_job(status=JobStatus.PENDING)
    running = store.add_job(status=JobStatus.RUNNING)
    done = store.add_job(status=JobStatus.COMPLETED)

    r1 = hw("cancel", pending.id, "--server", server.url)
    r2 = hw("cancel", running.id, "--server", server.url)
    r3 = hw("cancel", done.id, "--server", server.url)

    assert r1.exit_code == 0 and "cancelled" in r1.stdout
    assert r2.exit_code == 0 and "cancel requested" in r2.stdout
    assert r3.exit_code == 1
    assert r3.stderr.startswith("error: ") and "already completed" in r3.stderr


# -- connection and auth ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "args",
    [["jobs"], ["job", "x"], ["logs", "x"], ["logs", "x", "--follow"], ["cancel", "x"]],
)
def test_no_server_prints_one_clear_line(args: list[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"

    result = hw(*args, "--server", url)

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no headwater server answers at {url} "
        "(start one with 'headwater up PATH', or pass --server)\n"
    )
    assert result.stdout == ""


def test_default_server_message(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without --server or HEADWATER_SERVER the client goes to the default address. The
    # connection is refused in-process, so whatever listens on 8080 on this machine
    # does not matter.
    def refuse(request: Request) -> Response:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(  # the commands import the client when they run
        headwater.cli.http_client,
        "HeadwaterClient",
        functools.partial(HeadwaterClient, transport=refuse),
    )
    result = hw("jobs")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: no headwater server answers at http://127.0.0.1:8080 "
        "(start one with 'headwater up PATH', or pass --server)\n"
    )


def test_server_from_environment(server: ServerThread, store: InMemoryStore) -> None:
    j = store.add_job()
    result = hw("jobs", env={"HEADWATER_SERVER": server.url})
    assert j.id[-8:] in result.stdout


def test_token_from_option_and_environment(runtime: FakeRuntime) -> None:
    srv = ServerThread(runtime, api_keys=("k-123",))
    srv.start()
    try:
        j = runtime.store.add_job()
        without = hw("jobs", "--server", srv.url)
        wrong = hw("jobs", "--server", srv.url, "--token", "nope")
        by_option = hw("jobs", "--server", srv.url, "--token", "k-123")
        by_env = hw("jobs", "--server", srv.url, env={"HEADWATER_API_KEY": "k-123"})
    finally:
        srv.stop()

    assert without.exit_code == wrong.exit_code == 1
    assert "requires an API key" in without.stderr
    assert wrong.stderr.strip() == "error: the API key is not valid"
    assert j.id[-8:] in by_option.stdout
    assert j.id[-8:] in by_env.stdout


def test_the_client_reads_the_servers_key_variables(runtime: FakeRuntime) -> None:
    """The server's HEADWATER_API_KEYS list works for the client too (first key sent)."""
    srv = ServerThread(runtime, api_keys=("k-1", "k-2"))
    srv.start()
    try:
        j = runtime.store.add_job()
        plural = hw("jobs", "--server", srv.url, env={"HEADWATER_API_KEYS": "k-1,k-2"})
        listed = hw("jobs", "--server", srv.url, env={"HEADWATER_API_KEY": "k-2, k-1"})
    finally:
        srv.stop()
    assert j.id[-8:] in plural.stdout, plural.output
    assert j.id[-8:] in listed.stdout, listed.output


def test_a_follower_that_hangs_up_releases_its_subscriptions(
    server: ServerThread, store: InMemoryStore
) -> None:
    j = store.add_job(status=JobStatus.RUNNING)
    store.log(j.id, "first")
    subscriptions = store._broadcaster._subs  # what the follow stream holds while open

    with httpx.stream(
        "GET", f"{server.url}/api/jobs/{j.id}/logs", params={"follow": "true"}
    ) as resp:
        # Keep the iterator: a dropped one is closed, which hangs up too early.
        lines = resp.iter_lines()
        assert json.loads(next(lines))["line"] == "first"
        assert sum(len(s) for s in subscriptions.values()) == 2

    deadline = time.monotonic() + 5
    while sum(len(s) for s in subscriptions.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(len(s) for s in subscriptions.values()) == 0


# -- log timestamps -----------------------------------------------------------------

CLOCK = r"\d\d:\d\d:\d\d\.\d{3} "


def test_logs_timestamps_on_with_follow_off_without(
    server: ServerThread, store: InMemoryStore
) -> None:
    j = store.add_job(status=JobStatus.COMPLETED)
    store.log(j.id, "one")

    plain = hw("logs", j.id, "--server", server.url)
    stamped = hw("logs", j.id, "--timestamps", "--server", server.url)
    followed = hw("logs", j.id, "-f", "--server", server.url)

    assert plain.stdout.splitlines() == ["[main] one"]
    assert re.fullmatch(CLOCK + r"\[main\] one", stamped.stdout.strip()), stamped.stdout
    assert re.fullmatch(CLOCK + r"\[main\] one", followed.stdout.strip()), followed.stdout
