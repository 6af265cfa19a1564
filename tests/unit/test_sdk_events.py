"""Stream entries: what the publisher writes is what a consumer decodes; markers and
foreign entries are told apart; ``send_event``'s row is validated."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import headwater
from headwater.errors import InvalidEventError
from headwater.sdk.events import (
    CREATION_TS_KEY,
    MARKER_FIELD,
    EntryKind,
    decode_entry,
    encode_fields,
)
from headwater.sdk.outbox import MAX_EVENT_BYTES, outbox_row
from headwater.store.tables import metadata, outbox_events

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
objects = st.dictionaries(st.text(), json_values, max_size=5)


@given(payload=objects, metadata=st.none() | objects, outbox_id=st.integers(1, 2**40))
def test_an_entry_round_trips(payload: dict[str, Any], metadata: Any, outbox_id: int) -> None:
    fields = encode_fields("u-1", "UserCreated", outbox_id, payload, metadata)
    raw = {k.encode(): v.encode() for k, v in fields.items()}  # as Redis returns them
    kind, event, problem = decode_entry("s", "17-3", raw)
    assert (kind, problem) == (EntryKind.EVENT, "")
    assert event is not None
    assert (event.payload, event.metadata, event.outbox_id) == (payload, metadata, outbox_id)
    assert (event.stream_name, event.redis_id, event.event_type) == ("s", "17-3", "UserCreated")


@pytest.mark.parametrize(
    ("fields", "kind", "problem"),
    [
        ({MARKER_FIELD: "epoch"}, EntryKind.MARKER, ""),
        ({"x": "1"}, EntryKind.MALFORMED, "the entry has no 'payload' field"),
        (
            {"payload": "{", "event_uuid": "u", "event_type": "t"},
            EntryKind.MALFORMED,
            "the entry does not decode",
        ),
        (
            {"payload": "[1]", "event_uuid": "u", "event_type": "t"},
            EntryKind.MALFORMED,
            "payload and metadata must be JSON objects",
        ),
    ],
)
def test_markers_and_foreign_entries_are_told_apart(
    fields: dict[str, str], kind: EntryKind, problem: str
) -> None:
    found, event, why = decode_entry("s", "1-0", fields)
    assert found is kind and event is None and why.startswith(problem)


def test_the_creation_time_is_stamped_and_read_back() -> None:
    row = outbox_row("s", "T", {"a": 1}, {"trace": "x"})
    assert row["event_metadata"]["trace"] == "x"
    fields = encode_fields(row["event_uuid"], "T", 1, row["payload"], row["event_metadata"])
    _, event, _ = decode_entry("s", "1-0", fields)
    assert event is not None and event.created_at is not None
    assert abs(event.created_at.timestamp() * 1000 - row["event_metadata"][CREATION_TS_KEY]) < 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "T", {}), "stream must be a non-empty string"),
        (("s", " ", {}), "event_type must be a non-empty string"),
        (("s", "T", [1]), "payload must be a JSON object"),
        (("s", "T", {"when": object()}), "must be JSON-serialisable"),
        (("s", "T", {"big": "x" * MAX_EVENT_BYTES}), "store large data elsewhere"),
    ],
)
def test_bad_events_are_refused_with_what_to_do(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        outbox_row(*args, None)


def test_send_event_writes_in_the_callers_transaction(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/o.db")
    metadata.create_all(engine, tables=[outbox_events])
    with Session(engine) as session:
        headwater.send_event(session, "s", "Dropped", {"n": 1})
        session.rollback()  # the business transaction failed: no event either
        with session.begin():
            event_uuid = headwater.send_event(session, "s", "Kept", {"n": 2}, {"trace": "t"})
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_events)).all()
    assert [(r.event_uuid, r.event_type, r.payload) for r in rows] == [
        (event_uuid, "Kept", {"n": 2})
    ]
    assert rows[0].published_at is None
    with pytest.raises(TypeError, match="asend_event"):
        headwater.send_event(object(), "s", "T", {})  # type: ignore[arg-type]
