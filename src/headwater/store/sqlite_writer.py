"""The SQLite connections of the hot write paths: small transactions inline, large ones on
a thread.

Measured on the two-core machine (bench/README.md):
- aiosqlite hops to its thread and back for every statement; even one hop per
  transaction costs 0.1-0.3 ms, more than SQLite needs to claim a few jobs, and at 1,000
  events/s the hot paths run several thousand transactions a second.
- Python's sqlite3 releases the GIL around every step of a statement. While the event
  loop is busy (parsing events, running jobs) a thread that wants the GIL back waits up to
  the switch interval (5 ms) each time: ``executemany`` of 500 rows on a thread fell from
  72k to 14k rows/s next to a busy loop.

So a transaction of a few rows runs right on the event loop, on its own connection: no
hop, no GIL hand-off, well under a millisecond of loop time. A large one (an ingest batch)
runs on the writer thread, where SQLite's work overlaps the loop's, and is written as one
statement (rows bound as one JSON array) so that it hands the GIL over a few times, not
once per row. Both connections are used only under the store's write lock, so they never
write at the same time.

The inline connection must never block the loop on another process: its busy timeout is
zero, and a transaction that finds the database locked is run again on the thread, which
waits through the busy timeout. It does not checkpoint by itself either (a checkpoint
copies and syncs pages: milliseconds); every ``CHECKPOINT_EVERY`` inline commits the
thread runs a passive checkpoint, as SQLite's auto-checkpoint would have after its
commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog

__all__ = ["CHECKPOINT_EVERY", "INLINE_MAX_ROWS", "SqliteWriter"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

# Transactions of at most this many rows run inline by default (100 jobs inserted: ~1 ms).
INLINE_MAX_ROWS = 100
# Inline commits between two passive checkpoints (each commit adds a few WAL pages; the
# auto-checkpoint of a connection that writes alone runs at 1,000 pages).
CHECKPOINT_EVERY = 200


def _connect(path: Path, busy_timeout: float, autocheckpoint: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")  # the same settings as the engine's pool
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def _run(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteWriter:
    """Runs write transactions for the fast paths; see the module docstring."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-sqlite")
        self._inline: sqlite3.Connection | None = None
        self._threaded: sqlite3.Connection | None = None
        self._inline_commits = 0
        self._checkpointing = False
        self._closed = False

    async def transaction(
        self, fn: Callable[[sqlite3.Connection], T], rows: int, inline_max: int = INLINE_MAX_ROWS
    ) -> T:
        """Run ``fn`` inside BEGIN IMMEDIATE … COMMIT (ROLLBACK if it raises). It runs
        inline when it writes at most ``inline_max`` rows (``rows``: roughly how many it
        writes); statements that return a row per row written (RETURNING) hand the GIL
        over once per row on the thread, so their callers set a higher limit. The caller
        holds the write lock."""
        if rows <= inline_max and not self._closed:
            try:
                if self._inline is None:
                    self._inline = _connect(self._path, 0.0, autocheckpoint=False)
                result = _run(self._inline, fn)
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                # Another process writes: wait for it off the loop (nothing was written).
            else:
                self._inline_commits += 1
                if self._inline_commits >= CHECKPOINT_EVERY and not self._checkpointing:
                    self._inline_commits = 0
                    self._checkpoint()
                return result
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_threaded, fn)

    def _run_threaded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._threaded is None:
            self._threaded = _connect(self._path, self._busy_timeout, autocheckpoint=True)
        return _run(self._threaded, fn)

    def _checkpoint(self) -> None:
        """A passive checkpoint on the thread: it copies what it can without waiting for
        (or blocking) readers and writers."""
        self._checkpointing = True

        def work() -> None:
            if self._threaded is None:
                self._threaded = _connect(self._path, self._busy_timeout, autocheckpoint=True)
            try:
                self._threaded.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # a hint only: the next one will try again
                log.warning("store.checkpoint_failed", error=str(exc))
            finally:
                self._checkpointing = False

        self._executor.submit(work)

    async def close(self) -> None:
        self._closed = True
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        loop = asyncio.get_running_loop()

        def close_threaded() -> None:
            conn, self._threaded = self._threaded, None
            if conn is not None:
                conn.close()

        await loop.run_in_executor(self._executor, close_threaded)
        self._executor.shutdown(wait=False)
