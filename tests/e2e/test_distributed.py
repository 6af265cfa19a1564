"""Distributed mode end to end: 2 servers and 2 remote workers on one PostgreSQL.

4,000 events arrive (CI's size; bench/distributed.py --failover runs more), half through
an event-source consumer (run by a remote worker) and half through a webhook (posted to
either server, retried on the other with its Idempotency-Key). Meanwhile each process is
killed with SIGKILL in turn — the trigger owner, the worker running the consumer, the new
owner, the other worker — and restarted.
At the end every event has exactly one job and every job completed. The failover times
(SIGKILL until another process holds the trigger / runs the consumer) are printed.
A longer, larger run: ``python bench/distributed.py --failover``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.e2e.cluster import run_failover_scenario

EVENTS = 2000  # through the event source
HOOKS = 2000  # through the webhook

# 4,000 events through 4 processes that are SIGKILLed in turn: on 2 cores shared with
# 3 other test workers it can need more than the suite's 180 s deadline.
# The kill -9 tests run one at a time (one xdist group): two of them side by side on
# 2 cores starve each other's heartbeats.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.xdist_group("crash")]
# A live process under the suite's load can miss a 2 s heartbeat deadline and be taken
# for dead (its jobs then count a worker death each time); 5 s keeps the test about
# SIGKILL, not scheduling. bench/distributed.py --failover measures the 2 s failover.
UNDER_LOAD_SECS = 5.0


async def test_two_servers_two_workers_survive_sigkill_of_each_without_loss_or_duplicates(
    tmp_path: Path, pg_url: str
) -> None:
    require_service("postgres")
    result = run_failover_scenario(
        tmp_path, pg_url, EVENTS, HOOKS, stale_after=UNDER_LOAD_SECS, lease_ttl=UNDER_LOAD_SECS
    )
    # (jobs, distinct events, events with more than one job) per source
    assert result.by_source["event_source"] == (EVENTS, EVENTS, 0)
    assert result.by_source["webhook"] == (HOOKS, HOOKS, 0)
    assert result.phases["live consumers at the end"] <= 1
    assert len(result.failovers) == 4
    print("\nfailover after SIGKILL (seconds):")
    for label, seconds in result.failovers:
        print(f"  {label}: {seconds:.2f}")
    print("timeline (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.phases.items()))
