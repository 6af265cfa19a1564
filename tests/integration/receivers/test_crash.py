"""kill -9 of headwater while a batch is in flight: after a restart, one job per message.

The receiver runs in a child process that kills itself either after receiving a batch
but before its jobs commit, or after they commit (in one transaction) but before the
broker is acknowledged.
A fresh receiver (as after a restart) must then make exactly one job of every message.
"""

from __future__ import annotations

import signal

import pytest

from tests.integration.receivers.conftest import SECRETS, Rig, eventually
from tests.integration.receivers.crash_child import run_and_kill


@pytest.mark.parametrize("kill_at", ["before_commit", "after_commit"])
async def test_kill_9_mid_batch_then_restart_makes_one_job_per_message(
    rig: Rig, db_url: str, kill_at: str
) -> None:
    await rig.store.migrate()
    await rig.harness.publish([{"n": i} for i in range(20)])
    secrets = {**SECRETS, **getattr(rig.harness, "secrets", dict)()}
    setup = getattr(rig.harness, "child_setup", None)
    batch: list[int] = []
    returncode = await run_and_kill(db_url, kill_at, rig.trigger, secrets, setup, batch)
    assert returncode == -signal.SIGKILL, "the receiver did not reach its first batch"
    committed = len(await rig.jobs())
    if kill_at == "before_commit":
        assert committed == 0
    else:
        # The first batch committed, all of it in one transaction; the next one (read
        # meanwhile, where the receiver overlaps) was not committed.
        assert batch == [committed] and 1 <= committed < 20

    await rig.start()  # headwater restarted
    jobs = await rig.wait_jobs(20, timeout=60)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(20))
    await eventually(lambda: _settled(rig), timeout=60, what="every message acknowledged")
    assert len(await rig.jobs()) == 20


async def _settled(rig: Rig) -> bool:
    return await rig.harness.unacked() == 0 and await rig.harness.undelivered() == 0
