"""ThreadedReader: a blocking producer feeding the loop through bounded slots."""

from __future__ import annotations

import asyncio
import threading

import pytest

from headwater.runners.threads import ThreadedReader, in_thread, pump_lines
from headwater.store.base import LogStream
from tests.polling import stays_true_for


async def test_the_producer_blocks_while_the_consumer_does_not_take() -> None:
    produced = 0
    blocked = threading.Event()

    def produce(feed: ThreadedReader[int]) -> None:
        nonlocal produced
        for i in range(1000):
            if produced == 4:
                blocked.set()  # the 5th put will wait for a slot
            if not feed.put(i):
                return
            produced += 1

    reader: ThreadedReader[int] = ThreadedReader(produce, name="t", maxsize=4)
    reader.start()
    await asyncio.to_thread(blocked.wait, 10)
    # Bounded: nothing more is read until the loop takes items.
    await stays_true_for(lambda: produced == 4, 0.2, what="the reader holding at 4")
    got = [await reader.get() for _ in range(10)]
    assert got == list(range(10))
    await stays_true_for(lambda: produced <= 10 + 4, 0.1, what="the reader bounded")
    items = []
    while (item := await reader.get()) is not None:
        items.append(item)
    assert items == list(range(10, 1000))


async def test_stop_wakes_a_producer_waiting_for_a_slot_and_interrupts_a_read() -> None:
    interrupted = threading.Event()

    def produce(feed: ThreadedReader[int]) -> None:
        while feed.put(1):
            pass

    reader: ThreadedReader[int] = ThreadedReader(
        produce, name="t", maxsize=2, interrupt=interrupted.set
    )
    reader.start()
    assert await reader.get() == 1
    reader.stop()
    assert reader.finished is not None
    await asyncio.wait_for(reader.finished, 10)
    assert interrupted.is_set()


async def test_a_producer_error_is_raised_on_the_loop_unless_stopped() -> None:
    def produce(feed: ThreadedReader[int]) -> None:
        feed.put(1)
        raise ConnectionError("engine went away")

    reader: ThreadedReader[int] = ThreadedReader(produce, name="t")
    reader.start()
    assert await reader.get() == 1
    with pytest.raises(ConnectionError, match="engine went away"):
        await reader.get()
    assert await reader.get() is None


async def test_pump_lines_splits_per_stream() -> None:
    chunks = [
        (LogStream.STDOUT, b"a\nb"),
        (LogStream.STDERR, b"x"),
        (LogStream.STDOUT, b"c\n"),
        (LogStream.STDERR, b"y\n"),
        (LogStream.STDOUT, b"tail"),
    ]

    def produce(feed: ThreadedReader[tuple[LogStream, bytes]]) -> None:
        for chunk in chunks:
            feed.put(chunk)

    reader: ThreadedReader[tuple[LogStream, bytes]] = ThreadedReader(produce, name="t")
    reader.start()
    lines: list[tuple[LogStream, str, bool]] = []

    async def sink(stream: LogStream, line: str, truncated: bool) -> None:
        lines.append((stream, line, truncated))

    await pump_lines(reader, sink, 100)
    assert lines == [
        (LogStream.STDOUT, "a", False),
        (LogStream.STDOUT, "bc", False),
        (LogStream.STDERR, "xy", False),
        (LogStream.STDOUT, "tail", False),
    ]


async def test_in_thread_returns_and_raises() -> None:
    assert await in_thread(lambda: 41 + 1, "t") == 42

    def boom() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await in_thread(boom, "t")
