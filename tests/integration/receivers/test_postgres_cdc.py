"""What only the PostgreSQL change-data-capture receiver does: updates and deletes (also
made while headwater was down), the old row by replica identity, the slot and the
publication it creates, a slot that keeps up while its tables are quiet."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.errors import ConfigError
from headwater.store.base import JobRecord
from headwater.triggers.receivers import ReceiverContext, create_receiver
from headwater.triggers.receivers.postgres_cdc.pgoutput import parse_lsn
from headwater.workspace.templating import TemplateEngine
from tests.integration.receivers.conftest import SECRETS, TRIGGER, Rig, eventually
from tests.integration.receivers.crash_child import run_and_kill
from tests.integration.receivers.harnesses.postgres_cdc import drop_slot

pytestmark = [
    pytest.mark.parametrize("harness", ["postgres_cdc"], indirect=True),
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),  # the slot is under test
]


def _in_wal_order(jobs: list[JobRecord]) -> list[dict[str, Any]]:
    def position(job: JobRecord) -> tuple[int, int]:
        lsn, index = job.input["metadata"]["id"].rsplit(":", 1)
        return parse_lsn(lsn), int(index)

    return [j.input for j in sorted(jobs, key=position)]


async def test_updates_and_deletes_made_while_down_are_caught_up_after_restart(rig: Rig) -> None:
    h = rig.harness
    del rig.trigger["payload_column"]  # the change itself is the payload
    await rig.start()
    await h.conn.execute(f"INSERT INTO {h.table} (id, body, note) VALUES (1, '{{}}', 'a')")
    await rig.wait_jobs(1)
    await rig.halt()
    # While headwater is down: an update, a delete and an insert in one transaction, and an
    # update with the full old row (replica identity FULL).
    async with h.conn.transaction():
        await h.conn.execute(f"UPDATE {h.table} SET note = 'b' WHERE id = 1")
        await h.conn.execute(f"INSERT INTO {h.table} (id, body, note) VALUES (2, '[1]', 'c')")
        await h.conn.execute(f"DELETE FROM {h.table} WHERE id = 1")
    await h.conn.execute(f"ALTER TABLE {h.table} REPLICA IDENTITY FULL")
    await h.conn.execute(f"UPDATE {h.table} SET note = 'd' WHERE id = 2")
    await rig.start()
    inputs = _in_wal_order(await rig.wait_jobs(5))
    changes = [
        (i["payload"]["operation"], i["payload"]["new"], i["payload"]["old"]) for i in inputs
    ]
    assert changes == [
        ("insert", {"id": 1, "body": {}, "note": "a"}, None),
        # Replica identity DEFAULT: an update without a key change carries no old row, a
        # delete only the key.
        ("update", {"id": 1, "body": {}, "note": "b"}, None),
        ("insert", {"id": 2, "body": [1], "note": "c"}, None),
        ("delete", None, {"id": 1}),
        ("update", {"id": 2, "body": [1], "note": "d"}, {"id": 2, "body": [1], "note": "c"}),
    ]
    one_txn = [i["metadata"] for i in inputs[1:4]]
    assert len({(m["xid"], m["commit_lsn"], m["commit_time"]) for m in one_txn}) == 1
    assert [m["id"].rsplit(":", 1)[1] for m in one_txn] == ["0", "1", "2"]
    for i in inputs:
        meta = i["metadata"]
        assert (meta["schema"], meta["table"], meta["slot"]) == ("public", h.table, h.slot)
        assert parse_lsn(meta["lsn"]) <= parse_lsn(meta["commit_lsn"])
        assert meta["commit_time"].endswith("+00:00")
    await eventually(lambda: _caught_up(rig), what="the slot past every change")


async def test_headwater_creates_its_slot_and_publication_with_the_chosen_operations(
    rig: Rig,
) -> None:
    h = rig.harness
    slot = f"{h.slot}_own"
    rig.trigger.update(slot=slot, operations=["insert", "truncate"])  # publication: the slot
    try:
        await rig.start()
        cur = await h.conn.execute(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication"
            " WHERE pubname = %s",
            [slot],
        )
        assert await cur.fetchone() == (True, False, False, True)
        await h.conn.execute(f"INSERT INTO {h.table} (body) VALUES ('{{\"n\": 1}}')")
        await h.conn.execute(f"UPDATE {h.table} SET note = 'not published'")
        await h.conn.execute(f"TRUNCATE {h.table}")
        await h.conn.execute(f"INSERT INTO {h.table} (body) VALUES ('{{\"n\": 2}}')")
        jobs = await rig.wait_jobs(2)
        # A truncate has no row, so no payload column: it is a dead letter that says so.
        assert sorted(j.input["payload"]["n"] for j in jobs) == [1, 2]
        (rejected,) = await rig.store.list_rejected(f"rcv/{TRIGGER}")
        assert "truncate" in rejected.reason
        await rig.halt()
    finally:
        await drop_slot(h.conn, slot)
        await h.conn.execute(f"DROP PUBLICATION IF EXISTS {slot}")


async def test_a_missing_slot_with_create_false_fails_the_start_naming_it(rig: Rig) -> None:
    h = rig.harness
    missing = f"{h.slot}_none"
    rig.trigger.update(slot=missing, publication=h.slot, create=False)
    trigger = rig.workspace().triggers[TRIGGER]
    receiver = create_receiver(trigger, lambda value, where: h.url, TemplateEngine())
    ctx = ReceiverContext(
        store=rig.store,
        dispatcher=Dispatcher(rig.store, rig.workspace),
        workspace="rcv",
        trigger=TRIGGER,
        trigger_type="postgres_cdc",
        target_task="handle",
        defaults={},
        max_in_flight=None,
    )
    with pytest.raises(ConfigError, match=f"replication slot '{missing}' does not exist"):
        await receiver.start(ctx)
    await receiver.stop()
    cur = await h.conn.execute(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", [missing]
    )
    assert await cur.fetchone() == (0,)


async def test_a_quiet_slot_follows_the_wal_and_reports_its_lag_in_bytes(rig: Rig) -> None:
    """Writes to tables outside the publication must not pile up behind the slot."""
    h = rig.harness
    manager = await rig.start()
    other = f"{h.table}_unpublished"
    await h.conn.execute(f"CREATE TABLE {other} (n int)")
    await h.conn.execute(f"INSERT INTO {other} SELECT generate_series(1, 5000)")
    cur = await h.conn.execute("SELECT pg_current_wal_lsn()::text")
    written = parse_lsn((await cur.fetchone())[0])

    async def followed() -> bool:
        cur = await h.conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            [h.slot],
        )
        return parse_lsn((await cur.fetchone())[0]) >= written

    await eventually(followed, what="the slot past the unpublished writes")
    state = (await manager.states())[TRIGGER]
    assert isinstance(state["lag_bytes"], int) and state["lag_bytes"] >= 0
    assert state["lag_events"] == 0


async def test_kill_9_between_the_job_commit_and_the_slot_advance_reads_them_again(
    rig: Rig, db_url: str
) -> None:
    """A real process killed after its first batch of jobs committed and before the slot
    moved: the slot still holds every change, the restart reads them all again, and the
    ones that are already jobs are duplicates."""
    await rig.store.migrate()
    await rig.harness.publish([{"n": i} for i in range(20)])
    secrets = {**SECRETS, **rig.harness.secrets()}
    returncode = await run_and_kill(db_url, "after_commit", rig.trigger, secrets)
    assert returncode == -signal.SIGKILL
    assert len(await rig.jobs()) == 10  # batch_size: the first batch committed
    assert await rig.harness.undelivered() == 20  # and the slot did not move
    await rig.start()
    jobs = await rig.wait_jobs(20)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(20))
    await eventually(lambda: _caught_up(rig), what="the slot past every change")
    assert len(await rig.jobs()) == 20


async def _caught_up(rig: Rig) -> bool:
    return await rig.harness.undelivered() == 0
