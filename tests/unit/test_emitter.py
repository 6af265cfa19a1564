"""``EventSourceLineHook``: OUTPUT lines → events, dedup keys, failures and backpressure.

No services: a fake ``Emitter`` (whose failures and in-flight count the test controls) and
a fake log writer. Each test drives the hook the way the step runner does, one
``await hook(step, stream, line, truncated)`` per line of the consumer's output.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from headwater.engine.logwriter import LogWriter
from headwater.store.base import JobRecord, JobStatus, LogLine, LogStream
from headwater.triggers.emitter import EmitBatch, EmitResult, EventSourceLineHook

T = TypeVar("T")

STEP = "consume"
TRIGGER = "ws/events"
PREFIX = "es:job-1:2:consume:3"  # job id, job attempt, step, step attempt


class FakeLogs:
    """What the hook needs of a ``LogWriter``: ``async write(line)``."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    async def write(self, line: LogLine) -> None:
        self.lines.append(line)


class FakeEmitter:
    """An emitter over an in-memory "store" of jobs keyed by dedup key.

    ``fail_first`` emits raise before committing; ``fail_after_commit`` emits commit and
    then raise (the answer was lost). ``count`` is the trigger's in-flight jobs: each
    accepted event adds one, the test lowers it to "finish" jobs. ``gate`` (when set)
    holds every emit until it is opened.
    """

    def __init__(self, fail_first: int = 0, fail_after_commit: int = 0) -> None:
        self.fail_first = fail_first
        self.fail_after_commit = fail_after_commit
        self.attempts: list[list[str]] = []  # the keys of every emit call, in order
        self.jobs: dict[str, dict[str, Any]] = {}  # dedup key -> payload (the "store")
        self.created: list[str] = []  # keys in the order jobs were created
        self.count = 0
        self.max_in_flight: int | None = None
        self.worst_total = 0  # the largest in-flight count an emit ever produced
        self.finished = asyncio.Event()
        self.waits = 0
        self.gate: asyncio.Event | None = None
        self.batches: list[EmitBatch] = []  # every emit call's batch, as sent

    async def emit(self, batch: EmitBatch) -> EmitResult:
        keys = [key for key, _ in batch.events]
        self.attempts.append(keys)
        self.batches.append(batch)
        assert batch.trigger == TRIGGER
        assert batch.target_task == "target"
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("store is down")
        accepted = duplicates = 0
        for i, (key, payload) in enumerate(batch.events):
            if i in batch.rejected:  # stored as a rejected event, not a job
                continue
            if key in self.jobs:
                duplicates += 1
                continue
            self.jobs[key] = dict(payload)
            self.created.append(key)
            accepted += 1
        self.count += accepted
        self.worst_total = max(self.worst_total, self.count)
        if self.max_in_flight is not None:
            assert self.count <= self.max_in_flight, (self.count, keys)
        if self.fail_after_commit > 0:
            self.fail_after_commit -= 1
            raise TimeoutError("committed, but the answer was lost")
        in_flight = self.count if batch.want_in_flight else None
        return EmitResult(accepted, duplicates, len(batch.rejected), in_flight)

    async def in_flight(self, trigger: str) -> int:
        assert trigger == TRIGGER
        return self.count

    async def wait_for_finished(self, timeout: float) -> None:
        self.waits += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), timeout)
        self.finished.clear()

    def finish(self, n: int) -> None:
        """``n`` target jobs finished."""
        self.count -= n
        self.finished.set()


def job_record() -> JobRecord:
    return JobRecord(
        id="job-1",
        workspace="ws",
        task="consumer",
        status=JobStatus.RUNNING,
        input={},
        output=None,
        error=None,
        source_type="event_source_consumer",
        source_id=f"{TRIGGER}#consumer",
        dedup_key=None,
        tags=frozenset(),
        parent_job_id=None,
        worker_id="w",
        attempt=2,
        max_attempts=3,
        cancel_requested=False,
        created_at=datetime.now(UTC),
        started_at=datetime.now(UTC),
        finished_at=None,
    )


def make_hook(
    emitter: FakeEmitter,
    logs: FakeLogs,
    max_in_flight: int | None = None,
    max_batch: int = 500,
    **extra: Any,
) -> EventSourceLineHook:
    # The hook only calls ``logs.write``; the fake stands in for a LogWriter.
    writer: LogWriter = logs  # type: ignore[assignment]
    return EventSourceLineHook(
        job_record(),
        STEP,
        3,
        TRIGGER,
        "target",
        {"source": "test"},
        max_in_flight,
        100,
        emitter,
        writer,
        max_batch=max_batch,
        **extra,
    )


def out(n: int) -> str:
    return f'OUTPUT: {{"n": {n}}}'


async def still_blocked(call: Awaitable[T], seconds: float = 0.3) -> None:
    """Assert that ``call`` (a task) has not returned after ``seconds``; it keeps running."""
    task = asyncio.ensure_future(call)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), seconds)
    assert not task.done()


async def eventually(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# -- lines → events ---------------------------------------------------------------------


async def test_output_lines_become_events_with_stable_keys_and_bad_lines_are_skipped() -> None:
    emitter, logs = FakeEmitter(), FakeLogs()
    hook = make_hook(emitter, logs)
    feed: list[tuple[LogStream, str, bool, bool]] = [
        # stream, line, truncated, expected return
        (LogStream.STDOUT, "consumer starting", False, False),
        (LogStream.STDOUT, out(1), False, True),  # OUTPUT line 1
        (LogStream.STDERR, out(99), False, False),  # stderr is never an event
        (LogStream.STDOUT, "OUTPUT: {not json", False, True),  # line 2: malformed
        (LogStream.STDOUT, out(3), False, True),  # line 3
        (LogStream.STDOUT, "OUTPUT: [1, 2]", False, True),  # line 4: not an object
        (LogStream.STDOUT, "OUTPUT:{}", False, False),  # no space: a plain log line
        (LogStream.STDOUT, out(5), False, True),  # line 5
        (LogStream.STDOUT, 'OUTPUT: {"n": 6, "pad": "xxxxxx', True, True),  # line 6: cut
        (LogStream.STDOUT, 'OUTPUT: "a string"', False, True),  # line 7: not an object
        (LogStream.STDOUT, out(8), False, True),  # line 8
    ]
    for stream, line, truncated, expected in feed:
        assert await hook(STEP, stream, line, truncated) is expected, line
    await hook.close()

    assert emitter.created == [f"{PREFIX}:{n}" for n in (1, 3, 5, 8)]
    assert [emitter.jobs[k]["n"] for k in emitter.created] == [1, 3, 5, 8]
    assert hook.accepted == 4
    warnings = [(line.stream, line.step, line.job_id, line.line) for line in logs.lines]
    assert [w[:3] for w in warnings] == [(LogStream.SYSTEM, STEP, "job-1")] * 4
    texts = [w[3] for w in warnings]
    assert "OUTPUT line 2" in texts[0] and "malformed JSON" in texts[0]
    assert "OUTPUT line 4" in texts[1] and "JSON object" in texts[1]
    assert "OUTPUT line 6" in texts[2] and "longer than 100 bytes" in texts[2]
    assert "OUTPUT line 7" in texts[3]
    assert all(t.startswith("warning: ") for t in texts)


async def test_keys_carry_job_attempt_step_and_step_attempt() -> None:
    emitter = FakeEmitter()
    hook = make_hook(emitter, FakeLogs())
    await hook(STEP, LogStream.STDOUT, out(1), False)
    await hook.close()
    assert emitter.created == ["es:job-1:2:consume:3:1"]
    assert emitter.attempts == [["es:job-1:2:consume:3:1"]]


@pytest.mark.parametrize("max_in_flight", [None, 10])
async def test_each_batch_says_its_trigger_consumer_task_and_defaults(
    max_in_flight: int | None,
) -> None:
    """What the emitter is told: the consumer job, the target task, the trigger's input
    defaults; the in-flight count is asked for only under ``max_in_flight``. Every result
    reaches ``on_result`` and the hook's counts."""
    emitter, results = FakeEmitter(), []

    async def on_result(result: EmitResult) -> None:
        results.append(result)

    hook = make_hook(emitter, FakeLogs(), max_in_flight=max_in_flight, on_result=on_result)
    await hook(STEP, LogStream.STDOUT, out(1), False)
    await hook.close()
    (batch,) = emitter.batches
    assert (batch.trigger, batch.consumer_job_id, batch.target_task) == (
        TRIGGER,
        "job-1",
        "target",
    )
    assert dict(batch.defaults) == {"source": "test"}
    assert batch.want_in_flight is (max_in_flight is not None)
    assert batch.rejected == {} and batch.cursor is None
    assert results == [EmitResult(1, 0, 0, 1 if max_in_flight else None)]
    assert (hook.accepted, hook.rejected) == (1, 0)


async def test_valid_json_no_store_can_keep_is_a_rejected_event_also_when_retried() -> None:
    """An OUTPUT line with a NUL is not skipped: it goes as a rejected event (its payload
    cleaned, with the reason), also in the retry of a failed emit, and is counted."""
    emitter, logs = FakeEmitter(fail_first=1), FakeLogs()
    hook = make_hook(emitter, logs)
    assert await hook(STEP, LogStream.STDOUT, 'OUTPUT: {"n": "a\\u0000b"}', False)
    await eventually(lambda: len(emitter.attempts) == 1)  # this emit fails
    for n in (2, 3):
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.created == [f"{PREFIX}:2", f"{PREFIX}:3"]
    sent = [b for b in emitter.batches if f"{PREFIX}:1" in dict(b.events)]
    assert len(sent) == 2, "sent, failed, sent again"
    for batch in sent:
        index = [key for key, _ in batch.events].index(f"{PREFIX}:1")
        assert "NUL" in batch.rejected[index]
        assert dict(batch.events)[f"{PREFIX}:1"] == {"n": "a\ufffdb"}
    assert (hook.accepted, hook.rejected) == (2, 1)
    (warning,) = [line for line in logs.lines if "OUTPUT line" in line.line]
    assert "OUTPUT line 1" in warning.line and warning.line.endswith("; rejected")
    assert (warning.job_id, warning.step, warning.stream) == ("job-1", STEP, LogStream.SYSTEM)


async def test_a_rejection_holds_for_its_event_only_not_for_a_later_one_with_its_key() -> None:
    """With a ``dedup_key`` template two lines can share a key: the first, unstorable,
    is rejected; the second, valid, is judged on its own and becomes the job."""
    emitter = FakeEmitter()
    hook = make_hook(emitter, FakeLogs(), event_key=lambda payload: str(payload["id"]))
    await hook(STEP, LogStream.STDOUT, 'OUTPUT: {"id": 7, "x": "\\u0000"}', False)
    await eventually(lambda: hook.rejected == 1)
    await hook(STEP, LogStream.STDOUT, 'OUTPUT: {"id": 7, "x": "ok"}', False)
    await hook.close()
    assert emitter.jobs == {f"es:{TRIGGER}:7": {"id": 7, "x": "ok"}}
    assert emitter.batches[-1].rejected == {}


async def test_an_unstorable_line_that_is_not_an_object_is_skipped() -> None:
    emitter, logs = FakeEmitter(), FakeLogs()
    hook = make_hook(emitter, logs)
    assert await hook(STEP, LogStream.STDOUT, 'OUTPUT: ["a\\u0000"]', False)
    await hook.close()
    assert emitter.attempts == []
    (warning,) = logs.lines
    assert warning.line.startswith("warning: OUTPUT line 1: ")
    assert "not a JSON object" in warning.line and warning.line.endswith("; skipped")


async def test_a_dedup_key_template_keys_events_by_their_own_identity() -> None:
    """With the trigger's ``dedup_key``, the key is the rendered identity (the same event
    from another consumer run is one job); when it cannot be rendered the event is kept,
    keyed by its line, with a warning."""

    def identity(payload: Mapping[str, Any]) -> str:
        return f"order-{payload['id']}"

    emitter, logs = FakeEmitter(), FakeLogs()
    hook = make_hook(emitter, logs, event_key=identity)
    await hook(STEP, LogStream.STDOUT, 'OUTPUT: {"id": 7}', False)
    await hook(STEP, LogStream.STDOUT, out(2), False)  # no id
    await hook.close()
    assert emitter.created == [f"es:{TRIGGER}:order-7", f"{PREFIX}:2"]
    (warning,) = logs.lines
    assert "OUTPUT line 2: dedup_key failed" in warning.line and "'id'" in warning.line
    assert (warning.job_id, warning.step, warning.stream) == ("job-1", STEP, LogStream.SYSTEM)


# -- emit failures ------------------------------------------------------------------------


async def test_failing_emitter_loses_nothing_duplicates_nothing_and_holds_the_reader() -> None:
    emitter, logs = FakeEmitter(fail_first=3), FakeLogs()
    hook = make_hook(emitter, logs, max_batch=4)
    for n in range(1, 5):  # fills the batch; each call returns at once
        assert await asyncio.wait_for(hook(STEP, LogStream.STDOUT, out(n), False), 1.0)
    # The emitter keeps failing: line 5 is not accepted, the reader is held.
    fifth = asyncio.ensure_future(hook(STEP, LogStream.STDOUT, out(5), False))
    await still_blocked(fifth, 0.3)
    assert emitter.created == []
    assert emitter.attempts, "the hook never tried to emit"
    # Once the emitter recovers (after its 3 failures), the held line goes through.
    assert await asyncio.wait_for(fifth, 10.0) is True
    for n in range(6, 9):
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await asyncio.wait_for(hook.close(), 10.0)

    expected = [f"{PREFIX}:{n}" for n in range(1, 9)]
    assert emitter.created == expected  # nothing lost, in order, each once
    assert [emitter.jobs[k]["n"] for k in expected] == list(range(1, 9))
    failed = emitter.attempts[:3]
    # The retries re-send the same keys (a prefix of the final order), never new ones.
    for keys in failed:
        assert keys == expected[: len(keys)]
    assert hook.accepted == 8


async def test_an_emit_that_committed_but_failed_is_retried_with_the_same_keys() -> None:
    emitter = FakeEmitter(fail_after_commit=1)
    hook = make_hook(emitter, FakeLogs())
    for n in (1, 2):
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.created == [f"{PREFIX}:1", f"{PREFIX}:2"]
    assert len(emitter.attempts) >= 2
    assert emitter.attempts[1][:2] == emitter.attempts[0][:2]  # same keys: deduplicated


# -- max_in_flight ------------------------------------------------------------------------


async def test_max_in_flight_blocks_the_reader_until_jobs_finish() -> None:
    emitter = FakeEmitter()
    emitter.count = 1  # one job of this trigger is already pending
    emitter.max_in_flight = 3  # the fake asserts that no emit goes past it
    hook = make_hook(emitter, FakeLogs(), max_in_flight=3)
    assert await hook(STEP, LogStream.STDOUT, out(1), False)
    assert await hook(STEP, LogStream.STDOUT, out(2), False)
    # 1 in flight + 2 read = the limit: the third line waits (and commits the two).
    third = asyncio.ensure_future(hook(STEP, LogStream.STDOUT, out(3), False))
    await still_blocked(third, 0.3)
    assert emitter.created == [f"{PREFIX}:1", f"{PREFIX}:2"]
    assert emitter.count == 3
    assert emitter.waits >= 1  # it waits for a job to finish, it does not poll blindly

    # A wake-up that does not lower the count does not let it through.
    emitter.finished.set()
    await still_blocked(third, 0.3)
    emitter.finish(1)
    assert await asyncio.wait_for(third, 5.0) is True
    fourth = asyncio.ensure_future(hook(STEP, LogStream.STDOUT, out(4), False))
    await still_blocked(fourth, 0.3)
    emitter.finish(3)
    assert await asyncio.wait_for(fourth, 5.0) is True
    await hook.close()
    assert emitter.created == [f"{PREFIX}:{n}" for n in range(1, 5)]
    assert emitter.worst_total <= 3


async def test_max_in_flight_is_never_exceeded_under_a_stream_of_lines() -> None:
    emitter = FakeEmitter()
    emitter.max_in_flight = 5
    hook = make_hook(emitter, FakeLogs(), max_in_flight=5, max_batch=3)

    async def finisher() -> None:
        while True:
            await asyncio.sleep(0.005)
            if emitter.count > 0:
                emitter.finish(1)

    worker = asyncio.create_task(finisher())
    try:
        for n in range(1, 61):
            assert await asyncio.wait_for(hook(STEP, LogStream.STDOUT, out(n), False), 10.0)
            # pending (read, not committed) + committed in flight never exceed the limit
            assert emitter.count + len(hook._pending) <= 5
        await asyncio.wait_for(hook.close(), 10.0)
    finally:
        worker.cancel()
    assert emitter.created == [f"{PREFIX}:{n}" for n in range(1, 61)]
    assert emitter.worst_total <= 5


async def test_max_in_flight_zero_holds_everything() -> None:
    emitter = FakeEmitter()
    hook = make_hook(emitter, FakeLogs(), max_in_flight=0)
    first = asyncio.ensure_future(hook(STEP, LogStream.STDOUT, out(1), False))
    await still_blocked(first, 0.3)
    assert emitter.created == []
    first.cancel()


# -- close --------------------------------------------------------------------------------


async def test_close_flushes_what_is_pending() -> None:
    emitter = FakeEmitter()
    emitter.gate = asyncio.Event()
    hook = make_hook(emitter, FakeLogs())
    for n in range(1, 4):
        assert await hook(STEP, LogStream.STDOUT, out(n), False)
    closing = asyncio.ensure_future(hook.close())
    await still_blocked(closing, 0.2)  # the emit is held by the gate: close waits for it
    assert emitter.created == []
    emitter.gate.set()
    await asyncio.wait_for(closing, 5.0)
    assert emitter.created == [f"{PREFIX}:{n}" for n in range(1, 4)]
    assert hook.accepted == 3


async def test_close_retries_a_failing_emitter_until_it_succeeds() -> None:
    emitter = FakeEmitter(fail_first=2)
    hook = make_hook(emitter, FakeLogs())
    for n in range(1, 3):
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.created == [f"{PREFIX}:1", f"{PREFIX}:2"]
    assert len(emitter.attempts) == 3


async def test_close_without_events_does_not_emit() -> None:
    emitter = FakeEmitter()
    hook = make_hook(emitter, FakeLogs())
    assert await hook(STEP, LogStream.STDOUT, "just a log line", False) is False
    await asyncio.wait_for(hook.close(), 2.0)
    assert emitter.attempts == []


# -- pipelining (no max_in_flight) --------------------------------------------------------


class GatedEmitter(FakeEmitter):
    """Holds each emit until the test releases it; the first emit fails when released."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Event] = []
        self.concurrent = 0
        self.most_concurrent = 0

    async def emit(self, batch: EmitBatch) -> EmitResult:
        gate = asyncio.Event()
        self.gates.append(gate)
        first = len(self.gates) == 1
        self.concurrent += 1
        self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            await gate.wait()
        finally:
            self.concurrent -= 1
        if first:
            self.attempts.append([key for key, _ in batch.events])
            raise ConnectionError("store is down")
        return await super().emit(batch)


async def test_a_second_batch_is_sent_while_the_first_is_stored_and_nothing_is_lost() -> None:
    emitter = GatedEmitter()
    hook = make_hook(emitter, FakeLogs(), max_batch=10)
    for n in (1, 2):
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await eventually(lambda: len(emitter.gates) == 1)
    for n in (3, 4):  # read while the first batch is on its way: a second batch goes
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await eventually(lambda: len(emitter.gates) == 2)
    assert emitter.most_concurrent == 2
    emitter.gates[1].set()  # the second commits first ...
    await asyncio.sleep(0.05)
    emitter.gates[0].set()  # ... and the first fails: only its events are sent again
    await eventually(lambda: len(emitter.gates) == 3)
    emitter.gates[2].set()
    await asyncio.wait_for(hook.close(), 10.0)
    assert sorted(emitter.created) == [f"{PREFIX}:{n}" for n in range(1, 5)]
    assert len(emitter.created) == 4  # each once
    assert emitter.created[:2] == [f"{PREFIX}:3", f"{PREFIX}:4"]
    assert hook.accepted == 4 and hook._pending == []


@pytest.mark.parametrize("max_in_flight", [None, 100])  # pipelined, and one emit at a time
@pytest.mark.parametrize("failures", [1, 3])
async def test_a_failing_store_is_said_once_in_the_consumers_log(
    max_in_flight: int | None, failures: int
) -> None:
    emitter, logs = FakeEmitter(fail_first=failures), FakeLogs()
    hook = make_hook(emitter, logs, max_in_flight=max_in_flight)
    before = datetime.now(UTC)
    with capture_logs() as events:
        await hook(STEP, LogStream.STDOUT, out(1), False)
        await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.created == [f"{PREFIX}:1"] and len(emitter.attempts) == failures + 1
    # The process log has every failure, why, and when the next try is: the delay
    # doubles (a failing store is not hammered).
    failed = [e for e in events if e["event"] == "event_emit_failed"]
    assert [(e["trigger"], e["error"]) for e in failed] == [(TRIGGER, "store is down")] * failures
    assert [e["retry_in"] for e in failed] == [0.2, 0.4, 0.8][:failures]
    # However many failures in a row: one line, from the first, on the consumer's step.
    assert [(line.job_id, line.step, line.stream, line.line) for line in logs.lines] == [
        (
            "job-1",
            STEP,
            LogStream.SYSTEM,
            "warning: events cannot be stored, retrying until they are: store is down",
        )
    ]
    assert before <= logs.lines[0].ts <= datetime.now(UTC)


async def test_a_skipped_lines_warning_carries_its_time() -> None:
    logs = FakeLogs()
    hook = make_hook(FakeEmitter(), logs)
    before = datetime.now(UTC)
    await hook(STEP, LogStream.STDOUT, "OUTPUT: {not json", False)
    await hook.close()
    (warning,) = logs.lines
    assert before <= warning.ts <= datetime.now(UTC)


async def test_max_in_flight_counts_the_events_not_yet_stored() -> None:
    emitter = FakeEmitter()
    emitter.max_in_flight = 2
    emitter.gate = asyncio.Event()  # the store is slow: nothing is committed yet
    hook = make_hook(emitter, FakeLogs(), max_in_flight=2)
    await hook(STEP, LogStream.STDOUT, out(1), False)
    await hook(STEP, LogStream.STDOUT, out(2), False)
    # Two events read, none stored: a third would exceed max_in_flight once stored.
    third = asyncio.ensure_future(hook(STEP, LogStream.STDOUT, out(3), False))
    await still_blocked(third, 0.3)
    emitter.gate.set()
    await still_blocked(third, 0.3)  # both stored now: two in flight
    emitter.finish(1)
    assert await asyncio.wait_for(third, 10.0) is True
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.worst_total == 2


class DownLogs(FakeLogs):
    """The consumer's log lives in the store that is down."""

    async def write(self, line: LogLine) -> None:
        raise ConnectionError("store is down")


@pytest.mark.parametrize("max_in_flight", [None, 100])
async def test_a_log_in_the_failing_store_does_not_stop_the_retries(
    max_in_flight: int | None,
) -> None:
    emitter = FakeEmitter(fail_first=2)
    hook = make_hook(emitter, DownLogs(), max_in_flight=max_in_flight)
    await hook(STEP, LogStream.STDOUT, out(1), False)
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.created == [f"{PREFIX}:1"]


async def test_first_of_two_emits_fails_second_commits_each_event_is_one_job() -> None:
    emitter = FakeEmitter(fail_first=1)
    emitter.gate = asyncio.Event()  # both emits wait; the first to go on fails
    hook = make_hook(emitter, FakeLogs())
    await hook(STEP, LogStream.STDOUT, out(1), False)
    await eventually(lambda: len(emitter.attempts) == 1)
    for n in (2, 3):
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await eventually(lambda: len(emitter.attempts) == 2)  # the second batch is on its way
    emitter.gate.set()
    for n in (4, 5):
        await hook(STEP, LogStream.STDOUT, out(n), False)
    await asyncio.wait_for(hook.close(), 10.0)
    expected = [f"{PREFIX}:{n}" for n in range(1, 6)]
    assert sorted(emitter.created) == sorted(expected)  # none lost
    assert len(emitter.attempts) >= 3 and emitter.attempts[0] == [f"{PREFIX}:1"]
    assert hook.accepted == 5  # and none counted twice


@pytest.mark.parametrize("max_in_flight", [None, 100])
async def test_each_run_of_failures_is_said_and_survived(max_in_flight: int | None) -> None:
    emitter, logs = FakeEmitter(fail_first=1), FakeLogs()
    hook = make_hook(emitter, logs, max_in_flight=max_in_flight)
    await hook(STEP, LogStream.STDOUT, out(1), False)
    await eventually(lambda: emitter.created == [f"{PREFIX}:1"])
    emitter.fail_first = 1  # the store fails again, later
    await hook(STEP, LogStream.STDOUT, out(2), False)
    await asyncio.wait_for(hook.close(), 10.0)
    assert emitter.created == [f"{PREFIX}:1", f"{PREFIX}:2"]
    assert len(logs.lines) == 2  # one line per run of failures
