"""Test doubles shared by the scheduler and webhook unit tests (no tests here).

``TriggerStore`` is the in-memory store of ``tests/fakes.py`` plus rejected events;
``FakeTriggerContext`` wires it to the real Dispatcher, BatchingDispatcher and
TemplateEngine, so unit tests exercise the same dispatch path as production.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from headwater.dispatch.dispatcher import BatchingDispatcher, Dispatcher
from headwater.store.base import InsertOutcome, NewJob, RejectedEvent
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine
from tests.fakes import InMemoryStore


class TriggerStore(InMemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.rejected: list[RejectedEvent] = []
        self.insert_calls = 0
        self.fail_inserts = 0  # this many insert_jobs calls raise first

    async def insert_jobs(
        self, jobs: Sequence[NewJob], cursor: tuple[str, str] | None = None
    ) -> list[InsertOutcome]:
        self.insert_calls += 1
        if self.fail_inserts > 0:
            self.fail_inserts -= 1
            raise ConnectionError("database is down")
        return await super().insert_jobs(jobs, cursor)

    async def insert_rejected(self, events: Sequence[RejectedEvent]) -> None:
        for ev in events:
            if ev.dedup_key and any(r.dedup_key == ev.dedup_key for r in self.rejected):
                continue
            self.rejected.append(
                replace(ev, id=len(self.rejected) + 1, created_at=datetime.now(UTC))
            )

    async def list_rejected(
        self, source_id: str | None = None, limit: int = 100
    ) -> list[RejectedEvent]:
        found = [r for r in self.rejected if source_id is None or r.source_id == source_id]
        return list(reversed(found))[:limit]

    async def count_rejected(self, source_id: str) -> int:
        return sum(1 for r in self.rejected if r.source_id == source_id)


class FakeTriggerContext:
    """A TriggerContext over a TriggerStore and a swappable workspace."""

    def __init__(
        self,
        workspace: Workspace,
        secrets: Mapping[str, str] | None = None,
        store: TriggerStore | None = None,
        redact: Any = None,
    ) -> None:
        self.store = store or TriggerStore()
        self.ws = workspace
        self.templates = TemplateEngine()
        self.dispatcher = BatchingDispatcher(Dispatcher(self.store, self.workspace))
        self._secrets = dict(secrets or {})
        if redact is not None:
            self.redact = redact

    def workspace(self) -> Workspace:
        return self.ws

    def secrets(self) -> Mapping[str, str]:
        return self._secrets

    async def close(self) -> None:
        await self.dispatcher.close()
