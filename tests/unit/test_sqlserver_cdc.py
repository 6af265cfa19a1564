"""The sqlserver_cdc receiver against recorded CDC result sets (no SQL Server here): the
statements it sends, update pairs, the checkpoint, a checkpoint that cleanup passed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.store.base import JobFilter, JobRecord
from headwater.testing import InMemoryStore
from headwater.triggers.receivers.base import RECEIVER_NAMESPACE
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.triggers.receivers.sqlserver_cdc.changes import Position, pair_changes
from headwater.triggers.receivers.sqlserver_cdc.queries import (
    CdcQueryError,
    changes_sql,
    connect_params,
)
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine
from tests.fake_sqlserver import FakeSqlServer, OperationalError, lsn
from tests.polling import eventually, join, stays_true_for

RECORDING = Path(__file__).parent / "recordings" / "sqlserver_cdc_dbo_orders.json"
SOURCE = "ws/orders"


@pytest.fixture
def server() -> Iterator[FakeSqlServer]:
    fake = FakeSqlServer()
    fake.load("dbo_orders", RECORDING)
    saved = sys.modules.get("pymssql")
    sys.modules["pymssql"] = fake.module()
    try:
        yield fake
    finally:
        if saved is not None:
            sys.modules["pymssql"] = saved
        else:
            del sys.modules["pymssql"]


@dataclass
class Run:
    store: InMemoryStore
    manager: ReceiverManager
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def jobs(self) -> list[JobRecord]:
        jobs = await self.store.list_jobs(JobFilter(source_id=SOURCE, limit=1000))
        return sorted(jobs, key=lambda j: j.input["metadata"]["id"])

    async def wait_jobs(self, n: int) -> list[JobRecord]:
        async def enough() -> list[JobRecord] | None:
            jobs = await self.jobs()
            assert len(jobs) <= n
            return jobs if len(jobs) == n else None

        result: list[JobRecord] = await eventually(enough, what=f"{n} jobs")
        return result

    async def state(self) -> dict[str, Any]:
        return (await self.manager.states())["orders"]

    async def checkpoint(self) -> dict[str, Any] | None:
        record = await self.store.get_state(RECEIVER_NAMESPACE, SOURCE)
        return None if record is None else dict(record.value)


def _workspace(**trigger: Any) -> Workspace:
    return Workspace.model_validate(
        {
            "name": "ws",
            "actions": {"noop": {"type": "script", "script": "true"}},
            "tasks": {"handle": {"flow": {"run": {"action": "noop"}}}},
            "triggers": {
                "orders": {
                    "type": "sqlserver_cdc",
                    "target_task": "handle",
                    "url": "mssql://cdc_reader:{{ secret.pw }}@db.example:1433/shop",
                    "capture_instance": "dbo_orders",
                    "poll_secs": 0.05,
                    **trigger,
                }
            },
        }
    )


@pytest.fixture
async def start() -> AsyncIterator[Any]:
    runs: list[Run] = []

    async def run(store: InMemoryStore | None = None, **trigger: Any) -> Run:
        ws = _workspace(**trigger)
        store = store or InMemoryStore()
        manager = ReceiverManager(
            store,
            Dispatcher(store, lambda: ws),
            lambda: ws,
            TemplateEngine(),
            lambda: {"pw": "s3cret"},
            backoff_initial=0.05,
            backoff_max=0.1,
        )
        stop = asyncio.Event()
        r = Run(store, manager, stop, asyncio.create_task(manager.run(stop)))
        runs.append(r)
        return r

    yield run
    for r in runs:
        r.stop.set()
    await join([r.task for r in runs])


async def test_recorded_changes_become_one_job_each_with_before_and_after(
    server: FakeSqlServer, start: Any
) -> None:
    run = await start()
    jobs = await run.wait_jobs(6)  # 8 rows: two updates are two rows each
    by_id = {j.input["metadata"]["id"]: j.input for j in jobs}
    update = by_id["dbo_orders:0000002a000002080004:0000002a000002080002:4"]
    assert update["payload"]["before"]["status"] == "new"
    assert update["payload"]["after"]["status"] == "paid"
    assert update["metadata"]["lsn"] == "0x0000002a000002080004"
    assert update["metadata"]["update_mask"] == "0x02"
    assert "__$seqval" not in update["payload"]["after"]
    delete = by_id["dbo_orders:0000002a000002100003:0000002a000002100002:1"]
    assert delete["payload"] == {
        "operation": "delete",
        "before": {
            "id": 2,
            "status": "new",
            "total_cents": 990,
            "created_at": "2026-12-07T08:00:00.124000",
        },
        "after": None,
    }
    # The checkpoint is the last row whose job committed: the second update's after row.
    assert await eventually(run.checkpoint) == {
        "lsn": "0000002a000002200005",
        "seqval": "0000002a000002200003",
        "operation": 4,
    }
    # The login: user, password rendered from the secret, database, our application name.
    login = server.logins[0]
    assert (login["server"], login["port"], login["user"], login["password"]) == (
        "db.example",
        "1433",
        "cdc_reader",
        "s3cret",
    )
    assert login["database"] == "shop" and login["appname"].startswith("headwater:")
    described = (await run.state())["receiver"]
    assert "s3cret" not in str(described)


async def test_the_recording_has_six_changes_in_order(server: FakeSqlServer, start: Any) -> None:
    """Inserts 1 and 2 (one transaction), the update of 1, the delete of 2, insert 3 and
    its update (one transaction): six jobs, in LSN order."""
    run = await start()
    jobs = await run.wait_jobs(6)
    assert [(j.input["payload"]["operation"], _key(j)) for j in jobs] == [
        ("insert", 1),
        ("insert", 2),
        ("update", 1),
        ("delete", 2),
        ("insert", 3),
        ("update", 3),
    ]
    await stays_true_for(lambda: _count(run, 6), 0.3, what="no second job for a change")


async def test_a_batch_of_one_still_pairs_an_update(server: FakeSqlServer, start: Any) -> None:
    run = await start(batch_size=1)
    jobs = await run.wait_jobs(6)
    updates = [j.input["payload"] for j in jobs if j.input["payload"]["operation"] == "update"]
    assert [(u["before"]["status"], u["after"]["status"]) for u in updates] == [
        ("new", "paid"),
        ("new", "paid"),
    ]
    # Each read asked for two rows (one change, maybe an update's two rows), never more.
    limits = {p["limit"] for sql, p in server.statements if "fn_cdc_get_all_changes" in sql}
    assert limits == {2}


async def test_it_resumes_after_the_stored_checkpoint_mid_transaction(
    server: FakeSqlServer, start: Any
) -> None:
    store = InMemoryStore()
    # Done: the first insert of the first transaction (its second insert is not).
    done = Position(bytes.fromhex("0000002a000001f00003"), bytes.fromhex("0000002a000001f00002"), 2)
    await store.put_state(RECEIVER_NAMESPACE, SOURCE, done.to_checkpoint(), 0)
    run = await start(store)
    jobs = await run.wait_jobs(5)
    assert [_key(j) for j in jobs] == [2, 1, 2, 3, 3]
    sql, params = next((s, p) for s, p in server.statements if "fn_cdc_get_all_changes" in s)
    assert "__$seqval > %(seqval)s" in sql
    assert (params["lsn"], params["seqval"], params["op"]) == (done.lsn, done.seqval, 2)
    assert params["from_lsn"] == done.lsn  # never below the instance's minimum


async def test_changes_made_while_stopped_are_read_on_restart(
    server: FakeSqlServer, start: Any
) -> None:
    run = await start()
    await run.wait_jobs(6)
    run.stop.set()
    await join([run.task])
    server.commit("dbo_orders", [("insert", {"id": 4, "status": "new"})])
    server.commit(
        "dbo_orders", [("update", ({"id": 4, "status": "new"}, {"id": 4, "status": "paid"}))]
    )
    again = await start(run.store)
    jobs = await again.wait_jobs(8)
    assert [(j.input["payload"]["operation"], _key(j)) for j in jobs[-2:]] == [
        ("insert", 4),
        ("update", 4),
    ]


async def test_a_checkpoint_that_cleanup_passed_fails_the_trigger_loudly(
    server: FakeSqlServer, start: Any
) -> None:
    run = await start()
    await run.wait_jobs(6)
    run.stop.set()
    await join([run.task])
    # While headwater is down: two transactions, then the cleanup job removes one.
    first = server.commit("dbo_orders", [("insert", {"id": 4, "status": "new"})])
    second = server.commit("dbo_orders", [("insert", {"id": 5, "status": "new"})])
    server.cleanup("dbo_orders", second)
    again = await start(run.store)

    async def failed() -> dict[str, Any] | None:
        state = await again.state()
        return state if state["state"] == "failed" else None

    state = await eventually(failed, what="the trigger to fail")
    assert "removed by CDC cleanup" in state["last_error"]
    assert "0x" + second.hex() in state["last_error"] and "if_changes_lost" in state["last_error"]
    assert first.hex() not in str(await again.checkpoint())
    await stays_true_for(lambda: _not_retried(again), 0.3, what="no restart, no new job")


async def test_cleanup_passing_a_running_receiver_stops_it_too(
    server: FakeSqlServer, start: Any
) -> None:
    """Detected on every read, not only at start: here the receiver is held back by
    ``max_in_flight`` while the changes it has not read are cleaned up."""
    run = await start(max_in_flight=1)
    (job,) = await run.wait_jobs(1)
    gone = server.commit("dbo_orders", [("insert", {"id": 9, "status": "new"})])
    kept = server.commit("dbo_orders", [("insert", {"id": 10, "status": "new"})])
    server.cleanup("dbo_orders", kept)
    await run.store.request_cancel(job.id)  # room for the next read

    async def failed() -> dict[str, Any] | None:
        state = await run.state()
        return state if state["state"] == "failed" else None

    state = await eventually(failed, what="the trigger to fail")
    assert state["last_error"].startswith("stopped: changes of capture instance 'dbo_orders'")
    assert gone.hex() not in state["last_error"] and kept.hex() in state["last_error"]
    await stays_true_for(lambda: _count(run, 1), 0.3, what="no job after the gap")


async def test_skip_and_record_keeps_the_gap_as_a_dead_letter_and_goes_on(
    server: FakeSqlServer, start: Any
) -> None:
    run = await start()
    await run.wait_jobs(6)
    run.stop.set()
    await join([run.task])
    server.commit("dbo_orders", [("insert", {"id": 4, "status": "new"})])
    second = server.commit("dbo_orders", [("insert", {"id": 5, "status": "new"})])
    server.cleanup("dbo_orders", second)
    again = await start(run.store, if_changes_lost="skip_and_record")
    jobs = await again.wait_jobs(7)
    assert _key(jobs[-1]) == 5
    (gap,) = await again.store.list_rejected(SOURCE)
    assert "removed by CDC cleanup" in gap.reason
    assert gap.payload["oldest_kept_lsn"] == "0x" + second.hex()


async def test_start_at_the_end_skips_what_was_there(server: FakeSqlServer, start: Any) -> None:
    run = await start(start="end")
    await eventually(run.checkpoint, what="the checkpoint at the end")
    server.commit("dbo_orders", [("delete", {"id": 3, "status": "paid"})])
    (job,) = await run.wait_jobs(1)
    assert job.input["payload"]["operation"] == "delete"


async def test_an_unknown_capture_instance_is_an_error_retried_with_backoff(
    server: FakeSqlServer, start: Any
) -> None:
    run = await start(capture_instance="dbo_nope")

    async def backoff() -> dict[str, Any] | None:
        state = await run.state()
        return state if state["restarts"] >= 2 else None

    state = await eventually(backoff, what="restarts")
    assert state["state"] in ("backoff", "starting")
    assert "'dbo_nope' not found" in state["last_error"]


async def test_a_cut_connection_reconnects_and_loses_nothing(
    server: FakeSqlServer, start: Any
) -> None:
    run = await start()
    await run.wait_jobs(6)
    server.cut()
    server.commit("dbo_orders", [("insert", {"id": 4, "status": "new"})])
    jobs = await run.wait_jobs(7)
    assert _key(jobs[-1]) == 4
    assert len(server.logins) >= 2


async def test_lag_counts_changes_after_the_checkpoint(server: FakeSqlServer, start: Any) -> None:
    run = await start(max_in_flight=2)
    await run.wait_jobs(2)

    async def lag() -> int | None:
        value = (await run.state())["lag_events"]
        return value if value else None

    assert await eventually(lag, what="a lag") == 4  # the two updates count once each


async def test_payload_column_takes_the_new_row_or_the_deleted_one(
    server: FakeSqlServer, start: Any
) -> None:
    run = await start(payload_column="status")
    jobs = await run.wait_jobs(6)
    assert [j.input["payload"] for j in jobs] == ["new", "new", "paid", "new", "new", "paid"]
    assert jobs[2].input["metadata"]["before"]["status"] == "new"


def test_pair_changes_waits_for_the_after_row_past_a_cut() -> None:
    a, s = lsn(1), lsn(2)
    before = {"__$start_lsn": a, "__$seqval": s, "__$operation": 3, "id": 1}
    after = {**before, "__$operation": 4, "id": 1}
    insert = {"__$start_lsn": a, "__$seqval": lsn(1), "__$operation": 2, "id": 0}
    assert len(pair_changes("i", [insert, before], limit=5, complete=False)) == 1
    (lone,) = pair_changes("i", [before], limit=5, complete=True)  # no after row at all
    assert (lone.operation, lone.after) == ("update", None)
    (pair,) = pair_changes("i", [before, after], limit=1, complete=False)
    assert pair.position == Position(a, s, 4)


def test_the_capture_instance_is_quoted_as_one_identifier() -> None:
    sql, _ = changes_sql("dbo_odd]name'; DROP TABLE x--", None)
    assert "FROM cdc.[fn_cdc_get_all_changes_dbo_odd]]name'; DROP TABLE x--](" in sql
    with pytest.raises(CdcQueryError):
        changes_sql("a%b", None)


def test_connect_params_from_the_url() -> None:
    params = connect_params("mssql://me:p%40ss@db:14330/shop?encryption=require")
    assert params == {
        "server": "db",
        "port": "14330",
        "user": "me",
        "password": "p@ss",
        "database": "shop",
        "encryption": "require",
    }
    with pytest.raises(CdcQueryError, match="starts with"):
        connect_params("postgresql://db/shop")
    with pytest.raises(CdcQueryError, match="unknown SQL Server URL option"):
        connect_params("mssql://db/shop?trust=yes")


async def test_a_refused_login_is_retried_with_the_servers_words(
    server: FakeSqlServer, start: Any
) -> None:
    server.refuse_logins = OperationalError(18456, b"Login failed for user 'cdc_reader'.")
    run = await start()

    async def retried() -> dict[str, Any] | None:
        state = await run.state()
        return state if state["restarts"] >= 1 else None

    state = await eventually(retried, what="a retried start")
    assert "Login failed for user 'cdc_reader'" in state["last_error"]


def _key(job: JobRecord) -> int:
    payload = job.input["payload"]
    row = payload["after"] or payload["before"]
    return int(row["id"])


async def _count(run: Run, n: int) -> bool:
    return len(await run.jobs()) == n


async def _not_retried(run: Run) -> bool:
    state = await run.state()
    return state["state"] == "failed" and state["restarts"] == 0
