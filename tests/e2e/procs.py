"""Drive ``headwater`` as a user does: real subprocesses, real ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

HEADWATER = str(Path(sys.executable).parent / "headwater")
REPO = Path(__file__).resolve().parents[2]

T = TypeVar("T")


STARTUP_DEADLINE = 90.0  # seconds a started server gets to answer /healthz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEADWATER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **env},
    )


class Up:
    """``headwater up`` in a subprocess; waits for /healthz."""

    def __init__(self, workspace: Path, cwd: Path, db_url: str | None = None, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [HEADWATER, "up", str(workspace), "--port", str(self.port), *extra]
        if db_url:
            args += ["--db", db_url]
        self.log = cwd / f"up-{self.port}.log"
        self._logf = self.log.open("w")
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.client = httpx.Client(base_url=self.url, timeout=10)
        # A deadline, not a wait: generous, because 4 test workers on 2 busy cores can
        # take long to start a process that imports the whole server.
        deadline = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"headwater up exited {self.proc.returncode}: {self.output()}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"headwater up did not become healthy: {self.output()}")

    def output(self) -> str:
        if not self._logf.closed:  # also after stop(), which closes it
            self._logf.flush()
        return self.log.read_text()

    def wait_job(
        self,
        job_id: str,
        timeout: float = 30,
        statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
    ) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not in {statuses} after {timeout}s: {job}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.client.close()
            self._logf.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.client.close()
        self._logf.close()


def eventually(
    check: Callable[[], T | None], timeout: float = 20, what: str = "it", every: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``.

    The pause between polls grows from 0.1 s to 0.5 s: many checks here start a
    ``headwater`` process or query a server, and polling them flat out took a core from
    the processes under test. ``every``: the first pause (1 s for a check that starts a
    process)."""
    deadline = time.monotonic() + timeout
    pause = every
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(max(0.5, every), pause * 1.3)


def up_jobs(up: Up, **filters: str | int) -> list[dict[str, Any]]:
    """``GET /api/jobs`` with filters (up to 1000 jobs, newest first)."""
    params: dict[str, str | int] = {"limit": 1000, **filters}
    resp = up.client.get("/api/jobs", params=params)
    assert resp.status_code == 200, resp.text
    jobs: list[dict[str, Any]] = resp.json()["jobs"]
    return jobs


def up_triggers(up: Up) -> dict[str, dict[str, Any]]:
    """``GET /api/triggers`` by trigger name."""
    resp = up.client.get("/api/triggers")
    assert resp.status_code == 200, resp.text
    return {t["name"]: t for t in resp.json()}
