"""The bounded line reader: exact lines for any chunking, truncation, bounded memory."""

from __future__ import annotations

import asyncio
import itertools
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.runners.lines import LinePump, LineSplitter, decode_line
from headwater.store.base import LogStream
from tests.polling import eventually, stays_true_for

# Fragments chosen to hit the interesting bytes often: CR, multi-byte UTF-8, invalid UTF-8.
fragments = st.sampled_from([b"a", b"bc", b"\r", b"\r\r", b"\xe2\x82\xac", b"\xff", b" ", b""])
line_bytes = st.one_of(
    st.lists(fragments, max_size=12).map(b"".join),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)


def expected_lines(data: bytes, limit: int) -> list[tuple[bytes, bool]]:
    """The specification, written the obvious (unbounded) way."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # after a final newline, or no data at all
    out = []
    for piece in pieces:
        content = piece[:-1] if piece.endswith(b"\r") else piece
        out.append((content[:limit], True) if len(content) > limit else (content, False))
    return out


def split_all(chunks: list[bytes], limit: int) -> list[tuple[bytes, bool]]:
    splitter = LineSplitter(limit)
    out: list[tuple[bytes, bool]] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
        assert splitter.buffered <= limit + 1
    return out + splitter.close()


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(line_bytes, max_size=15),
    final_newline=st.booleans(),
    limit=st.integers(min_value=1, max_value=12),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_any_chunking_yields_exactly_the_lines(
    lines: list[bytes], final_newline: bool, limit: int, cuts: list[int]
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    assert split_all(chunked(data, cuts), limit) == expected_lines(data, limit)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), limit=st.integers(1, 40), size=st.integers(1, 17))
def test_fixed_size_chunks_of_arbitrary_bytes(data: bytes, limit: int, size: int) -> None:
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert split_all(chunks, limit) == expected_lines(data, limit)


def test_crlf_and_empty_lines() -> None:
    assert split_all([b"a\r\n\r\n\nb\r"], 10) == [
        (b"a", False),
        (b"", False),
        (b"", False),
        (b"b", False),
    ]


def test_line_of_exactly_the_limit_is_not_truncated_even_with_cr() -> None:
    assert split_all([b"abc", b"\r", b"\n"], 3) == [(b"abc", False)]
    assert split_all([b"abc\r"], 3) == [(b"abc", False)]
    assert split_all([b"abc\rd\n"], 3) == [(b"abc", True)]


def test_truncated_line_is_given_once_and_the_next_line_survives() -> None:
    out = split_all([b"x" * 10, b"y" * 10, b"z\nnext\n"], 4)
    assert out == [(b"xxxx", True), (b"next", False)]


def test_fifty_megabyte_line_uses_bounded_memory() -> None:
    limit = 1 << 20
    chunk = b"x" * 65_536
    splitter = LineSplitter(limit)
    lines: list[tuple[bytes, bool]] = []
    tracemalloc.start()
    try:
        for _ in range(50_000_000 // len(chunk)):
            lines += splitter.feed(chunk)
            assert splitter.buffered <= limit + 1
        lines += splitter.feed(b"tail\nafter\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(len(raw), truncated) for raw, truncated in lines] == [(limit, True), (5, False)]
    assert lines[1][0] == b"after"
    assert peak < 8 * limit  # a handful of 1 MiB copies, never the 50 MB


def test_decode_replaces_invalid_bytes() -> None:
    assert decode_line(b"ok \xff", False) == "ok \ufffd"


def test_decode_of_truncated_line_drops_a_character_cut_in_two() -> None:
    euro = "€".encode()
    assert decode_line(b"ab" + euro[:2], True) == "ab"
    assert decode_line(b"ab" + euro, True) == "ab€"
    assert decode_line(b"ab\xff", True) == "ab\ufffd"


async def test_pump_awaits_sink_per_line_and_flushes_the_last_line() -> None:
    reader = asyncio.StreamReader()
    got: list[tuple[LogStream, str, bool]] = []

    async def sink(stream: LogStream, line: str, truncated: bool) -> None:
        got.append((stream, line, truncated))

    pump = LinePump(reader, LogStream.STDERR, sink, max_line_bytes=5, chunk_size=3)
    reader.feed_data("one\ntwo\n\nthree-long\nlast €".encode())
    reader.feed_eof()
    await pump.run()
    assert got == [
        (LogStream.STDERR, "one", False),
        (LogStream.STDERR, "two", False),
        (LogStream.STDERR, "", False),
        (LogStream.STDERR, "three", True),
        (LogStream.STDERR, "last ", True),
    ]
    assert pump.bytes_read == len("one\ntwo\n\nthree-long\nlast €".encode())


async def test_pump_does_not_read_while_the_sink_is_blocked() -> None:
    reader = asyncio.StreamReader()
    release = asyncio.Event()
    got: list[str] = []

    async def sink(stream: LogStream, line: str, truncated: bool) -> None:
        await release.wait()
        got.append(line)

    pump = LinePump(reader, LogStream.STDOUT, sink, max_line_bytes=100, chunk_size=4)
    reader.feed_data(b"a\nb\nc\nd\n")
    task = asyncio.ensure_future(pump.run())
    await eventually(lambda: pump.bytes_read == 4, what="the first chunk taken")
    await stays_true_for(  # ... and the rest left in the stream while the sink waits
        lambda: pump.bytes_read == 4 and not pump.waiting_for_data, 0.05, what="no more read"
    )
    release.set()
    reader.feed_eof()
    await task
    assert got == ["a", "b", "c", "d"]
