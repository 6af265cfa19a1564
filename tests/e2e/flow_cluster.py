"""Servers and two remote workers on PostgreSQL running keyed jobs while one worker is
SIGKILLed; shared by tests/e2e/test_flow_control_kill.py (sized to seconds) and
bench/flow_control.py (the long version). With two servers, each worker asks its own
server first, so the two servers claim keyed jobs at the same time, each for its
worker: the limits must hold across servers, not only across one server's claims."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from tests.e2e.cluster import (
    RemoteWorkerProc,
    Server,
    create_token,
    pg_query,
    wait_for,
)

WORKSPACE = """
actions:
  work:  # a 20 ms job without a process to start: runs can overlap, and do quickly
    type: function
    function: "asyncio:sleep"
tasks:
  process:
    input:
      n: { type: integer }
      k: { type: string }
      limit: { type: integer }
    concurrency: { key: "{{ input.k }}", limit: 2 }
    flow:
      run: { action: work, input: { delay: 0.02 } }
  process_one:
    input:
      n: { type: integer }
      k: { type: string }
    concurrency: { key: "{{ input.k }}", limit: 1 }
    flow:
      run: { action: work, input: { delay: 0.02 } }
triggers:
  two:
    type: webhook
    task: process
  one:
    type: webhook
    task: process_one
"""

UNDER_LOAD_SECS = 5.0  # heartbeat deadline: a live worker on a loaded CI box is not dead


@dataclass
class KeyedResult:
    completed: int = 0
    requeued: int = 0
    over_limit: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    completed_by: dict[str, int] = field(default_factory=dict)  # worker name → jobs

    def summary(self) -> str:
        return (
            f"completed {self.completed}, statuses {self.statuses}, requeued {self.requeued}, "
            f"over limit {self.over_limit[:5]}, out of order {self.out_of_order[:5]}, "
            f"completed by {self.completed_by}"
        )


def _post_all(urls: list[str], jobs: int, keys: int) -> None:
    clients = [httpx.Client(base_url=url, timeout=10) for url in urls]
    try:
        for n in range(jobs):
            key = n % keys
            hook = "one" if key % 2 == 0 else "two"
            resp = clients[n % len(clients)].post(
                f"/hooks/{hook}",
                json={"n": n, "k": f"key{key}"},
                headers={"Idempotency-Key": f"flow-{n}"},
            )
            assert resp.status_code in (200, 202), resp.text
    finally:
        for client in clients:
            client.close()


def _done(db_url: str) -> int:
    return int(pg_query(db_url, "SELECT count(*) FROM jobs WHERE status = 'completed'")[0][0])


def _running_on(db_url: str, worker: str) -> int:
    return int(
        pg_query(
            db_url,
            "SELECT count(*) FROM jobs j JOIN workers w ON w.id = j.worker_id"
            " WHERE j.status = 'running' AND w.name = %s",
            worker,
        )[0][0]
    )


def _completed_on(db_url: str, worker: str) -> int:
    return int(
        pg_query(
            db_url,
            "SELECT count(*) FROM jobs j JOIN workers w ON w.id = j.worker_id"
            " WHERE j.status = 'completed' AND w.name = %s",
            worker,
        )[0][0]
    )


def _worker_ids(db_url: str) -> dict[str, str]:
    """Worker id → name while both are registered (a dead worker's row is removed)."""
    return {str(i): str(n) for i, n in pg_query(db_url, "SELECT id, name FROM workers")}


def run_keyed_kill_scenario(
    tmp: Path, pg_url: str, jobs: int, keys: int, timeout: float = 240, servers: int = 2
) -> KeyedResult:
    t0 = time.monotonic()
    folder = tmp / "ws"
    folder.mkdir(parents=True, exist_ok=True)
    workspace = folder / "flow.yaml"
    workspace.write_text(WORKSPACE)
    token = create_token(pg_url, "flow")
    timing = {"stale_after": UNDER_LOAD_SECS, "lease_ttl": UNDER_LOAD_SECS}
    with ThreadPoolExecutor(servers) as pool:  # started side by side: each waits for health
        nodes = list(
            pool.map(
                lambda i: Server(f"server{i + 1}", workspace, pg_url, tmp, **timing), range(servers)
            )
        )
    urls = [s.url for s in nodes]
    w1 = RemoteWorkerProc("worker1", urls, token, tmp, concurrency=8)
    w2 = RemoteWorkerProc("worker2", urls[1:] + urls[:1], token, tmp, concurrency=8)
    result = KeyedResult()
    try:
        poster = threading.Thread(target=_post_all, args=(urls, jobs, keys), daemon=True)
        poster.start()
        wait_for(lambda: _done(pg_url) >= jobs // 4, timeout, "a quarter of the jobs")
        # Under load worker1 can start late: it must have finished a job of its own and
        # hold another when it is killed.
        wait_for(
            lambda: _completed_on(pg_url, "worker1") and _running_on(pg_url, "worker1"),
            timeout,
            "worker1 with a job completed and one running",
        )
        w1.kill()  # at once: its 20 ms jobs must still be running
        names = _worker_ids(pg_url)  # before recovery removes the killed worker's row
        poster.join(timeout)
        wait_for(lambda: _done(pg_url) >= jobs, timeout, f"{jobs} completed jobs")
        for worker_id, count in pg_query(
            pg_url, "SELECT worker_id, count(*) FROM jobs WHERE status = 'completed' GROUP BY 1"
        ):
            name = names.get(str(worker_id), str(worker_id))
            result.completed_by[name] = result.completed_by.get(name, 0) + int(count)
    finally:
        w1.kill()
        w2.stop()
        for node in nodes:
            node.stop()
    result.seconds = time.monotonic() - t0
    rows = pg_query(
        pg_url,
        "SELECT id, concurrency_key, concurrency_limit, status, attempt, created_at,"
        " started_at, finished_at FROM jobs ORDER BY created_at, id",
    )
    result.statuses = dict(
        pg_query(pg_url, "SELECT status, count(*) FROM jobs GROUP BY status")  # type: ignore[arg-type]
    )
    result.completed = sum(1 for r in rows if r[3] == "completed")
    result.requeued = sum(1 for r in rows if int(r[4]) > 1)
    check_keys(rows, result)
    return result


def check_keys(rows: list[tuple[object, ...]], result: KeyedResult) -> None:
    """Per key, from the store's own times: the peak of overlapping [started, finished)
    runs stays within the limit; limit-1 keys started in the order their jobs came."""
    by_key: dict[str, list[tuple[object, ...]]] = defaultdict(list)
    for r in rows:
        by_key[str(r[1])].append(r)
    for key, runs in by_key.items():
        limit = int(runs[0][2])  # type: ignore[call-overload]
        events: list[tuple[datetime, int]] = []
        for r in runs:
            events += [(r[6], 1), (r[7], -1)]  # type: ignore[list-item]
        level = peak = 0
        for _, step in sorted(events):
            level += step
            peak = max(peak, level)
        if peak > limit:
            result.over_limit.append(f"{key}: {peak} > {limit}")
        if limit == 1:
            started = [r[0] for r in sorted(runs, key=lambda r: r[6])]  # type: ignore[arg-type, return-value]
            if started != [r[0] for r in runs]:
                result.out_of_order.append(key)
