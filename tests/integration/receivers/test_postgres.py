"""What only the PostgreSQL table receiver does: commit order, start position, rows."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tests.integration.receivers.conftest import Rig, eventually
from tests.polling import stays_true_for

pytestmark = pytest.mark.parametrize("harness", ["postgres"], indirect=True)


async def test_a_row_committed_after_a_later_key_is_not_skipped(rig: Rig) -> None:
    table = rig.trigger["table"]
    await rig.start()
    slow = await psycopg.AsyncConnection.connect(rig.harness.url)  # a long transaction takes key 1
    try:
        await slow.execute(f"INSERT INTO {table} (body) VALUES (%s::jsonb)", [json.dumps({"n": 1})])
        await rig.harness.publish([{"n": 2}])  # key 2 commits first
        # The receiver polls meanwhile (and is woken by key 2): key 2 waits for the
        # transaction that may hold less.
        await stays_true_for(lambda: _no_jobs(rig), 1.5, what="no job before key 1 commits")
        await slow.commit()
    finally:
        await slow.close()
    jobs = await rig.wait_jobs(2)
    assert sorted(j.input["payload"]["n"] for j in jobs) == [1, 2]


async def test_start_at_the_end_skips_rows_that_were_there_before(rig: Rig) -> None:
    await rig.harness.publish([{"n": 0}, {"n": 1}])
    rig.trigger["start"] = "end"
    await rig.start()
    await rig.harness.publish([{"n": 2}])
    (job,) = await rig.wait_jobs(1)
    assert job.input["payload"] == {"n": 2}


async def test_the_other_columns_arrive_as_metadata_row(rig: Rig) -> None:
    await rig.start()
    (row_id,) = await rig.harness.publish([{"n": 5}])
    (job,) = await rig.wait_jobs(1)
    meta = job.input["metadata"]
    assert meta["id"] == row_id and meta["key"] == int(row_id)
    assert meta["table"] == rig.trigger["table"]
    assert set(meta["row"]) == {"id", "created_at"}
    await eventually(lambda: _caught_up(rig), what="the checkpoint at the last row")


async def _caught_up(rig: Rig) -> bool:
    return await rig.harness.undelivered() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_notified_row_held_by_an_older_transaction_is_read_when_it_ends(
    rig: Rig,
) -> None:
    """A NOTIFY for a row that an older transaction (anywhere on the server) still holds
    back: it becomes a job soon after that transaction ends, not a ``poll_secs`` later
    (nothing notifies when it ends). Default ``poll_secs`` (5 s)."""
    del rig.trigger["poll_secs"]
    await rig.start()
    older = await psycopg.AsyncConnection.connect(rig.harness.url)
    try:
        await older.execute("SELECT txid_current()")  # an open transaction with an xid
        await rig.harness.publish([{"n": 1}])  # committed and notified, held back
        # The notification wakes the receiver, which finds nothing readable (certain: the
        # row cannot be read while ``older`` is open).
        await stays_true_for(lambda: _no_jobs(rig), 0.5, what="no job while held back")
        await older.rollback()
        released = time.monotonic()
        await rig.wait_jobs(1, timeout=10)
        waited = time.monotonic() - released
    finally:
        await older.close()
    assert waited < 4.0, f"{waited:.2f}s after the older transaction ended (poll is 5 s)"


async def _no_jobs(rig: Rig) -> bool:
    return await rig.jobs() == []
