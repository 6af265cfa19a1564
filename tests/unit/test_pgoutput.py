"""The pgoutput decoder of ``postgres_cdc`` and the change assembly over it: any message
PostgreSQL can send decodes to what was encoded; anything else is a PgOutputError (a
ValueError), never another exception; changes are numbered, filtered and skipped the way
the slot's position needs."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.triggers.receivers.postgres_cdc import pgoutput
from headwater.triggers.receivers.postgres_cdc.changes import TableFilter, assemble
from headwater.triggers.receivers.postgres_cdc.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    PgOutputError,
    Relation,
    Truncate,
    Tuple,
    Update,
)
from headwater.triggers.receivers.postgres_cdc.slot import default_slot_name

EXAMPLES = int(os.environ.get("HEADWATER_PROPERTY_EXAMPLES", "150"))
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


# -- an encoder, as PostgreSQL writes the messages (protocol 1) ----------------------------
def _s(text: str) -> bytes:
    return text.encode() + b"\0"


def _time(when: dt.datetime) -> bytes:
    return struct.pack("!q", (when - EPOCH) // dt.timedelta(microseconds=1))


def _tuple(row: Tuple) -> bytes:
    out = struct.pack("!h", len(row.values))
    for value in row.values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            raw = str(value).encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def encode(msg: pgoutput.Message) -> bytes:
    if isinstance(msg, Begin):
        return (
            b"B"
            + struct.pack("!Q", msg.final_lsn)
            + _time(msg.commit_time)
            + struct.pack("!I", msg.xid)
        )
    if isinstance(msg, Commit):
        return b"C\0" + struct.pack("!QQ", msg.commit_lsn, msg.end_lsn) + _time(msg.commit_time)
    if isinstance(msg, Relation):
        out = b"R" + struct.pack("!I", msg.relid) + _s(msg.schema) + _s(msg.name)
        out += msg.replica_identity.encode() + struct.pack("!h", len(msg.columns))
        for c in msg.columns:
            out += bytes([int(c.key)]) + _s(c.name) + struct.pack("!Ii", c.type_oid, -1)
        return out
    if isinstance(msg, Insert):
        return b"I" + struct.pack("!I", msg.relid) + b"N" + _tuple(msg.new)
    if isinstance(msg, Update):
        out = b"U" + struct.pack("!I", msg.relid)
        if msg.old is not None:
            out += (b"K" if msg.old_is_key else b"O") + _tuple(msg.old)
        return out + b"N" + _tuple(msg.new)
    if isinstance(msg, Delete):
        return (
            b"D"
            + struct.pack("!I", msg.relid)
            + (b"K" if msg.old_is_key else b"O")
            + _tuple(msg.old)
        )
    if isinstance(msg, Truncate):
        options = int(msg.cascade) | (2 if msg.restart_identity else 0)
        return (
            b"T"
            + struct.pack("!iB", len(msg.relids), options)
            + b"".join(struct.pack("!I", r) for r in msg.relids)
        )
    raise AssertionError(msg)


# -- strategies ---------------------------------------------------------------------------
names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=20)
lsns = st.integers(0, 2**64 - 1)
oids = st.integers(0, 2**32 - 1)
times = st.datetimes(
    min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)
values = st.none() | st.just(UNCHANGED) | names
tuples = st.lists(values, max_size=8).map(lambda v: Tuple(tuple(v)))
columns = st.builds(Column, names, oids, st.booleans())
messages = st.one_of(
    st.builds(Begin, lsns, times, oids),
    st.builds(Commit, lsns, lsns, times),
    st.builds(
        Relation,
        oids,
        names,
        names,
        st.sampled_from("dnfi"),
        st.lists(columns, max_size=6).map(tuple),
    ),
    st.builds(Insert, oids, tuples),
    st.builds(Update, oids, tuples, st.none() | tuples, st.booleans()).map(
        lambda u: Update(u.relid, u.new, u.old, u.old_is_key and u.old is not None)
    ),
    st.builds(Delete, oids, tuples, st.booleans()),
    st.builds(Truncate, st.lists(oids, max_size=5).map(tuple), st.booleans(), st.booleans()),
)


@PROPERTY
@given(messages)
def test_every_message_decodes_to_what_was_encoded(msg: pgoutput.Message) -> None:
    assert pgoutput.decode(encode(msg)) == msg


@PROPERTY
@given(messages, st.data())
def test_a_truncated_or_padded_message_is_a_pgoutput_error(
    msg: pgoutput.Message, data: st.DataObject
) -> None:
    raw = encode(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(PgOutputError):
        pgoutput.decode(raw[:cut])
    with pytest.raises(PgOutputError):
        pgoutput.decode(raw + b"x")


@PROPERTY
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_a_pgoutput_error(raw: bytes) -> None:
    with contextlib.suppress(PgOutputError):
        pgoutput.decode(raw)


@PROPERTY
@given(lsns)
def test_lsn_text_round_trips(lsn: int) -> None:
    assert pgoutput.parse_lsn(pgoutput.format_lsn(lsn)) == lsn


@pytest.mark.parametrize(
    ("text", "oid", "value"),
    [
        ("t", 16, True),
        ("f", 16, False),
        ("-42", 20, -42),
        ("7", 23, 7),
        ("1.5", 701, 1.5),
        ("NaN", 701, "NaN"),
        ("12345678901234567890.000000000001", 1700, "12345678901234567890.000000000001"),
        ('{"a": [1, 2]}', 3802, {"a": [1, 2]}),
        ("not json", 114, "not json"),
        ("2026-12-07 09:17:27.5+00", 1184, "2026-12-07T09:17:27.5+00:00"),
        ("2026-12-07 09:17:27+05:30", 1184, "2026-12-07T09:17:27+05:30"),
        ("2026-12-07 09:17:27", 1114, "2026-12-07T09:17:27"),
        ("infinity", 1184, "infinity"),
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ],
)
def test_values_are_typed_by_their_type_oid(text: str, oid: int, value: object) -> None:
    assert pgoutput.to_json(text, oid) == value


def test_a_key_tuple_keeps_the_key_and_an_unchanged_toast_value_is_left_out() -> None:
    rel = Relation(1, "public", "t", "d", (Column("id", 23, True), Column("big", 25, False)))
    assert pgoutput.tuple_values(rel, Tuple(("3", None)), key_only=True) == {"id": 3}
    assert pgoutput.tuple_values(rel, Tuple(("3", UNCHANGED))) == {"id": 3}
    with pytest.raises(PgOutputError):
        pgoutput.tuple_values(rel, Tuple(("3",)))


def test_default_slot_names_are_valid_and_distinct() -> None:
    a = default_slot_name("my-ws/Orders.Changes")
    b = default_slot_name("my-ws/orders_changes")
    assert a != b
    for name in (a, b, default_slot_name("w/" + "x" * 200)):
        assert len(name) <= 63 and name.replace("_", "").isalnum() and name == name.lower()


# -- assembling changes -----------------------------------------------------------------
REL = Relation(7, "public", "orders", "d", (Column("id", 23, True), Column("note", 25, False)))
OTHER = Relation(8, "audit", "log", "d", (Column("id", 23, True),))
T0 = EPOCH + dt.timedelta(days=9000)


def _txn(final: int, end: int, *changes: pgoutput.Message) -> list[tuple[int, bytes]]:
    rows = [(final - 10, encode(Begin(final, T0, 500 + final)))]
    rows += [(final - 5 + i, encode(c)) for i, c in enumerate(changes)]
    return [*rows, (end, encode(Commit(final, end, T0)))]


STREAM = [
    (90, encode(REL)),
    (91, encode(OTHER)),
    *_txn(100, 110, Insert(7, Tuple(("1", "a"))), Insert(8, Tuple(("9",)))),
    *_txn(200, 210, Update(7, Tuple(("1", "b")), Tuple(("1", None)), True)),
    *_txn(300, 310, Insert(8, Tuple(("10",)))),
    *_txn(400, 410, Delete(7, Tuple(("1", None)), True), Truncate((7, 8), False, False)),
]
ALL_OPS = ("insert", "update", "delete", "truncate")


def test_changes_are_numbered_within_their_transaction_and_advance_at_its_end() -> None:
    found = assemble(STREAM, {}, done=None, operations=ALL_OPS, tables=TableFilter()).changes
    assert [(c.final_lsn, c.index, c.operation) for c in found] == [
        (100, 0, "insert"),
        (100, 1, "insert"),
        (200, 0, "update"),
        (300, 0, "insert"),
        (400, 0, "delete"),
        (400, 1, "truncate"),
        (400, 2, "truncate"),
    ]
    assert [c.advance_to for c in found] == [None, 110, 210, 310, None, None, 410]
    update = found[2]
    assert (update.new, update.old, update.xid) == ({"id": 1, "note": "b"}, {"id": 1}, 700)
    assert found[4].old == {"id": 1} and found[4].new is None
    assert (found[6].schema, found[6].table) == ("audit", "log")
    assert found[0].id == "0/64:0"


def test_done_changes_are_skipped_and_filtered_ones_still_move_the_slot() -> None:
    found = assemble(
        STREAM,
        {},
        done=(100, 0),
        operations=("insert",),
        tables=TableFilter(frozenset({"orders"})),
        complete_to=500,
    )
    # Only inserts into orders after (100, 0): none. Everything read is done: advance.
    assert found.changes == [] and found.advance_now == 500
    found = assemble(
        STREAM, {}, done=(200, 0), operations=ALL_OPS, tables=TableFilter(frozenset({"audit.log"}))
    )
    assert [(c.final_lsn, c.index) for c in found.changes] == [(300, 0), (400, 2)]
    assert [c.advance_to for c in found.changes] == [310, 410]


def test_a_change_of_an_undescribed_relation_carries_an_error() -> None:
    rows = _txn(100, 110, Insert(99, Tuple(("1",))))
    (change,) = assemble(rows, {}, done=None, operations=ALL_OPS, tables=TableFilter()).changes
    assert change.error is not None and "99" in change.error
