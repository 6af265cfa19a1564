"""Concurrency keys hold across servers and workers: two `headwater server`s and two
`headwater worker` processes on PostgreSQL (each worker asks its own server, so both
servers claim at once) run 100 jobs over 10 keys (limit 1 on half of them, 2 on the
others) while one worker is killed with SIGKILL mid-run. Afterwards, from the store's
own start and finish times: no key ever had more jobs running than its limit, the
limit-1 keys ran in the order their jobs came, and every job completed once.
The long version (5,000 jobs over 50 keys): ``python bench/flow_control.py --only kill``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.e2e.flow_cluster import run_keyed_kill_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("crash")]


async def test_concurrency_keys_hold_across_two_servers_two_workers_and_a_sigkill(
    tmp_path: Path, pg_url: str
) -> None:
    require_service("postgres")
    result = run_keyed_kill_scenario(tmp_path, pg_url, jobs=100, keys=10, servers=2)
    assert result.completed == 100, result.summary()
    assert result.over_limit == [], result.summary()
    assert result.out_of_order == [], result.summary()
    assert result.requeued >= 1, "the SIGKILL should have caught a job mid-run"
    # each worker asked its own server: both servers claimed
    assert result.completed_by.get("worker1", 0) > 0, result.summary()
    assert result.completed_by.get("worker2", 0) > 0, result.summary()
