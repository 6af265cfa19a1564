"""The sqlserver_cdc receiver against a real SQL Server, where one is configured.

No SQL Server runs on CI's machines, so this skips unless ``HEADWATER_SQLSERVER_URL``
names one (``mssql://sa:<password>@127.0.0.1:1433/master``, a login that may enable CDC:
sysadmin), also with HEADWATER_REQUIRE_SERVICES=1 (listed in tests/conftest.py
ALLOWED_SKIPS); the statements and the checkpoint logic are covered against recorded
result sets (tests/unit/test_sqlserver_cdc.py, the contract suite's fake). SQL Server
Agent must run (the capture job): ``MSSQL_AGENT_ENABLED=true`` in the container image.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.store.base import JobFilter, Store
from headwater.store.sql import open_store
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.triggers.receivers.sqlserver_cdc.queries import connect_params
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine
from tests.polling import eventually, join

URL = os.environ.get("HEADWATER_SQLSERVER_URL")

pytestmark = pytest.mark.skipif(
    not URL,
    reason=(
        "HEADWATER_SQLSERVER_URL is not set: no SQL Server runs on CI's machines (the"
        " queries and checkpoint logic are tested against recorded result sets)"
    ),
)


@pytest.fixture
def table() -> Iterator[tuple[Any, str]]:
    import pymssql

    assert URL is not None
    conn = pymssql.connect(**connect_params(URL), autocommit=True, login_timeout=10)
    name = f"hw_cdc_{uuid.uuid4().hex[:10]}"
    cur = conn.cursor()
    cur.execute(
        "IF (SELECT is_cdc_enabled FROM sys.databases WHERE name = DB_NAME()) = 0"
        " EXEC sys.sp_cdc_enable_db"
    )
    cur.execute(f"CREATE TABLE dbo.{name} (id int PRIMARY KEY, status nvarchar(20))")
    cur.execute(
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = %s,"
        " @role_name = NULL, @supports_net_changes = 0",
        (name,),
    )
    try:
        yield conn, name
    finally:
        cur.execute(
            "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = %s,"
            " @capture_instance = 'all'",
            (name,),
        )
        cur.execute(f"DROP TABLE dbo.{name}")
        conn.close()


async def test_inserts_updates_and_deletes_of_a_real_table_become_jobs(
    table: tuple[Any, str], tmp_path: Any
) -> None:
    conn, name = table
    ws = Workspace.model_validate(
        {
            "name": "live",
            "actions": {"noop": {"type": "script", "script": "true"}},
            "tasks": {"handle": {"flow": {"run": {"action": "noop"}}}},
            "triggers": {
                "orders": {
                    "type": "sqlserver_cdc",
                    "target_task": "handle",
                    "url": "{{ secret.url }}",
                    "capture_instance": f"dbo_{name}",
                    "poll_secs": 0.5,
                }
            },
        }
    )
    store: Store = await open_store(f"sqlite:///{tmp_path}/hw.db")
    manager = ReceiverManager(
        store, Dispatcher(store, lambda: ws), lambda: ws, TemplateEngine(), lambda: {"url": URL}
    )
    stop = asyncio.Event()
    running = asyncio.create_task(manager.run(stop))
    try:
        cur = conn.cursor()
        cur.execute(f"INSERT INTO dbo.{name} VALUES (1, N'new'), (2, N'new')")
        cur.execute(f"UPDATE dbo.{name} SET status = N'paid' WHERE id = 1")
        cur.execute(f"DELETE FROM dbo.{name} WHERE id = 2")

        async def four() -> list[Any] | None:
            jobs = await store.list_jobs(JobFilter(source_id="live/orders", limit=100))
            return jobs if len(jobs) >= 4 else None

        jobs = await eventually(four, timeout=60, what="4 jobs (the capture job scans every 5 s)")
        changes = sorted(
            (j.input["metadata"]["lsn"], j.input["metadata"]["seqval"], j.input["payload"])
            for j in jobs
        )
        assert [c[2]["operation"] for c in changes] == ["insert", "insert", "update", "delete"]
        update = changes[2][2]
        assert (update["before"]["status"], update["after"]["status"]) == ("new", "paid")
    finally:
        stop.set()
        await join([running])
        await store.close()
