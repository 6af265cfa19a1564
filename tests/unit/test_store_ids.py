"""UUIDv7 ids, tag signatures and the UTC datetime column type (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from headwater.store.ids import UuidV7Generator, parse_tags, tag_signature, uuid7
from headwater.store.tables import UtcDateTime


def test_generator_ids_are_valid_uuid7_and_strictly_increasing() -> None:
    new_id = UuidV7Generator()
    ids = [new_id() for _ in range(10_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for value in (ids[0], ids[-1], uuid7()):
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value


def test_id_timestamp_is_unix_milliseconds() -> None:
    before = int(datetime.now(UTC).timestamp() * 1000)
    ms = int(UuidV7Generator()().replace("-", "")[:12], 16)
    assert before <= ms <= before + 1000


def test_counter_overflow_borrows_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("headwater.store.ids.time.time_ns", lambda: 1_700_000_000_000_000_000)
    new_id = UuidV7Generator()
    ids = [new_id() for _ in range(5000)]  # more than the 12-bit counter holds
    assert ids == sorted(ids) and len(set(ids)) == 5000


def test_take_gives_the_same_ids_as_calls_in_one_go(monkeypatch: pytest.MonkeyPatch) -> None:
    new_id = UuidV7Generator()
    ids = [*new_id.take(3000), new_id(), *new_id.take(1), *new_id.take(0), *new_id.take(700)]
    assert len(ids) == 3702 and ids == sorted(ids) and len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
    # All in one millisecond: the counter overflows into the next one, still in order.
    monkeypatch.setattr("headwater.store.ids.time.time_ns", lambda: 1_700_000_000_000_000_000)
    frozen = UuidV7Generator()
    ids = [*frozen.take(5000), frozen(), *frozen.take(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 10_001
    ms = {int(value.replace("-", "")[:12], 16) for value in ids}
    assert min(ms) == 1_700_000_000_000 and len(ms) >= 3


@given(st.frozensets(st.text(alphabet="abcdefgh-_", min_size=1, max_size=5), max_size=5))
def test_tag_signature_round_trips(tags: frozenset[str]) -> None:
    signature = tag_signature(tags)
    assert parse_tags(signature) == tags
    assert signature == tag_signature(sorted(tags, reverse=True))


def test_utc_datetime_type() -> None:
    column = UtcDateTime()
    lite, pg = sqlite.dialect(), postgresql.dialect()  # type: ignore[no-untyped-call]
    local = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert column.process_bind_param(local, lite) == datetime(2026, 1, 1, 10)
    assert column.process_bind_param(local, pg) == local
    assert column.process_bind_param(None, lite) is None
    with pytest.raises(ValueError, match="naive datetime"):
        column.process_bind_param(datetime(2026, 1, 1), lite)
    back = column.process_result_value(datetime(2026, 1, 1, 10), lite)
    assert back == local and back is not None and back.tzinfo is UTC
