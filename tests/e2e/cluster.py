"""Drive a distributed headwater as an operator does: ``headwater server`` and
``headwater worker`` processes on one PostgreSQL, killed and restarted at will.

Shared by tests/e2e/test_distributed.py (sized to seconds) and bench/distributed.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import HEADWATER, STARTUP_DEADLINE, free_port, run_cli

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
    def __init__(
        self,
        name: str,
        workspace: Path,
        db_url: str,
        cwd: Path,
        *extra: str,
        stale_after: float = STALE_AFTER,
        lease_ttl: float = LEASE_TTL,
        wait: bool = True,  # False: start its workers meanwhile, then wait_healthy()
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            HEADWATER, "server", str(workspace), "--db", db_url, "--port", str(self.port),
            "--stale-after", str(stale_after), "--lease-ttl", str(lease_ttl),
            "--log-level", "warning", *extra,
        ]  # fmt: skip
        super().__init__(name, args, cwd)
        if wait:
            self.wait_healthy()

    def restart(self) -> None:
        self.start()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = STARTUP_DEADLINE) -> None:
        wait_healthy(self, self.url, timeout)


def wait_healthy(proc: Proc, url: str, timeout: float = STARTUP_DEADLINE) -> None:
    """Until ``url``/healthz answers 200 (fails when the process exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited: {proc.output()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not become healthy: {proc.output()}")


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


# -- the failover scenario (tests/e2e/test_distributed.py small, bench/distributed.py big) --


def post_hooks(
    servers: list[Server],
    count: int,
    failures: list[str],
    stop: threading.Event,
    threads: int = 8,
) -> None:
    """POST each webhook once (its Idempotency-Key makes a retry harmless), moving to the
    other server while one is down; gives up when ``stop`` is set."""
    clients = [httpx.Client(base_url=s.url, timeout=5) for s in servers]
    lock = threading.Lock()
    numbers = iter(range(count))

    def sender(offset: int) -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None or stop.is_set():
                return
            for attempt in range(400):
                client = clients[(n + offset + attempt) % len(clients)]
                try:
                    resp = client.post(
                        "/hooks/hook", json={"n": n}, headers={"Idempotency-Key": f"hook-{n}"}
                    )
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                if resp.status_code in (200, 202):
                    break
                time.sleep(0.05)
            else:
                failures.append(f"webhook {n} was never accepted")

    try:
        workers = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    finally:
        for c in clients:
            c.close()


@dataclass
class ScenarioResult:
    failovers: list[tuple[str, float]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    by_source: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # jobs, distinct, dup


def run_failover_scenario(
    tmp: Path,
    pg_url: str,
    events: int,
    hooks: int,
    rounds: int = 1,
    timeout: float = 90,
    stale_after: float = STALE_AFTER,
    lease_ttl: float = LEASE_TTL,
) -> ScenarioResult:
    """2 servers, 2 remote workers; ``events`` through the event source and ``hooks``
    webhooks while, ``rounds`` times, the trigger owner, the worker running the consumer,
    the new owner and the other worker are SIGKILLed in turn (and restarted). Returns the
    failover times and, per source, (jobs, distinct events, events with several jobs)."""
    t0 = time.monotonic()
    result = ScenarioResult()
    workspace = write_workspace(tmp / "ws", events)
    token = create_token(pg_url, "scenario")
    timing = {"stale_after": stale_after, "lease_ttl": lease_ttl}
    s1 = Server("server1", workspace, pg_url, tmp, **timing)
    s2 = Server("server2", workspace, pg_url, tmp, **timing)
    servers = [s1, s2]
    workers = {
        "worker1": RemoteWorkerProc("worker1", [s1.url, s2.url], token, tmp),
        "worker2": RemoteWorkerProc("worker2", [s2.url, s1.url], token, tmp),
    }
    lease = "trigger:cluster/stream"
    failures: list[str] = []
    stop = threading.Event()
    try:
        poster = threading.Thread(
            target=post_hooks, args=(servers, hooks, failures, stop), daemon=True
        )
        poster.start()
        result.phases["started"] = time.monotonic() - t0

        def kill_owner(label: str) -> None:
            owner, token_before = wait_for(lambda: lease_owner(pg_url, lease), 20, "an owner")
            pid = int(owner.split(":")[1])
            victim = next(s for s in servers if s.proc and s.proc.pid == pid)
            victim.kill()
            killed = time.monotonic()
            wait_for(
                lambda: (o := lease_owner(pg_url, lease)) and o[0] != owner and o[1] > token_before,
                30,
                "another server to take the trigger",
            )
            result.failovers.append((label, time.monotonic() - killed))
            victim.restart()

        def kill_consumer_worker(label: str) -> None:
            job = wait_for(
                lambda: (j := consumer_job(pg_url)) and j[3] == "running" and j[1] in workers and j,
                30,
                "a running consumer",
            )
            job_id, name, attempt, _ = job
            workers[name].kill()
            killed = time.monotonic()
            wait_for(
                lambda: (
                    (j := consumer_job(pg_url))
                    and j[3] == "running"
                    and j[1] != name
                    and (j[0] != job_id or j[2] > attempt)
                ),
                30,
                "the consumer to run on another worker",
            )
            result.failovers.append((label, time.monotonic() - killed))
            workers[name].start()

        time.sleep(1.0)
        for _ in range(rounds):
            kill_owner("server (trigger owner) -> other server")
            kill_consumer_worker("worker (running the consumer) -> other worker")
            kill_owner("server (new owner) -> restarted server")
            kill_consumer_worker("worker (running the consumer) -> restarted worker")
        result.phases["killed and restarted"] = time.monotonic() - t0
        poster.join(timeout)
        result.phases["webhooks posted"] = time.monotonic() - t0
        assert not failures, failures[:5]

        def settled() -> bool:
            (row,) = pg_query(
                pg_url,
                "SELECT count(*) FILTER (WHERE source_type = 'event_source'),"
                " count(*) FILTER (WHERE source_type = 'webhook'),"
                " count(*) FILTER (WHERE source_type IN ('event_source', 'webhook')"
                "  AND status <> 'completed') FROM jobs",
            )
            es, wh, unfinished = (int(x) for x in row)
            return es >= events and wh >= hooks and unfinished == 0

        try:
            wait_for(settled, timeout, "every event's job to complete", interval=0.5)
        except AssertionError:
            summary = pg_query(
                pg_url, "SELECT source_type, status, count(*) FROM jobs GROUP BY 1, 2"
            )
            raise AssertionError(f"not every job completed: {summary}") from None
        result.phases["every job completed"] = time.monotonic() - t0
        for source in ("event_source", "webhook"):
            (row,) = pg_query(
                pg_url,
                "SELECT count(*), count(DISTINCT input->>'n'),"
                " (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE source_type = %s"
                "  GROUP BY input->>'n' HAVING count(*) > 1) AS d)"
                " FROM jobs WHERE source_type = %s",
                source,
                source,
            )
            result.by_source[source] = (int(row[0]), int(row[1]), int(row[2]))
        (live,) = pg_query(
            pg_url,
            "SELECT count(*) FROM jobs WHERE source_type = 'event_source_consumer'"
            " AND status IN ('pending', 'running')",
        )
        result.phases["live consumers at the end"] = float(live[0])
        return result
    finally:
        stop.set()
        for p in [*servers, *workers.values()]:
            p.kill()
