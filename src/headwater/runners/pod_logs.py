"""A pod's followed log, resumable without losing or repeating lines.

The Kubernetes log API merges stdout and stderr into one stream (so every line of a
pod step is reported as stdout) and can drop a follow connection while the container
runs on (kubelet restarts, API server restarts, idle proxies). Lines are therefore
requested with ``timestamps=true`` (``2024-05-01T12:00:00.123456789Z <line>``): the
``LogCursor`` strips the prefix, remembers the last timestamp seen, and after a
reconnect (``sinceSeconds`` reaching back a margin before it) skips every line up to
and including the ones already passed on.

Limit: the container writes to a file the kubelet rotates (10 MiB by default); while
the sink holds back (``max_in_flight``) the container is not blocked, and a reader
that falls behind by more than a rotated file loses those lines. Size the rotation
(``containerLogMaxSize``) for consumers that can be held back for long.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

__all__ = ["TIMESTAMP_ROOM", "LogCursor"]

# Room for the timestamp prefix on top of max_line_bytes (RFC 3339 with nanoseconds).
TIMESTAMP_ROOM = 40
_MARGIN = 30  # seconds reached back on reconnect, for clock skew between worker and node
_TS = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def _key(prefix: bytes) -> tuple[bytes, int] | None:
    match = _TS.match(prefix)
    if match is None:
        return None
    fraction = match.group(2) or b""
    return match.group(1), int(fraction.ljust(9, b"0"))


class LogCursor:
    __slots__ = ("_last", "_max", "_same", "_skip", "_skip_same", "lines")

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._last: tuple[bytes, int] | None = None
        self._same = 0  # lines passed on with exactly the timestamp ``_last``
        self._skip: tuple[bytes, int] | None = None
        self._skip_same = 0
        self.lines = 0  # lines passed on, in total

    @property
    def max_raw(self) -> int:
        """The longest raw line worth keeping: content plus the timestamp prefix."""
        return self._max + TIMESTAMP_ROOM

    def accept(self, raw: bytes, truncated: bool) -> tuple[bytes, bool] | None:
        """The line's content (cut to ``max_line_bytes``) and whether it was cut, or
        None for a line already passed on before a reconnect."""
        prefix, space, content = raw.partition(b" ")
        key = _key(prefix) if space else None
        if key is None:
            content = raw  # no timestamp (should not happen): pass the line as it is
        else:
            if self._skip is not None:
                if key < self._skip:
                    return None
                if key == self._skip and self._skip_same > 0:
                    self._skip_same -= 1
                    return None
                self._skip = None
            if key == self._last:
                self._same += 1
            else:
                self._last, self._same = key, 1
        if len(content) > self._max:
            content, truncated = content[: self._max], True
        self.lines += 1
        return content, truncated

    def reconnect(self) -> None:
        """The stream broke: skip what was already seen when it resumes."""
        if self._last is not None:
            self._skip, self._skip_same = self._last, self._same

    def since_seconds(self, now: float) -> int | None:
        """``sinceSeconds`` for the next request: None for the first one."""
        if self._last is None:
            return None
        seconds = datetime.strptime(self._last[0].decode(), "%Y-%m-%dT%H:%M:%S")
        last = seconds.replace(tzinfo=UTC).timestamp()
        return max(1, math.ceil(now - last) + _MARGIN)
