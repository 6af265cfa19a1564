"""An outbox pipeline in one process for tests: a store, Redis, a publisher and
consumer workers as tasks, and the effect table handlers write to."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import headwater
from headwater.sdk.consumers.settings import ConsumerSettings
from headwater.sdk.consumers.worker import ConsumerWorker
from headwater.sdk.publisher import Publisher, PublisherSettings
from headwater.sdk.redis_util import connect
from headwater.sdk.registrations import ConsumerRegistration
from headwater.store.sql import SqlStore, open_store

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS effects (consumer TEXT NOT NULL, event_uuid TEXT NOT NULL)"
)


def sync_url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


def unique_stream(tag: str = "t") -> str:
    return f"stream:test:{tag}:{uuid.uuid4().hex[:10]}"


class Pipeline:
    def __init__(self, db_url: str, redis_url: str) -> None:
        self.db_url = db_url
        self.redis_url = redis_url
        self.store: SqlStore
        self.redis: Any = None
        self.engine: Engine = create_engine(sync_url(db_url))
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.streams: set[str] = set()

    async def __aenter__(self) -> Pipeline:
        self.store = await open_store(self.db_url)
        self.redis = connect(self.redis_url)
        async with self.store.engine.begin() as conn:
            await conn.execute(text(EFFECTS_DDL))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.halt()
        for stream in self.streams:
            await self.redis.delete(stream)
        await self.redis.aclose()
        await self.store.close()
        self.engine.dispose()

    # -- producing -------------------------------------------------------------------------
    def send(self, stream: str, n: int, payload: Callable[[int], dict[str, Any]] | None = None
             ) -> list[str]:  # fmt: skip
        self.streams.add(stream)
        with Session(self.engine) as session, session.begin():
            return [
                headwater.send_event(session, stream, "Thing", (payload or (lambda i: {"i": i}))(i))
                for i in range(n)
            ]

    # -- running ---------------------------------------------------------------------------
    def publisher(self, **overrides: Any) -> Publisher:
        settings = PublisherSettings(self.db_url, self.redis_url, **overrides)
        pub = Publisher(settings, store=self.store, redis=self.redis)
        self.tasks.append(asyncio.create_task(pub.run(self.stop)))
        return pub

    def worker(self, registration: Any, **overrides: Any) -> ConsumerWorker:
        assert isinstance(registration, ConsumerRegistration)
        self.streams.add(registration.stream)
        settings = ConsumerSettings(self.db_url, self.redis_url, **overrides)
        w = ConsumerWorker(registration, settings, store=self.store, redis=self.redis)
        self.tasks.append(asyncio.create_task(w.run(self.stop)))
        return w

    async def halt(self) -> None:
        self.stop.set()
        if self.tasks:
            await asyncio.gather(*self.tasks)
        self.tasks.clear()
        self.stop = asyncio.Event()

    # -- observing -------------------------------------------------------------------------
    async def effects(self, consumer: str | None = None) -> dict[str, int]:
        """event uuid → how many times a handler applied it."""
        query = "SELECT event_uuid, count(*) FROM effects"
        params: dict[str, Any] = {}
        if consumer is not None:
            query += " WHERE consumer = :c"
            params["c"] = consumer
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(text(query + " GROUP BY event_uuid"), params)).all()
        return {str(r[0]): int(r[1]) for r in rows}

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.store.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20, what: str = "it"
                     ) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def shared_redis_url() -> str:
    """The shared Redis on 6379 (tests use unique stream names on it)."""
    from tests.conftest import require_service

    require_service("redis")
    return "redis://127.0.0.1:6379/0"
