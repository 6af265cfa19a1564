"""Drive a distributed headwater as an operator does: ``headwater server`` and
``headwater worker`` processes on one PostgreSQL, killed and restarted at will.

Shared by tests/e2e/test_distributed.py (sized to seconds) and bench/distributed.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import HEADWATER, free_port, run_cli

# Sized so that a run with four kills stays within seconds: workers heartbeat every
# 0.3 s and lose their jobs after 2 s of silence; trigger leases last 2 s.
STALE_AFTER = 2.0
LEASE_TTL = 2.0

CLUSTER_WORKSPACE = """
actions:
  consume:
    type: script
    language: python
    script: |
      import json, os, time
      for n in range(int(os.environ["EVENTS"])):
          print("OUTPUT: " + json.dumps({"n": n}), flush=True)
      time.sleep(3600)  # a consumer never ends on its own
  handle:
    type: function
    function: "builtins:dict"
tasks:
  consumer:
    flow:
      read: { action: consume }
  process:
    input:
      n: { type: integer }
    flow:
      run: { action: handle, input: { n: "{{ input.n }}" } }
triggers:
  stream:
    type: event_source
    task: consumer
    target_task: process
    env: { EVENTS: "%(events)d" }
    dedup_key: "{{ payload.n }}"  # a restarted consumer re-reads from 0: no second job
    max_in_flight: %(max_in_flight)d
    restart_policy: always
    backoff_secs: 0.2
  hook:
    type: webhook
    task: process
"""


def write_workspace(folder: Path, events: int, max_in_flight: int = 500) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cluster.yaml"
    path.write_text(CLUSTER_WORKSPACE % {"events": events, "max_in_flight": max_in_flight})
    return path


def create_token(db_url: str, name: str) -> str:
    done = run_cli("worker-tokens", "create", name, "--db", db_url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Proc:
    """One headwater process writing its output to a log file."""

    def __init__(self, name: str, args: list[str], cwd: Path) -> None:
        self.name = name
        self.args = args
        self.cwd = cwd
        self.log = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        logf = self.log.open("a")
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        logf.close()

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Server(Proc):
    def __init__(self, name: str, workspace: Path, db_url: str, cwd: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            HEADWATER, "server", str(workspace), "--db", db_url, "--port", str(self.port),
            "--stale-after", str(STALE_AFTER), "--lease-ttl", str(LEASE_TTL),
            "--log-level", "warning", *extra,
        ]  # fmt: skip
        super().__init__(name, args, cwd)
        self.wait_healthy()

    def start(self) -> None:
        super().start()

    def restart(self) -> None:
        self.start()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become healthy: {self.output()}")


class RemoteWorkerProc(Proc):
    def __init__(
        self, name: str, servers: list[str], token: str, cwd: Path, concurrency: int = 16
    ) -> None:
        config = cwd / f"{name}-config.yaml"
        config.write_text(
            f"worker_token: {token}\n"
            "tags: [script, function]\n"
            f"concurrency: {concurrency}\n"
            f"name: {name}\n"
            "heartbeat_interval: 0.3\n"
            f"cache_dir: {cwd / (name + '-cache')}\n"
        )
        args = [HEADWATER, "worker", "--config", str(config), "--log-level", "warning"]
        for url in servers:
            args += ["--server", url]
        super().__init__(name, args, cwd)


def pg_query(db_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A query on the test database (psycopg, synchronous)."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]  # type: ignore[arg-type]


def lease_owner(db_url: str, name: str) -> tuple[str, int] | None:
    rows = pg_query(
        db_url, "SELECT owner, token FROM leases WHERE name = %s AND expires_at > now()", name
    )
    return (str(rows[0][0]), int(rows[0][1])) if rows else None


def consumer_job(db_url: str) -> tuple[str, str | None, int, str] | None:
    """(id, worker name, attempt, status) of the live consumer job."""
    rows = pg_query(
        db_url,
        "SELECT j.id, w.name, j.attempt, j.status FROM jobs j LEFT JOIN workers w"
        " ON w.id = j.worker_id WHERE j.source_type = 'event_source_consumer'"
        " AND j.status IN ('pending', 'running') ORDER BY j.created_at DESC LIMIT 1",
    )
    if not rows:
        return None
    r = rows[0]
    return str(r[0]), (str(r[1]) if r[1] is not None else None), int(r[2]), str(r[3])


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
