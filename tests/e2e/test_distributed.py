"""Distributed mode end to end: 2 servers and 2 remote workers on one PostgreSQL.

10,000 events arrive, half through an event-source consumer (run by a remote worker) and
half through a webhook (posted to either server, retried on the other with its
Idempotency-Key). Meanwhile each process is killed with SIGKILL in turn — the trigger
owner, the worker running the consumer, the new owner, the other worker — and restarted.
At the end every event has exactly one job and every job completed. The failover times
(SIGKILL until another process holds the trigger / runs the consumer) are printed.
A longer, larger run is ``bench/distributed.py --failover``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.cluster import (
    RemoteWorkerProc,
    Server,
    consumer_job,
    create_token,
    lease_owner,
    pg_query,
    wait_for,
    write_workspace,
)

EVENTS = 5000  # through the event source
HOOKS = 5000  # through the webhook

pytestmark = pytest.mark.slow


def _post_hooks(servers: list[Server], count: int, failures: list[str]) -> None:
    """POST each webhook once, moving to the other server while one is down."""
    clients = [httpx.Client(base_url=s.url, timeout=5) for s in servers]
    try:
        lock = threading.Lock()
        next_n = iter(range(count))

        def sender(offset: int) -> None:
            while True:
                with lock:
                    n = next(next_n, None)
                if n is None:
                    return
                for attempt in range(200):
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
                    failures.append(f"webhook {n} never accepted")

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in clients:
            c.close()


def _owner_pid(owner: str) -> int:
    return int(owner.split(":")[1])


async def test_two_servers_two_workers_survive_sigkill_of_each_without_loss_or_duplicates(
    tmp_path: Path, pg_url: str
) -> None:
    require_service("postgres")
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    workspace = write_workspace(tmp_path / "ws", EVENTS)
    token = create_token(pg_url, "e2e")
    s1 = Server("server1", workspace, pg_url, tmp_path)
    s2 = Server("server2", workspace, pg_url, tmp_path)
    servers = [s1, s2]
    w1 = RemoteWorkerProc("worker1", [s1.url, s2.url], token, tmp_path)
    w2 = RemoteWorkerProc("worker2", [s2.url, s1.url], token, tmp_path)
    workers = {"worker1": w1, "worker2": w2}
    procs = [*servers, *workers.values()]
    lease = "trigger:cluster/stream"
    failovers: dict[str, float] = {}
    try:
        failures: list[str] = []
        hooks = threading.Thread(target=_post_hooks, args=(servers, HOOKS, failures))
        hooks.start()
        phases["started"] = time.monotonic() - t0

        def kill_owner(label: str) -> None:
            owner, token_before = wait_for(lambda: lease_owner(pg_url, lease), 20, "an owner")
            victim = next(s for s in servers if s.proc and s.proc.pid == _owner_pid(owner))
            victim.kill()
            killed = time.monotonic()
            wait_for(
                lambda: (o := lease_owner(pg_url, lease)) and o[0] != owner and o[1] > token_before,
                30,
                "another server to take the trigger",
            )
            failovers[label] = time.monotonic() - killed
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
            failovers[label] = time.monotonic() - killed
            workers[name].start()

        time.sleep(1.0)
        kill_owner("server (trigger owner) → other server")
        kill_consumer_worker("worker (running the consumer) → other worker")
        kill_owner("server (new owner) → restarted server")
        kill_consumer_worker("worker (running the consumer) → restarted worker")
        phases["killed and restarted all four"] = time.monotonic() - t0
        hooks.join(120)
        phases["webhooks posted"] = time.monotonic() - t0
        assert not failures, failures[:5]

        def counts() -> tuple[int, int, int] | None:
            (row,) = pg_query(
                pg_url,
                "SELECT count(*) FILTER (WHERE source_type = 'event_source'),"
                " count(*) FILTER (WHERE source_type = 'webhook'),"
                " count(*) FILTER (WHERE source_type IN ('event_source', 'webhook')"
                "  AND status <> 'completed') FROM jobs",
            )
            es, wh, open_ = (int(x) for x in row)
            return (es, wh, open_) if es == EVENTS and wh == HOOKS and open_ == 0 else None

        try:
            wait_for(counts, 90, "every event's job to complete", interval=0.5)
        except AssertionError:
            print(pg_query(pg_url, "SELECT source_type, status, count(*) FROM jobs GROUP BY 1, 2"))
            raise
        phases["every job completed"] = time.monotonic() - t0
        for source in ("event_source", "webhook"):
            dups = pg_query(
                pg_url,
                "SELECT input->>'n', count(*) FROM jobs WHERE source_type = %s"
                " GROUP BY 1 HAVING count(*) > 1 LIMIT 5",
                source,
            )
            assert dups == [], f"duplicate {source} jobs: {dups}"
            (missing,) = pg_query(
                pg_url,
                "SELECT count(DISTINCT (input->>'n')::int) FROM jobs WHERE source_type = %s",
                source,
            )
            assert missing[0] == (EVENTS if source == "event_source" else HOOKS)
        live = pg_query(
            pg_url,
            "SELECT count(*) FROM jobs WHERE source_type = 'event_source_consumer'"
            " AND status IN ('pending', 'running')",
        )
        assert live[0][0] <= 1, "two consumers were alive at once"
        print("\nfailover after SIGKILL (seconds):")
        for label, seconds in failovers.items():
            print(f"  {label}: {seconds:.2f}")
        print(
            "timeline (seconds since start): "
            + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
        )
    finally:
        for p in procs:
            p.kill()
