"""Event-source cursors: how a consumer learns where to resume after a restart.

An ``OUTPUT:`` object may carry the reserved field ``"_headwater_cursor"`` (a string, or
an integer taken as its decimal text): the position in the consumer's source just after
this event (a Kafka offset, an SQS sequence number, a line number in a file...). The
field is removed from the job's input. headwater stores the cursor of the last event
whose job committed, in the same transaction as that job, and gives it to the next run
of the consumer as the environment variable ``HEADWATER_CURSOR`` (absent before the
first cursor). An event with a cursor and no trigger ``dedup_key`` is keyed by its
cursor, so an event replayed after a restart never becomes a second job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CURSOR_ENV",
    "CURSOR_FIELD",
    "MAX_CURSOR_CHARS",
    "cursor_dedup_key",
    "take_cursor",
]

CURSOR_FIELD = "_headwater_cursor"
CURSOR_ENV = "HEADWATER_CURSOR"
MAX_CURSOR_CHARS = 512  # an environment variable and a key part: keep it small


def take_cursor(
    payload: Mapping[str, Any],
) -> tuple[Mapping[str, Any], str | None, str | None]:
    """(payload without the cursor field, the cursor or None, a problem or None). With a
    problem the event is kept (without a cursor) and the problem is worth a warning."""
    if CURSOR_FIELD not in payload:
        return payload, None, None
    rest = {k: v for k, v in payload.items() if k != CURSOR_FIELD}
    value = payload[CURSOR_FIELD]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return rest, None, f"{CURSOR_FIELD} must be a string or an integer; ignored"
    cursor = value if isinstance(value, str) else str(value)
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not _storable(cursor):
        return (
            rest,
            None,
            (
                f"{CURSOR_FIELD} must be 1 to {MAX_CURSOR_CHARS} characters of UTF-8 without NUL;"
                " ignored"
            ),
        )
    return rest, cursor, None


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no database stores it
        return False
    return True


def cursor_dedup_key(trigger: str, cursor: str) -> str:
    """The dedup key of an event identified by its cursor (no trigger ``dedup_key``)."""
    return f"es:{trigger}:cursor:{cursor}"
