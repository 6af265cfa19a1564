"""What only the mysql_cdc receiver does: updates and deletes with their images, changes
made while headwater was down, a transaction split across batches, a purged binlog, the
grants a non-root user needs. Against the local MariaDB (binlog on, ROW format)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, PreparedBatch
from headwater.node import Node, NodeSettings
from headwater.sdk.registry import Registry
from headwater.store.base import JobFilter
from tests.integration.receivers.conftest import SOURCE_ID, TRIGGER, Rig, eventually
from tests.integration.receivers.harnesses.mysql_cdc import connect_renaming_db
from tests.polling import join, stays_true_for

# The store is not what is under test here (the contract suite runs on both).
pytestmark = [
    pytest.mark.parametrize("harness", ["mysql_cdc"], indirect=True),
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


def _table(rig: Rig) -> str:
    return f"`{rig.harness.database}`.`{rig.harness.table}`"  # type: ignore[attr-defined]


async def _sql(rig: Rig, sql: str, args: Any = None) -> int:
    result: int = await rig.harness.execute(sql, args)  # type: ignore[attr-defined]
    return result


async def _by_operation(rig: Rig, n: int) -> dict[str, list[Any]]:
    jobs = await rig.wait_jobs(n)
    out: dict[str, list[Any]] = {}
    for job in sorted(jobs, key=lambda j: _in_binlog_order(j.input["position"])):
        out.setdefault(job.input["operation"], []).append(job.input)
    return out


async def test_updates_and_deletes_carry_their_images_and_their_position(rig: Rig) -> None:
    await rig.start()
    await rig.harness.publish([{"n": 1}, {"n": 2}])
    await _sql(rig, f"UPDATE {_table(rig)} SET note = 'changed' WHERE JSON_VALUE(body, '$.n') = 1")
    await _sql(rig, f"DELETE FROM {_table(rig)} WHERE JSON_VALUE(body, '$.n') = 2")
    ops = await _by_operation(rig, 4)
    assert [len(ops[k]) for k in ("insert", "update", "delete")] == [2, 1, 1]
    (update,) = ops["update"]
    assert update["before"]["note"] is None and update["after"]["note"] == "changed"
    assert update["payload"] == {"n": 1}  # payload_column: the after image's body
    assert update["metadata"]["before"]["note"] is None  # what an SDK handler sees
    (delete,) = ops["delete"]
    assert delete["after"] is None and delete["payload"] == {"n": 2}
    assert delete["before"]["body"] is not None
    for job_input in (update, delete, *ops["insert"]):
        assert job_input["schema"] == rig.harness.database  # type: ignore[attr-defined]
        assert job_input["table"] == "events"
        assert job_input["timestamp"].endswith("+00:00")
        assert job_input["position"]["gtid"].count("-") == 2  # MariaDB: domain-server-seq
        assert job_input["metadata"]["operation"] == job_input["operation"]


@pytest.mark.parametrize("resume", ["file", "gtid"])
async def test_changes_made_while_headwater_was_down_are_caught_up(rig: Rig, resume: str) -> None:
    rig.trigger["resume"] = resume
    await rig.start()
    await rig.harness.publish([{"n": i} for i in range(4)])
    await rig.wait_jobs(4)
    await rig.halt()
    await _sql(rig, f"UPDATE {_table(rig)} SET note = 'offline' WHERE id <= 2")
    await _sql(rig, f"DELETE FROM {_table(rig)} WHERE id = 4")
    await rig.harness.publish([{"n": 9}])
    await rig.start()
    ops = await _by_operation(rig, 8)
    assert [len(ops[k]) for k in ("insert", "update", "delete")] == [5, 2, 1]
    assert {u["after"]["note"] for u in ops["update"]} == {"offline"}
    assert ops["delete"][0]["before"]["id"] == 4
    await eventually(lambda: _caught_up(rig), what="the checkpoint past the last change")


async def test_operations_and_tables_that_are_not_watched_make_no_job(rig: Rig) -> None:
    db = rig.harness.database  # type: ignore[attr-defined]
    await _sql(rig, f"CREATE TABLE `{db}`.`other` (id int PRIMARY KEY)")
    rig.trigger["operations"] = ["delete"]
    await rig.start()
    await _sql(rig, f"INSERT INTO `{db}`.`other` VALUES (1)")
    await rig.harness.publish([{"n": 1}, {"n": 2}])
    await _sql(rig, f"DELETE FROM `{db}`.`other`")
    await _sql(rig, f"DELETE FROM {_table(rig)} WHERE id = 1")
    (job,) = await rig.wait_jobs(1)
    assert job.input["operation"] == "delete" and job.input["payload"] == {"n": 1}
    await stays_true_for(lambda: _jobs_are(rig, 1), 1.0, what="no other job")


class _Counting(Dispatcher):
    seen: list[str]

    async def commit(
        self, batch: PreparedBatch, cursor: tuple[str, str] | None = None
    ) -> list[DispatchOutcome]:
        self.seen.extend(j.dedup_key or "" for j in batch.jobs)
        return await super().commit(batch, cursor)


async def test_a_transaction_split_across_batches_resumes_where_its_jobs_end(rig: Rig) -> None:
    """One 12-row transaction, 5 rows per batch, stopped after the first batch: the
    checkpoint is inside the transaction, and the restart dispatches only the 7 others."""
    rig.trigger["max_in_flight"] = 5
    rig.trigger["resume"] = "gtid"  # the GTID position before the transaction, + 5 rows
    await rig.start()
    await rig.harness.publish([{"n": i} for i in range(12)])
    await rig.wait_jobs(5)
    await rig.halt()
    state = await rig.store.get_state("receiver", SOURCE_ID)
    assert state is not None and state.value["done"] is not None  # inside the transaction
    rig.trigger.pop("max_in_flight")
    counting = _Counting(rig.store, rig.workspace)
    counting.seen = []
    await rig.start(counting)
    jobs = await rig.wait_jobs(12)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(12))
    assert len(counting.seen) == 7, "rows that were jobs already were read again"


async def test_a_purged_binlog_halts_the_trigger_with_the_reason(rig: Rig) -> None:
    """The checkpoint names a binlog file the server no longer has (as after PURGE BINARY
    LOGS while headwater was down): the trigger fails, once, saying so; nothing is skipped."""
    await rig.store.put_state("receiver", SOURCE_ID, {"file": "mysql-bin.000000", "pos": 4}, 0)
    manager = await _start_expecting(rig, "failed")
    state = (await manager.states())[TRIGGER]
    assert "mysql-bin.000000" in state["last_error"] and "purged" in state["last_error"]
    assert "if_purged: oldest" in state["last_error"]
    await stays_true_for(lambda: _still_failed(rig), 1.0, what="no restart")


async def test_if_purged_oldest_records_the_gap_and_resumes(rig: Rig) -> None:
    await rig.store.put_state("receiver", SOURCE_ID, {"file": "mysql-bin.000000", "pos": 4}, 0)
    rig.trigger["if_purged"] = "oldest"
    await rig.start()
    (gap,) = await rig.store.list_rejected(SOURCE_ID)
    assert gap.payload["lost_from"]["file"] == "mysql-bin.000000"
    assert "purged" in gap.reason
    await rig.harness.publish([{"n": 1}])
    (job,) = await rig.wait_jobs(1)
    assert job.input["payload"] == {"n": 1}


async def test_a_user_with_the_documented_grants_reads_and_one_without_is_told(
    rig: Rig,
) -> None:
    user = f"hw_cdc_{uuid.uuid4().hex[:8]}"
    db = rig.harness.database  # type: ignore[attr-defined]
    await _sql(rig, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'")
    try:
        await _sql(rig, f"GRANT SELECT ON `{db}`.* TO '{user}'@'%'")
        url = f"mysql://{user}:pw-{user}@127.0.0.1:3306"
        rig.harness.secrets = lambda: {"mysql_url": url}  # type: ignore[method-assign]
        manager = await _start_expecting(rig, "backoff")
        state = (await manager.states())[TRIGGER]
        assert "REPLICATION SLAVE" in state["last_error"], state["last_error"]
        await rig.halt()

        await _sql(
            rig,
            f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO '{user}'@'%'",
        )
        running = await rig.start()
        await rig.harness.publish([{"n": 1}])
        (job,) = await rig.wait_jobs(1)
        assert job.input["payload"] == {"n": 1}
        state = (await running.states())[TRIGGER]
        assert state["lag_bytes"] is not None  # SHOW BINARY LOGS is allowed
    finally:
        await rig.halt()
        await _sql(rig, f"DROP USER IF EXISTS '{user}'@'%'")


async def test_a_server_id_taken_by_another_reader_is_named_in_last_error(rig: Rig) -> None:
    """Another reader connects with the trigger's server_id: MariaDB keeps the newer
    connection and ends the trigger's with an error. The trigger backs off saying why,
    and reads again once the id is free."""
    await rig.start()
    # The trigger's reader is connected once a change reaches a job: only then does the
    # other reader take the id from it (on a loaded machine the trigger may connect
    # later and take the id from the other reader instead, and no error is raised).
    await rig.harness.publish([{"n": 0}])
    await rig.wait_jobs(1, timeout=30)
    holding, release = threading.Event(), threading.Event()
    other = threading.Thread(
        target=_hold_server_id, args=(rig.trigger["server_id"], holding, release), daemon=True
    )
    other.start()
    try:
        assert await asyncio.to_thread(holding.wait, 10)
        state = await eventually(lambda: _failed_once(rig), timeout=30, what="an error")
        assert "server_id" in state["last_error"], state["last_error"]
    finally:
        release.set()
        await asyncio.to_thread(other.join, 10)
    await rig.harness.publish([{"n": 1}])
    await rig.wait_jobs(2, timeout=30)


def _hold_server_id(server_id: int, holding: threading.Event, release: threading.Event) -> None:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import HeartbeatLogEvent

    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""},
        server_id=server_id,
        blocking=True,
        only_events=[HeartbeatLogEvent],
        slave_heartbeat=0.2,
        enable_logging=False,
        is_mariadb=True,
        auto_position="",
        pymysql_wrapper=connect_renaming_db,
    )
    try:
        while not release.is_set():
            stream.fetchone()
            holding.set()
    except Exception:  # the trigger took the id back while restarting: enough held
        holding.set()
    finally:
        stream.close()


def _order_changed(payload: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    before = metadata.get("before") or {}
    return {"op": metadata["operation"], "n": payload["n"], "note_was": before.get("note")}


async def test_an_sdk_function_bound_with_on_mysql_cdc_sees_each_change(
    rig: Rig, db_url: str, tmp_path: Path
) -> None:
    h: Any = rig.harness
    registry = Registry(app="cdcapp", secrets=h.secrets())
    registry.on_mysql_cdc(
        f"{h.database}.{h.table}",
        name="order-changed",
        url="{{ secret.mysql_url }}",
        payload_column="body",
        server_id=h.server_id,
        start=h.start,
    )(_order_changed)
    workspace = registry.workspace(tmp_path)
    node = Node(
        tmp_path,
        NodeSettings(db_url=db_url),
        loader=lambda _p: workspace,
        functions=registry.functions(),
    )
    await node.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
    ]
    try:
        await h.publish([{"n": 7}])
        await _sql(rig, f"UPDATE {_table(rig)} SET note = 'x'")

        async def done() -> list[Any]:
            jobs = await node.store.list_jobs(JobFilter(task="order-changed", limit=10))
            finished = [j for j in jobs if j.status.is_terminal]
            return finished if len(finished) == 2 else []

        jobs = await eventually(done, timeout=30, what="2 function jobs")
        outputs = sorted((j.output["handler"] for j in jobs), key=lambda o: o["op"])
        assert outputs == [
            {"op": "insert", "n": 7, "note_was": None},
            {"op": "update", "n": 7, "note_was": None},
        ], [j.error for j in jobs]
    finally:
        stop.set()
        try:
            await join(tasks)
        finally:
            await node.close()


# -- helpers -------------------------------------------------------------------------------
async def _failed_once(rig: Rig) -> dict[str, Any] | None:
    assert rig.manager is not None
    state: dict[str, Any] = (await rig.manager.states())[TRIGGER]
    return state if state["last_error"] else None


def _in_binlog_order(position: dict[str, Any]) -> tuple[str, int, int]:
    return position["file"], position["pos"], position["row"]


async def _start_expecting(rig: Rig, phase: str) -> Any:
    from headwater.triggers.receivers.manager import ReceiverManager
    from headwater.workspace.templating import TemplateEngine
    from tests.integration.receivers.conftest import SECRETS

    rig.harness.attach(rig.store)  # type: ignore[attr-defined]
    rig.dispatcher = Dispatcher(rig.store, rig.workspace)
    rig.stop = asyncio.Event()
    rig.manager = manager = ReceiverManager(
        rig.store,
        rig.dispatcher,
        rig.workspace,
        TemplateEngine(),
        lambda: {**SECRETS, **rig.harness.secrets()},  # type: ignore[attr-defined]
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    rig.task = asyncio.create_task(manager.run(rig.stop))

    async def reached() -> bool:
        return bool((await manager.states())[TRIGGER]["state"] == phase)

    await eventually(reached, timeout=30, what=f"the trigger to be {phase}")
    return manager


async def _still_failed(rig: Rig) -> bool:
    assert rig.manager is not None
    state = (await rig.manager.states())[TRIGGER]
    return bool(state["state"] == "failed" and state["restarts"] == 0)


async def _caught_up(rig: Rig) -> bool:
    return await rig.harness.undelivered() == 0


async def _jobs_are(rig: Rig, n: int) -> bool:
    return len(await rig.jobs()) == n
