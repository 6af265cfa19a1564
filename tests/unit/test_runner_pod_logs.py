"""A pod log that breaks and resumes passes every line on exactly once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headwater.runners.pod_logs import LogCursor


def stamped(lines: list[tuple[int, str]]) -> list[bytes]:
    # Several lines may share one timestamp (the kubelet's resolution is finite).
    return [f"2025-03-01T12:00:{s // 10:02d}.{s % 10}00000000Z {t}".encode() for s, t in lines]


def test_the_prefix_is_stripped_and_long_content_cut() -> None:
    cursor = LogCursor(5)
    assert cursor.accept(b"2025-03-01T12:00:00.5Z hello world", False) == (b"hello", True)
    assert cursor.accept(b"2025-03-01T12:00:00.5Z ", False) == (b"", False)
    assert cursor.accept(b"no timestamp", False) == (b"no ti", True)


@given(
    st.lists(st.tuples(st.integers(0, 40), st.text("abc", max_size=3)), max_size=30).map(
        lambda xs: sorted(xs, key=lambda x: x[0])
    ),
    st.data(),
)
def test_resuming_after_any_break_repeats_and_loses_nothing(
    lines: list[tuple[int, str]], data: st.DataObject
) -> None:
    raw = stamped(lines)
    cursor = LogCursor(1000)
    out: list[bytes] = []
    position = 0
    while position < len(raw):
        stop = data.draw(st.integers(position + 1, len(raw)))
        for line in raw[position:stop]:
            got = cursor.accept(line, False)
            if got is not None:
                out.append(got[0])
        cursor.reconnect()
        # The API resends from a second boundary at or before the last line seen.
        seconds = int(raw[stop - 1][17:19])
        position = next(i for i, line in enumerate(raw) if int(line[17:19]) >= seconds - 1)
        for line in raw[position:stop]:
            assert cursor.accept(line, False) is None
        position = stop
    assert out == [t.encode() for _, t in lines]


def test_since_seconds_reaches_back_past_the_last_line() -> None:
    cursor = LogCursor(100)
    assert cursor.since_seconds(0) is None
    cursor.accept(b"2025-03-01T12:00:00.5Z x", False)
    last = 1740830400  # 2025-03-01T12:00:00Z
    assert cursor.since_seconds(last + 10) == 40
