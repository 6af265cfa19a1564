"""Split a child's output into lines with bounded memory, and hand them to a sink.

``asyncio.StreamReader.readline`` raises on a line longer than its limit and
``readuntil`` buffers the whole line, so a child that prints 50 MB without a newline
would either kill the reader or hold 50 MB. Here a ``LineSplitter`` keeps at most
``max_line_bytes + 1`` bytes of the current line (plus one chunk while splitting it);
a longer line is passed on once, cut to ``max_line_bytes`` and flagged ``truncated``,
and the rest of it is dropped as it arrives.

``LinePump`` reads a stream in chunks and awaits the sink for every line before it
reads the next chunk: a slow sink leaves the pipe unread, the pipe fills, and the
child blocks in ``write`` — the backpressure the seed's ``max_in_flight`` relies on.

Empty lines are passed on like any other line; deciding that they mean nothing (as
the ``OUTPUT:`` protocol does) is the caller's business.
"""

from __future__ import annotations

import asyncio
import codecs

from headwater.core.status import LogStream
from headwater.runners.base import LineSink

__all__ = ["CHUNK_SIZE", "LinePump", "LineSplitter", "decode_line"]

CHUNK_SIZE = 65_536
_CR = 0x0D


class LineSplitter:
    """Turns chunks of bytes into ``(line, truncated)`` pairs; a pure state machine.

    A line is what lies between two ``\\n`` (or between the last ``\\n`` and the end
    of the stream); one trailing ``\\r`` is removed from it. A line whose content is
    longer than ``max_line_bytes`` is given as its first ``max_line_bytes`` bytes with
    ``truncated=True``, exactly once, as soon as it is known to be too long.
    """

    __slots__ = ("_buf", "_discarding", "_max")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self._max = max_line_bytes
        self._buf = bytearray()  # the start of the current, unfinished line
        self._discarding = False  # the current line was already given, truncated

    @property
    def buffered(self) -> int:
        """Bytes held for the current unfinished line (for tests of the memory bound)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """The lines that ``chunk`` completes, in order."""
        limit = self._max
        out: list[tuple[bytes, bool]] = []
        parts = chunk.split(b"\n")
        tail = parts.pop()  # the unfinished line after the last newline (maybe empty)
        if parts:
            start = 0
            if self._discarding:
                # parts[0] is the end of a line that was already given, truncated.
                self._discarding = False
                start = 1
            elif self._buf:
                self._buf += parts[0]
                parts[0] = bytes(self._buf)
                self._buf.clear()
            for i in range(start, len(parts)):
                line = parts[i]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > limit:
                    out.append((line[:limit], True))
                else:
                    out.append((line, False))
        if tail and not self._discarding:
            buf = self._buf
            buf += tail
            size = len(buf)
            # Content longer than the limit is certain unless the only extra byte is a
            # '\r' that a following '\n' would remove.
            if size > limit + 1 or (size == limit + 1 and buf[-1] != _CR):
                out.append((bytes(buf[:limit]), True))
                buf.clear()
                self._discarding = True
        return out

    def close(self) -> list[tuple[bytes, bool]]:
        """The final line, if the stream ended without a newline."""
        if self._discarding:
            self._discarding = False
            return []
        if not self._buf:
            return []
        line = bytes(self._buf)
        self._buf.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        # The feed rule guarantees len(line) <= max here.
        return [(line, False)]


def decode_line(raw: bytes, truncated: bool) -> str:
    """UTF-8 with replacement characters; a truncated line loses a character cut in two
    by the limit instead of ending in a replacement character that was never sent."""
    if not truncated:
        return raw.decode("utf-8", "replace")
    # An incremental decoder holds back an incomplete sequence at the end of its input.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=False)


class LinePump:
    """Reads one stream to its end, awaiting ``sink`` for each line.

    ``waiting_for_data`` and ``bytes_read`` let a supervisor tell a pump stalled on
    a pipe that nobody writes to (an escaped grandchild still holds it open) from a
    pump that is busy in a slow sink, which must not be cut short.
    """

    __slots__ = ("_chunk", "_max", "_reader", "_sink", "_stream", "bytes_read", "waiting_for_data")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        stream: LogStream,
        sink: LineSink,
        max_line_bytes: int,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._reader = reader
        self._stream = stream
        self._sink = sink
        self._max = max_line_bytes
        self._chunk = chunk_size
        self.bytes_read = 0
        self.waiting_for_data = False

    @property
    def reader(self) -> asyncio.StreamReader:
        return self._reader

    async def run(self) -> None:
        splitter = LineSplitter(self._max)
        reader, sink, stream = self._reader, self._sink, self._stream
        while True:
            self.waiting_for_data = True
            chunk = await reader.read(self._chunk)
            self.waiting_for_data = False
            if not chunk:
                break
            self.bytes_read += len(chunk)
            for raw, truncated in splitter.feed(chunk):
                await sink(stream, decode_line(raw, truncated), truncated)
        for raw, truncated in splitter.close():
            await sink(stream, decode_line(raw, truncated), truncated)
