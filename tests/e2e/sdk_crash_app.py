"""The app the crash-injection test runs: one consumer per delivery guarantee on one
stream, each recording every application of an event in the ``effects`` table.

With ``CRASH_SELF_KILL=p`` a handler SIGKILLs its own process with probability ``p``
at the worst moment for its guarantee: after the effect and before the commit
(EXACTLY_ONCE: must be undone; AT_LEAST_ONCE: will be redone), or after the dedup
commit and before the effect (AT_MOST_ONCE: will be lost).
"""

from __future__ import annotations

import os
import random
import signal
from functools import cache
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

import headwater
from headwater import Guarantee, StreamEvent

STREAM = os.environ.get("CRASH_STREAM", "stream:crash")
SELF_KILL = float(os.environ.get("CRASH_SELF_KILL", "0"))
_INSERT = text("INSERT INTO effects (consumer, event_uuid) VALUES (:c, :u)")

registry = headwater.Registry(app="crash")


@cache
def _engine() -> Engine:
    url = os.environ["CRASH_DB"].replace("postgresql://", "postgresql+psycopg://", 1)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, pool_size=1)
        # WAL + synchronous=NORMAL, as headwater's own store: a commit survives SIGKILL
        # (what this test does) without an fsync each.
        sa_event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Likewise: a commit survives the death of the process that made it; only a crash
    # of the server itself could lose the last ones, and this test kills no server.
    return create_engine(url, connect_args={"options": "-c synchronous_commit=off"}, pool_size=1)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _maybe_die() -> None:
    if SELF_KILL and random.random() < SELF_KILL:
        os.kill(os.getpid(), signal.SIGKILL)


@registry.consumer(STREAM, name="exactly")
def exactly(event: StreamEvent, session: Any) -> None:
    session.execute(_INSERT, {"c": "exactly", "u": event.event_uuid})
    _maybe_die()


@registry.consumer(STREAM, name="at_least", guarantee=Guarantee.AT_LEAST_ONCE)
def at_least(event: StreamEvent) -> None:
    with _engine().begin() as conn:
        conn.execute(_INSERT, {"c": "at_least", "u": event.event_uuid})
    _maybe_die()


@registry.consumer(STREAM, name="at_most", guarantee=Guarantee.AT_MOST_ONCE)
def at_most(event: StreamEvent) -> None:
    _maybe_die()
    with _engine().begin() as conn:
        conn.execute(_INSERT, {"c": "at_most", "u": event.event_uuid})
