"""Leases and fencing of consumer checkpoints as a state machine, on the real store:
whoever holds the lease, only the current token's transactions commit, the checkpoint
never moves back, and an event is recorded as processed at most once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

import headwater
from headwater import StreamEvent
from headwater.errors import LeaseLostError
from headwater.sdk.consumers import sql
from headwater.sdk.consumers.handling import EventProcessor, make_sessions
from headwater.sdk.consumers.settings import lease_name
from headwater.store.ids import utcnow
from headwater.store.sql import open_store
from headwater.store.sqlite import BEGIN_OPTION

STREAM = "stream:fencing"
CONSUMER = "t.fenced"
LEASE = lease_name(STREAM, CONSUMER)
OWNERS = ("a", "b", "c")


def make_machine(db_url: str) -> type[RuleBasedStateMachine]:
    reg = headwater.Registry(app="t")

    @reg.consumer(STREAM, name="fenced")
    def fenced(event: StreamEvent, session: Any) -> None:
        session.execute(text("INSERT INTO effects VALUES ('fenced', :u)"), {"u": event.event_uuid})

    class Fencing(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.store = self.run(open_store(db_url))
            bind = self.store.engine
            if self.store.dialect == "sqlite":
                bind = bind.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            self.processor = EventProcessor(reg.get("fenced"), make_sessions(bind))  # type: ignore[arg-type]
            self.tokens: dict[str, int] = {}  # the token each owner last got
            self.holder: str | None = None
            self.last_owner: str | None = None  # the lease row's owner, expired or not
            self.seq = 0
            self.checkpoint = (0, 0)
            self.applied: set[str] = set()
            self.run(self._reset())

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        async def _reset(self) -> None:
            async with self.store.engine.begin() as conn:
                await conn.execute(text("CREATE TABLE IF NOT EXISTS effects (c TEXT, u TEXT)"))
                for table in ("effects", "processed_events", "consumer_checkpoints", "leases"):
                    await conn.execute(text(f"DELETE FROM {table}"))

        @rule(owner=st.sampled_from(OWNERS))
        def acquire(self, owner: str) -> None:
            lease = self.run(self.store.acquire_lease(LEASE, owner, 60))
            if self.holder is None or self.holder == owner:
                assert lease is not None
                if owner != self.last_owner:  # a new holder: a larger token than anyone's
                    assert lease.token > max(self.tokens.values(), default=0)
                else:  # its own lease again (renewed, or expired and not taken): same token
                    assert lease.token == self.tokens[owner]
                self.holder = self.last_owner = owner
                self.tokens[owner] = lease.token
                fence = sql.Fence(STREAM, CONSUMER, LEASE, owner, lease.token)

                async def ensure() -> None:
                    async with self.store.engine.begin() as conn:
                        await sql.ensure_checkpoint(conn, fence)

                self.run(ensure())
            else:
                assert lease is None  # held by someone else, not expired

        @rule()
        def expire(self) -> None:
            async def expire() -> None:
                async with self.store.engine.begin() as conn:
                    await conn.execute(
                        text("UPDATE leases SET expires_at = :t"),
                        {"t": utcnow() - timedelta(seconds=1)},
                    )

            self.run(expire())
            self.holder = None

        @rule(owner=st.sampled_from(OWNERS), repeat=st.booleans())
        def commit(self, owner: str, repeat: bool) -> None:
            if owner not in self.tokens:
                return
            if not repeat or not self.applied:
                self.seq += 1
            uuid = f"e{self.seq}"
            entry = (1000 + self.seq, 0)
            event = StreamEvent(STREAM, f"{entry[0]}-0", "T", self.seq, uuid, {}, None)
            fence = sql.Fence(STREAM, CONSUMER, LEASE, owner, self.tokens[owner])
            current = owner == self.holder or (
                self.holder is None and self.tokens[owner] == max(self.tokens.values())
            )
            try:
                self.run(self.processor.process(event, fence))
            except LeaseLostError:
                assert not current, "the holder's commit was refused"
                return
            assert current, f"a stale token ({owner}) committed"
            self.applied.add(uuid)
            self.checkpoint = max(self.checkpoint, entry)

        @invariant()
        def stored_state_matches(self) -> None:
            async def read() -> tuple[Any, ...]:
                async with self.store.engine.connect() as conn:
                    effects = (await conn.execute(text("SELECT u FROM effects"))).scalars().all()
                    row = (
                        await conn.execute(
                            text("SELECT last_ms, last_seq FROM consumer_checkpoints")
                        )
                    ).first()
                return list(effects), row

            effects, row = self.run(read())
            assert sorted(effects) == sorted(self.applied)  # each applied exactly once
            if row is not None and self.applied:
                assert (row[0], row[1]) == self.checkpoint

        def teardown(self) -> None:
            self.run(self.store.close())
            self.loop.close()

    return Fencing


def test_only_the_current_token_commits(db_url: str) -> None:
    run_state_machine_as_test(
        make_machine(db_url),
        settings=settings(
            max_examples=25 if db_url.startswith("sqlite") else 10,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
