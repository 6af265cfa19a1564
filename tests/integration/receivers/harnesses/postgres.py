"""Harness of the postgres receiver: a table with a NOTIFY trigger, in a database of its own
(so that ``interrupt`` cuts only this test's receiver, also under pytest-xdist)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import PG_DATABASES, require_service

SOURCE_ID = "rcv/incoming"


class PostgresHarness:
    trigger_type = "postgres"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("poll_secs",)
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 5.0

    def __init__(self) -> None:
        require_service("postgres")
        self.url = ""  # a database of its own, taken in setup()
        self.table = f"hw_test_events_{uuid.uuid4().hex[:10]}"
        self.channel = f"{self.table}_new"
        self.conn: Any = None
        self.store: Any = None

    def attach(self, store: Any) -> None:
        self.store = store

    def secrets(self) -> dict[str, str]:
        return {"pg_url": self.url}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "postgres",
            "target_task": "handle",
            "url": "{{ secret.pg_url }}",
            "table": self.table,
            "key_column": "id",
            "payload_column": "body",
            "channel": self.channel,
            "poll_secs": 1,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        import psycopg

        self.url = await PG_DATABASES.take()
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        t, ch = self.table, self.channel
        await self.conn.execute(
            f"CREATE TABLE {t} (id bigserial PRIMARY KEY, body jsonb,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        await self.conn.execute(
            f"CREATE FUNCTION {t}_notify() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN PERFORM pg_notify('{ch}', NEW.id::text); RETURN NEW; END $$"
        )
        await self.conn.execute(
            f"CREATE TRIGGER {t}_new AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_notify()"
        )

    async def cleanup(self) -> None:

        await self.conn.close()
        await PG_DATABASES.give_back(self.url)

    async def publish(self, payloads: list[Any]) -> list[str]:
        ids = []
        async with self.conn.transaction():
            for p in payloads:
                cur = await self.conn.execute(
                    f"INSERT INTO {self.table} (body) VALUES (%s::jsonb) RETURNING id",
                    [json.dumps(p)],
                )
                row = await cur.fetchone()
                ids.append(str(row[0]))
        return ids

    async def publish_raw(self, body: bytes) -> str:
        raise NotImplementedError("a jsonb column holds JSON only")

    async def unacked(self) -> int:
        return 0  # rows are not "taken": the checkpoint alone says what was done

    async def undelivered(self) -> int:
        position = None
        if self.store is not None:
            record = await self.store.get_state("receiver", SOURCE_ID)
            position = record.value.get("key") if record else None
        if position is None:
            cur = await self.conn.execute(f"SELECT count(*) FROM {self.table}")
        else:
            cur = await self.conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE id > %s", [position]
            )
        row = await cur.fetchone()
        return int(row[0])

    async def interrupt(self) -> None:
        # PostgreSQL is shared: terminate only this receiver's sessions, in this database.
        await self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'headwater:postgres:%%'"
        )
