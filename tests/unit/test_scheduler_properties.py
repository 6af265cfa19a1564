"""Properties of the next-fire-time computation, over generated crons, zones and instants."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import example, given, settings
from hypothesis import strategies as st

from headwater.triggers.cron_schedule import CronSchedule

# Zones with 1 h DST both ways, a 30 min DST (Lord Howe), none, and a southern one.
ZONES = [
    "UTC",
    "Europe/Oslo",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
]


def field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        st.integers(1, max(1, (high - low) // 2)).map(lambda n: f"*/{n}"),
        value.map(str),
        st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
        st.lists(value, min_size=2, max_size=3, unique=True).map(
            lambda vs: ",".join(map(str, sorted(vs)))
        ),
    )


# Days up to 28 so that every generated expression has ticks in every month.
crons = st.builds(
    lambda sec, rest: " ".join(([sec] if sec is not None else []) + list(rest)),
    st.one_of(st.none(), field(0, 59)),
    st.tuples(field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 6)),
)


def _transition_in(lo: datetime, hi: datetime, tz: ZoneInfo) -> datetime:
    """The instant in ``(lo, hi]`` where the zone's offset changes (bisection, 1 s)."""
    offset = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid <= lo:
            mid = lo + timedelta(seconds=1)
        if mid.astimezone(tz).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return hi


def transitions(zone: str) -> list[datetime]:
    """The zone's DST transitions in 2024-2025."""
    tz = ZoneInfo(zone)
    found, day = [], datetime(2024, 1, 1, tzinfo=UTC)
    while day.year < 2026:
        nxt = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            found.append(_transition_in(day, nxt, tz))
        day = nxt
    return found


TRANSITIONS = [(zone, t) for zone in ZONES for t in transitions(zone)]
anywhen = st.tuples(
    st.sampled_from(ZONES),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
)
# Most interesting: within a few hours of a DST change.
near_dst = st.tuples(
    st.sampled_from(TRANSITIONS), st.integers(-4 * 3600 * 10**6, 4 * 3600 * 10**6)
).map(lambda p: (p[0][0], p[0][1] + timedelta(microseconds=p[1])))
cases = st.one_of(anywhen, near_dst)


def at_transition(tick: datetime, zone: ZoneInfo) -> bool:
    """A DST transition happens at ``tick`` (where a tick inside a gap is moved to)."""
    return (tick - timedelta(seconds=1)).astimezone(zone).utcoffset() != tick.astimezone(
        zone
    ).utcoffset()


@settings(max_examples=200, deadline=None)
@given(cron=crons, case=cases)
def test_next_fire_time_is_after_now_matches_and_is_the_first(
    cron: str, case: tuple[str, datetime]
) -> None:
    zone, now = case
    schedule = CronSchedule(cron, zone)
    nxt = schedule.next_after(now)
    assert nxt > now
    assert nxt.tzinfo is UTC and nxt.microsecond == 0
    six = len(cron.split()) == 6
    if not six:
        assert nxt.second == 0
    local = nxt.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    hour = cron.split()[2 if six else 1]
    assert croniter.match(cron, local, second_at_beginning=six) or (
        not hour.startswith("*") and at_transition(nxt, ZoneInfo(zone))
    )
    # Nothing fires in between: the backward walk agrees with the forward one.
    assert schedule.ticks_between(now, nxt, 3) == ([nxt], False)


@settings(max_examples=100, deadline=None)
@given(cron=crons, case=cases)
# Found by Hypothesis: the backward walk counted the walls of the spring-forward gap
# (02:00-02:59, no ticks of their own) and started the window after two real ticks.
@example(cron="*/11 * * * *", case=("Europe/Oslo", datetime(2024, 3, 31, 0, 43, 59, 999999, UTC)))
def test_ticks_are_increasing_and_consistent(cron: str, case: tuple[str, datetime]) -> None:
    zone, now = case
    schedule = CronSchedule(cron, zone)
    ticks = [schedule.next_after(now)]
    for _ in range(5):
        ticks.append(schedule.next_after(ticks[-1]))
    assert all(a < b for a, b in itertools.pairwise(ticks))
    found, _ = schedule.ticks_between(now, ticks[-1], 10)
    assert found == ticks


def reference_instants(wall: datetime, tz: ZoneInfo, fixed_hour: bool) -> set[datetime]:
    """When a wall-clock tick fires, by the rules the scheduler documents: a time in a
    DST gap fires at the gap's end if the hour is fixed (else not at all); a repeated
    time fires in the first pass, and also in the second unless the hour is fixed."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) != wall:  # in a gap
        return {_transition_in(min(first, second), max(first, second), tz)} if fixed_hour else set()
    if first == second or fixed_hour:
        return {first}
    return {first, second}


def near_change(instant: datetime, tz: ZoneInfo) -> bool:
    """A DST change within three hours of ``instant``."""
    before = (instant - timedelta(hours=3)).astimezone(tz).utcoffset()
    return before != (instant + timedelta(hours=3)).astimezone(tz).utcoffset()


def reference_next(cron: str, zone: str, now: datetime, n: int) -> list[datetime]:
    """The first ``n`` ticks after ``now`` from a walk over naive wall-clock times,
    converted by hand: an oracle independent of croniter's time-zone handling."""
    tz = ZoneInfo(zone)
    six = len(cron.split()) == 6
    hour = cron.split()[2 if six else 1]
    # Near a DST change an earlier wall may fire after ``now``: start the walk early.
    back = timedelta(hours=2 if near_change(now, tz) else 0)
    it = croniter(cron, now.astimezone(tz).replace(tzinfo=None) - back, second_at_beginning=six)
    found: set[datetime] = set()
    bound: datetime | None = None
    while True:
        wall: datetime = it.get_next(datetime)
        found |= {u for u in reference_instants(wall, tz, not hour.startswith("*")) if u > now}
        if bound is None and len(found) >= n:
            # Later walls can only add later instants, except near a DST change, where
            # a wall up to the largest shift (1 h in these zones) later may fire earlier.
            nth = sorted(found)[n - 1]
            margin = timedelta(minutes=61 if near_change(nth, tz) else 0)
            bound = nth.astimezone(tz).replace(tzinfo=None) + margin
        if bound is not None and wall > bound:
            return sorted(found)[:n]


@settings(max_examples=150, deadline=None)
@given(cron=crons, case=cases)
def test_forward_walk_agrees_with_a_wall_clock_oracle(
    cron: str, case: tuple[str, datetime]
) -> None:
    zone, now = case
    schedule = CronSchedule(cron, zone)
    expected = reference_next(cron, zone, now, 4)
    first = schedule.next_after(now)
    got = [first]
    while len(got) < 4:
        got.append(schedule.next_after(got[-1]))
    assert got == expected
