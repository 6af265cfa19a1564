"""Identifiers and small value helpers shared by the store's queries.

Job ids are UUIDv7 strings (RFC 9562): the first 48 bits are the Unix time in
milliseconds, so ids sort in creation order, B-tree inserts stay on the right edge of the
index, and keyset pagination by id follows time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime

__all__ = [
    "UuidV7Generator",
    "parse_id",
    "parse_tags",
    "tag_signature",
    "utcnow",
    "uuid7",
]

_COUNTER_MAX = 0xFFF  # rand_a: 12 bits used as a per-millisecond counter
# "7xxx": the version nibble and the counter, for every counter value.
_VERSION_COUNTER = [f"{0x7000 | c:04x}" for c in range(_COUNTER_MAX + 1)]
# The first hex digit of rand_b with its top two bits set to the RFC 9562 variant 0b10.
_VARIANT = {f"{d:x}": f"{(d & 0x3) | 0x8:x}" for d in range(16)}


def _format(ms: int, rand_a: int, rand_b: int) -> str:
    # Hex fields laid out directly (version 7, RFC 9562 variant 0b10): twice as fast as
    # assembling a 128-bit int and slicing its hex.
    b = f"{(rand_b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000:016x}"
    return (
        f"{(ms >> 16) & 0xFFFF_FFFF:08x}-{ms & 0xFFFF:04x}-{0x7000 | (rand_a & _COUNTER_MAX):04x}"
        f"-{b[:4]}-{b[4:]}"
    )


def uuid7() -> str:
    """A UUIDv7 string. Ordered across milliseconds; use ``UuidV7Generator`` when ids made
    within the same millisecond must also sort in the order they were made."""
    rand = int.from_bytes(os.urandom(10), "big")
    return _format(time.time_ns() // 1_000_000, rand >> 64, rand)


class UuidV7Generator:
    """Strictly increasing UUIDv7 strings from one generator (RFC 9562, method 1).

    ``rand_a`` is a counter that starts at a random value below 2048 every millisecond, so
    a 500-job batch made in one millisecond keeps its order; when the counter would wrap
    the timestamp borrows the next millisecond, and a clock that steps back is ignored.
    One generator per store: no process-wide state.
    """

    __slots__ = ("_counter", "_last_ms")

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > self._last_ms:
            self._last_ms = ms
            self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
        elif self._counter < _COUNTER_MAX:
            self._counter += 1
        else:
            self._last_ms += 1
            self._counter = 0
        return _format(self._last_ms, self._counter, int.from_bytes(os.urandom(8), "big"))

    def take(self, n: int) -> list[str]:
        """``n`` ids at once, the same as ``n`` calls: one ``urandom`` call and one clock
        read for all of them, and the hex built from tables (a 500-job batch needs 500)."""
        if n <= 0:
            return []
        ms = time.time_ns() // 1_000_000
        if ms > self._last_ms:
            self._last_ms = ms
            self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
            first = True
        else:
            first = False
        noise = os.urandom(8 * n).hex()
        ids: list[str] = []
        prefix = ""
        prefix_ms = -1
        for i in range(n):
            if first:
                first = False
            elif self._counter < _COUNTER_MAX:
                self._counter += 1
            else:
                self._last_ms += 1
                self._counter = 0
            if self._last_ms != prefix_ms:
                prefix_ms = self._last_ms
                prefix = f"{(prefix_ms >> 16) & 0xFFFF_FFFF:08x}-{prefix_ms & 0xFFFF:04x}-"
            b = noise[16 * i : 16 * i + 16]
            ids.append(
                f"{prefix}{_VERSION_COUNTER[self._counter]}-{_VARIANT[b[0]]}{b[1:4]}-{b[4:]}"
            )
        return ids


def tag_signature(tags: Iterable[str]) -> str:
    """The tag signature a worker claims by: sorted distinct tags joined by ','."""
    return ",".join(sorted(set(tags)))


def parse_id(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id ``<ms>-<seq>`` as numbers (the SDK checkpoints by it)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def parse_tags(signature: str) -> frozenset[str]:
    return frozenset(signature.split(",")) if signature else frozenset()


def utcnow() -> datetime:
    return datetime.now(UTC)
