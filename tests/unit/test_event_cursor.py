"""Event-source cursors in the line hook: the reserved field leaves the payload, keys the
event, and the stored cursor never runs ahead of an event that was not stored."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from headwater.store.base import LogStream
from headwater.triggers.cursor import CURSOR_FIELD, MAX_CURSOR_CHARS, take_cursor
from headwater.triggers.emitter import EmitBatch, EmitResult
from tests.polling import stays_true_for
from tests.unit.test_emitter import (
    PREFIX,
    STEP,
    TRIGGER,
    FakeEmitter,
    FakeLogs,
    GatedEmitter,
    eventually,
    make_hook,
)


def line(n: int, cursor: Any = None) -> str:
    payload: dict[str, Any] = {"n": n}
    if cursor is not None:
        payload[CURSOR_FIELD] = cursor
    return "OUTPUT: " + json.dumps(payload)


class CursorEmitter(FakeEmitter):
    def __init__(self) -> None:
        super().__init__()
        self.cursors: list[str | None] = []  # the cursor of every committed batch

    async def emit(self, batch: EmitBatch) -> EmitResult:
        result = await super().emit(batch)
        self.cursors.append(batch.cursor)
        return result


async def test_the_cursor_field_keys_the_event_and_goes_with_its_batch() -> None:
    emitter = CursorEmitter()
    hook = make_hook(emitter, FakeLogs())
    await hook(STEP, LogStream.STDOUT, line(1, "a-1"), False)
    await hook(STEP, LogStream.STDOUT, line(2, 42), False)  # an integer: its text
    await hook(STEP, LogStream.STDOUT, line(3), False)  # none: keyed by its line
    await hook.close()
    assert emitter.created == [f"es:{TRIGGER}:cursor:a-1", f"es:{TRIGGER}:cursor:42", f"{PREFIX}:3"]
    assert all(CURSOR_FIELD not in p for p in emitter.jobs.values())
    assert [p["n"] for p in emitter.jobs.values()] == [1, 2, 3]
    # The last cursor of what each batch held (here the last batch held an event without).
    assert [c for c in emitter.cursors if c is not None][-1] == "42"


async def test_a_bad_cursor_is_ignored_with_a_warning_and_the_event_kept() -> None:
    emitter, logs = CursorEmitter(), FakeLogs()
    hook = make_hook(emitter, logs)
    bad: list[Any] = [True, {"x": 1}, "", "x" * (MAX_CURSOR_CHARS + 1), 1.5]
    for n, cursor in enumerate(bad, 1):
        await hook(STEP, LogStream.STDOUT, line(n, cursor), False)
    await hook.close()
    assert emitter.created == [f"{PREFIX}:{n}" for n in range(1, len(bad) + 1)]
    assert all(CURSOR_FIELD not in p for p in emitter.jobs.values())
    assert set(emitter.cursors) == {None}
    assert len(logs.lines) == len(bad)
    assert all(CURSOR_FIELD in x.line for x in logs.lines)
    assert {(x.job_id, x.step, x.stream) for x in logs.lines} == {
        ("job-1", STEP, LogStream.SYSTEM)
    }  # on the consumer's step, where `headwater logs` shows it


async def test_with_cursors_one_batch_at_a_time_so_a_cursor_never_passes_a_lost_batch() -> None:
    """Without cursors a second batch is stored while the first is on its way; were the
    second's cursor stored while the first failed, a restart would skip the first."""
    emitter = GatedEmitter()
    hook = make_hook(emitter, FakeLogs(), max_batch=10)
    for n in (1, 2):
        await hook(STEP, LogStream.STDOUT, line(n, str(n)), False)
    await eventually(lambda: len(emitter.gates) == 1)
    for n in (3, 4):
        await hook(STEP, LogStream.STDOUT, line(n, str(n)), False)
    await stays_true_for(lambda: len(emitter.gates) == 1, 0.1, what="the second batch waiting")
    emitter.gates[0].set()  # the first fails: everything is sent again, in order
    await eventually(lambda: len(emitter.gates) == 2)
    emitter.gates[1].set()
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.most_concurrent == 1
    assert emitter.created == [f"es:{TRIGGER}:cursor:{n}" for n in range(1, 5)]


class CursorCheckingEmitter(GatedEmitter):
    """A gated store (the first emit fails) that records, whenever a batch commits a
    cursor, the lines stored so far: a cursor may only be stored when every line before
    its event is stored too, or a restart would resume past a lost event."""

    def __init__(self) -> None:
        super().__init__()
        self.line_of: dict[str, int] = {}  # dedup key -> OUTPUT line number
        self.cursor_commits: list[tuple[str, set[int]]] = []  # (cursor, lines stored)

    async def emit(self, batch: EmitBatch) -> EmitResult:
        for key, payload in batch.events:
            self.line_of[key] = int(payload["n"])
        result = await super().emit(batch)
        if batch.cursor is not None:
            stored = {self.line_of[key] for key in self.jobs}
            self.cursor_commits.append((batch.cursor, stored))
        return result


async def test_a_cursor_never_commits_past_an_event_whose_batch_failed() -> None:
    """The flusher starts before any cursor is seen (two emits may go at once); once
    cursors flow, a second batch must wait for the first: were it to commit its cursor
    while the first fails, a restart would resume after the first's events."""
    emitter = CursorCheckingEmitter()
    hook = make_hook(emitter, FakeLogs(), max_batch=10)
    await hook(STEP, LogStream.STDOUT, line(1), False)  # no cursor yet
    await eventually(lambda: len(emitter.gates) == 1)
    for n in (2, 3):
        await hook(STEP, LogStream.STDOUT, line(n, str(n)), False)
    await stays_true_for(lambda: len(emitter.gates) == 1, 0.1, what="the second batch waiting")
    emitter.gates[0].set()  # the first fails; every later emit succeeds

    def release_all() -> bool:
        for gate in emitter.gates:
            gate.set()
        return not hook._pending

    await eventually(release_all)
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.cursor_commits, "no cursor was stored"
    for cursor, stored in emitter.cursor_commits:
        assert set(range(1, int(cursor) + 1)) <= stored, (cursor, stored)
    # Every event became a job exactly once.
    assert sorted(emitter.line_of[key] for key in emitter.created) == [1, 2, 3]
    assert len(emitter.created) == 3 and hook.accepted == 3


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=600),
        max_size=5,
    ),
    st.none() | st.booleans() | st.integers() | st.text(max_size=600) | st.lists(st.integers()),
)
def test_take_cursor_never_leaves_the_field_and_only_returns_storable_text(
    payload: dict[str, Any], cursor: Any
) -> None:
    if cursor is not None:
        payload[CURSOR_FIELD] = cursor
    rest, found, problem = take_cursor(payload)
    assert CURSOR_FIELD not in rest
    assert {k: v for k, v in payload.items() if k != CURSOR_FIELD} == dict(rest)
    if found is not None:
        assert problem is None
        assert 0 < len(found) <= MAX_CURSOR_CHARS and "\x00" not in found
        found.encode("utf-8")  # storable in every database
    else:
        assert (problem is None) == (CURSOR_FIELD not in payload)
