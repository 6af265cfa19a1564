"""The watchdog: a long-running step's container must not outlive its worker process.

Real processes: a stand-in worker starts a watchdog and is killed with SIGKILL; the
watchdog, seeing its stdin close, removes the container from the (fake) engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headwater.runners.base import StepOutcome
from headwater.runners.config import DockerConfig
from headwater.runners.docker import DockerRunner
from headwater.runners.watchdog import CleanupOrder, Watchdog
from tests.conftest import require_module
from tests.fake_docker import FakeDockerEngine, Script
from tests.integration.test_docker_runner import IMAGE, OUT, Sink, runner_for, spec
from tests.polling import eventually, stays_true_for_sync

require_module("docker", "runners")


@pytest.fixture
def engine() -> Iterator[FakeDockerEngine]:
    fake = FakeDockerEngine()
    fake.images.add(IMAGE)
    yield fake
    fake.close()


@pytest.fixture
async def runner(engine: FakeDockerEngine) -> Any:
    r = runner_for(engine)
    yield r
    await r.aclose()


def _wait_until(condition: Any, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def test_the_watchdog_removes_the_container_when_its_worker_is_killed(
    engine: FakeDockerEngine,
) -> None:
    ident = "f" * 64
    order = CleanupOrder("docker", ident, DockerConfig(base_url=engine.url).to_json(), grace=0)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from headwater.runners.watchdog import CleanupOrder, Watchdog\n"
            "w = Watchdog.start(CleanupOrder.from_line(sys.argv[1].encode()))\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(60)\n",
            order.to_line().decode().strip(),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        watchdog_pid = int(worker.stdout.readline())
        stays_true_for_sync(  # nothing happens while the worker lives
            lambda: engine.removed_ids == [], 0.3, what="no container removed"
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        _wait_until(lambda: engine.removed_ids == [ident])
        _wait_until(lambda: not Path(f"/proc/{watchdog_pid}").exists() or _zombie(watchdog_pid))
    finally:
        with contextlib.suppress(ProcessLookupError):
            worker.kill()
        worker.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


async def test_a_released_watchdog_exits_without_touching_the_engine(
    engine: FakeDockerEngine,
) -> None:
    order = CleanupOrder("docker", "e" * 64, DockerConfig(base_url=engine.url).to_json())
    watchdog = Watchdog.start(order)
    await asyncio.wait_for(watchdog.release(), 20)
    assert not Path(f"/proc/{watchdog.pid}").exists()
    assert engine.calls() == []


async def test_a_long_running_step_has_a_watchdog_until_it_ends(
    engine: FakeDockerEngine, runner: DockerRunner
) -> None:
    engine.script = Script(output=[(OUT, b"ready\n")], run_until_stopped=True)
    sink = Sink(wait_for="ready")
    cancel = asyncio.Event()
    before = _watchdogs()
    task = asyncio.create_task(runner.run(spec(die_with_parent=True), sink, cancel))
    await asyncio.wait_for(sink.seen.wait(), 30)
    # The watchdog may still be starting when the step's first line arrives.
    (watchdog,) = await eventually(lambda: _watchdogs() - before, 10, what="the watchdog")
    cancel.set()
    result = await asyncio.wait_for(task, 30)
    assert result.outcome is StepOutcome.CANCELLED
    assert not Path(f"/proc/{watchdog}").exists()
    assert len(engine.calls(lambda r: r.method == "DELETE")) == 1


def _watchdogs() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"headwater.runners.watchdog" in cmdline and int(entry.name) != os.getpid():
            status = (entry / "status").read_text()
            if f"PPid:\t{os.getpid()}\n" in status:
                found.add(int(entry.name))
    return found
