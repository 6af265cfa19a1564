"""What a ``type: function`` prints or logs goes to its job's log, not the server's.

A function runs inside the worker process, so ``print()`` and ``logging`` would write to
the server's stdout/stderr: unmasked, and mixed with every other job's. ``capture``
routes them per job instead: while a function runs, a context variable names its
``FunctionOutput``; ``sys.stdout``/``sys.stderr`` become thin proxies that hand what is
written in that context to it (line by line), and a logging handler does the same with
records (which the process's other handlers then skip). Everything outside a function
(headwater's own logs, other libraries) writes where it always did.

The context variable follows the function: an async function's task gets a context of
its own, and a sync function's thread runs in a copy of it, so concurrent functions each
get their own lines. Lines reach the sink (the job's LogWriter, which masks secrets) in
order, from any thread, while the function runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from headwater.store.base import LogStream

__all__ = ["FunctionOutput", "LineSink", "install_routing"]

LineSink = Callable[[LogStream, str], Awaitable[None]]

_CURRENT: contextvars.ContextVar[FunctionOutput | None] = contextvars.ContextVar(
    "headwater_function_output", default=None
)
_MAX_PARTIAL = 64 * 1024  # a line without a newline is cut here
_install_lock = threading.Lock()


class FunctionOutput:
    """The lines of one function call, handed to ``sink`` on the event loop."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[LogStream, str] | None] = asyncio.Queue()
        self._partial: dict[LogStream, str] = {}
        self._lock = threading.Lock()
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False  # a thread abandoned on timeout may go on printing: dropped

    def context(self) -> contextvars.Context:
        """A copy of the current context in which this output is the current one."""
        ctx = contextvars.copy_context()
        ctx.run(_CURRENT.set, self)
        return ctx

    def start(self) -> None:
        self._drainer = asyncio.ensure_future(self._drain())

    async def close(self) -> None:
        """Hand over the last (unterminated) lines and wait until the sink has them all."""
        with self._lock:
            rest = [(s, text) for s, text in self._partial.items() if text]
            self._partial.clear()
            self._closed = True
        for item in rest:
            self._queue.put_nowait(item)
        self._queue.put_nowait(None)
        if self._drainer is not None:
            await self._drainer

    def write(self, stream: LogStream, text: str) -> None:
        """From any thread: ``text`` as written to ``stream``."""
        with self._lock:
            pending = self._partial.get(stream, "") + text
            *lines, rest = pending.split("\n")
            if len(rest) > _MAX_PARTIAL:
                lines.append(rest)
                rest = ""
            self._partial[stream] = rest
        for line in lines:
            self.line(stream, line)

    def line(self, stream: LogStream, line: str) -> None:
        """From any thread: one whole line."""
        if self._closed:
            return
        item = (stream, line.rstrip("\r"))
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._queue.put_nowait(item)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if item[1].strip():
                await self._sink(*item)


class _RoutedStream:
    """``sys.stdout``/``sys.stderr``: to the current function's output, else as before."""

    def __init__(self, original: TextIO, stream: LogStream) -> None:
        self._original = original
        self._stream = stream

    def write(self, text: str) -> int:
        output = _CURRENT.get()
        if output is None:
            return self._original.write(text)
        output.write(self._stream, text)
        return len(text)

    def flush(self) -> None:
        if _CURRENT.get() is None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer...
        return getattr(self._original, name)


class _FunctionLogHandler(logging.Handler):
    """Records logged inside a function, as lines of its job's stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        output = _CURRENT.get()
        if output is None:
            # Alone on the root logger, this handler would hide what logging's last
            # resort handler prints when nothing else is configured.
            last = logging.lastResort
            alone = len(logging.getLogger().handlers) == 1
            if alone and last is not None and record.levelno >= last.level:
                last.handle(record)
            return
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        for line in text.splitlines():
            output.line(LogStream.STDERR, line)


def _outside_functions(record: logging.LogRecord) -> bool:
    """The process's own handlers skip records of a function (its job has them)."""
    return _CURRENT.get() is None


def install_routing() -> None:
    """Route function output (once per process; a no-op after the first call)."""
    with _install_lock:
        if not isinstance(sys.stdout, _RoutedStream):
            sys.stdout = _RoutedStream(sys.stdout, LogStream.STDOUT)
        if not isinstance(sys.stderr, _RoutedStream):
            sys.stderr = _RoutedStream(sys.stderr, LogStream.STDERR)
        root = logging.getLogger()
        for handler in root.handlers:
            if not isinstance(handler, _FunctionLogHandler) and (
                _outside_functions not in handler.filters
            ):
                handler.addFilter(_outside_functions)
        if not any(isinstance(h, _FunctionLogHandler) for h in root.handlers):
            root.addHandler(_FunctionLogHandler())
