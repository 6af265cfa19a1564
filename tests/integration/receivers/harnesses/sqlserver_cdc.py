"""Harness of the sqlserver_cdc receiver: the fake SQL Server of tests/fake_sqlserver.py
(no SQL Server runs here), swapped in for the ``pymssql`` module while a test runs. A
publish is one transaction of inserts into a CDC-enabled table with a ``body`` column.

The fake lives in this process; for the kill -9 suite ``child_spec`` saves its rows to a
file, and the child process serves the same changes from it (``serve_in_child``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from headwater.triggers.receivers.sqlserver_cdc.changes import Position
from tests.fake_sqlserver import FakeSqlServer

SOURCE_ID = "rcv/incoming"
INSTANCE = "dbo_events"


class SqlServerCdcHarness:
    trigger_type = "sqlserver_cdc"
    shortened: tuple[str, ...] = ("poll_secs",)
    default_wait_secs = 1.0  # poll_secs
    # It polls: a change waits up to one poll_secs (nothing wakes it early).
    max_latency_secs = 2.0

    def __init__(self) -> None:
        self.server = FakeSqlServer()
        self.store: Any = None
        self._saved: ModuleType | None = None
        self._dump: Path | None = None

    def attach(self, store: Any) -> None:
        self.store = store

    def secrets(self) -> dict[str, str]:
        return {"mssql_password": "not-a-real-one"}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "sqlserver_cdc",
            "target_task": "handle",
            "url": "mssql://hw:{{ secret.mssql_password }}@127.0.0.1:1433/events",
            "capture_instance": INSTANCE,
            "payload_column": "body",
            "poll_secs": 0.05,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        self.server.enable(INSTANCE, ["id", "body"])
        self._saved = sys.modules.get("pymssql")
        sys.modules["pymssql"] = self.server.module()

    async def cleanup(self) -> None:
        if self._dump is not None:
            shutil.rmtree(self._dump.parent, ignore_errors=True)
        if self._saved is not None:
            sys.modules["pymssql"] = self._saved
        else:
            sys.modules.pop("pymssql", None)

    async def publish(self, payloads: list[Any]) -> list[str]:
        rows = self.server.instances[INSTANCE].rows
        first = len(rows)
        self.server.commit(
            INSTANCE,
            [("insert", {"id": i, "body": json.dumps(p)}) for i, p in enumerate(payloads, first)],
        )
        return [
            f"{INSTANCE}:{r['__$start_lsn'].hex()}:{r['__$seqval'].hex()}:2" for r in rows[first:]
        ]

    async def publish_raw(self, body: bytes) -> str:
        raise NotImplementedError("the fake's body column holds text")

    async def unacked(self) -> int:
        return 0  # changes are not "taken": the checkpoint alone says what was done

    async def undelivered(self) -> int:
        record = None
        if self.store is not None:
            record = await self.store.get_state("receiver", SOURCE_ID)
        rows = [r for r in self.server.instances[INSTANCE].rows if r["__$operation"] != 3]
        if record is None:
            return len(rows)
        done = Position.from_checkpoint(record.value)
        if done.seqval is None:
            return sum(1 for r in rows if r["__$start_lsn"] > done.lsn)
        after = (done.lsn, done.seqval, done.operation)
        return sum(
            1 for r in rows if (r["__$start_lsn"], r["__$seqval"], r["__$operation"]) > after
        )

    async def interrupt(self) -> None:
        self.server.cut()

    @property
    def child_setup(self) -> list[Any]:
        """What the kill -9 suite's child calls first to serve the same changes."""
        self._dump = Path(tempfile.mkdtemp(prefix="hw-fake-mssql-")) / "changes.json"
        self.server.save(INSTANCE, self._dump)
        return [f"{__name__}:serve_in_child", {"instance": INSTANCE, "path": str(self._dump)}]


def serve_in_child(spec: dict[str, Any]) -> None:
    """In the child process: install a fake serving the rows ``child_spec`` saved."""
    server = FakeSqlServer()
    server.load(spec["instance"], Path(spec["path"]))
    sys.modules["pymssql"] = server.module()
