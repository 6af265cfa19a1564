"""Test helpers for code built on headwater.

``InMemoryStore`` is the whole ``Store`` contract in memory: it passes the same store
contract tests as SQLite and PostgreSQL (tests/integration/test_store*.py run on all
three), so a test of your own code can use it where it would open a database::

    from headwater.testing import InMemoryStore

    store = InMemoryStore()
    (outcome,) = await store.insert_jobs([NewJob("ws", "hello", {}, "api")])

Its wake-ups stay in the process (PostgreSQL's cross the processes); it is not
thread-safe (drive it from one event loop).
"""

from __future__ import annotations

from headwater.store.memory import InMemoryStore

__all__ = ["InMemoryStore"]
