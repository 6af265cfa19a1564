"""When a cron expression fires in a time zone, daylight saving time included.

croniter walks naive wall-clock times here (pure calendar arithmetic, which it gets
right); turning a wall-clock time into an instant is done by hand, because croniter's own
time-zone handling is inconsistent around DST changes (its backward walk can return
times that match nothing, and forward and backward disagree inside a gap).

The rules, Vixie cron's:
- spring forward (a wall-clock gap): a tick inside the gap fires at the gap's end when
  the hour field is fixed (``30 2 * * *``), and is dropped when the hour field starts
  with ``*`` (``*/5 * * * *`` keeps running every five minutes of real time);
- fall back (a repeated hour): a fixed-hour tick fires once, in the first pass; a
  ``*`` hour fires in both passes, since its ticks are real-time intervals.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from croniter import croniter

from headwater.workspace.cron import cron_problem, timezone_problem

__all__ = ["CronSchedule"]

_ONE_US = timedelta(microseconds=1)
_FIXED_HOUR_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily"})


class CronSchedule:
    """A cron expression (5 fields, or 6 with seconds first) in an IANA time zone.

    Times in are tz-aware (any zone); times out are UTC. Raises ``ValueError`` for an
    invalid expression or zone (the workspace validator reports those earlier).
    """

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        problem = cron_problem(expression) or timezone_problem(timezone)
        if problem is not None:
            raise ValueError(problem)
        self.expression = expression.strip()
        self.timezone = timezone
        self._tz = zoneinfo.ZoneInfo(timezone)
        fields = self.expression.split()
        self._six = not self.expression.startswith("@") and len(fields) == 6
        if self.expression.startswith("@"):
            self._fixed_hour = self.expression.lower() in _FIXED_HOUR_ALIASES
        else:
            self._fixed_hour = not fields[2 if self._six else 1].startswith("*")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r})"

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``.

        Raises croniter's ``CroniterBadDateError`` (a ValueError) when the expression
        never matches (``0 0 30 2 *``)."""
        return next(self.forward(after))

    def ticks_between(
        self, after: datetime, until: datetime, limit: int
    ) -> tuple[list[datetime], bool]:
        """Ticks in ``(after, until]``, oldest first: the ``limit`` newest of them, and
        whether older ones were left out.

        The cost is bounded by ``limit`` however long ago ``after`` is (a per-second cron
        after a month of downtime): a backward walk estimates where the newest ``limit``
        ticks start, and the forward walk from there decides which ticks exist."""
        if until <= after:
            return [], False
        start, capped = self._window_start(after, until, limit)
        found: list[datetime] = []
        for tick in self.forward(start):
            if tick > until:
                break
            found.append(tick)
        if len(found) > limit:
            found, capped = found[-limit:], True
        return found, capped

    def forward(self, after: datetime) -> Iterator[datetime]:
        """Every tick strictly after ``after``, increasing, in UTC (endless)."""
        last = after
        for tick in self._ticks_from(after):
            # Several gap ticks collapse onto the gap's end: fire that instant once.
            if tick > last:
                last = tick
                yield tick

    def _ticks_from(self, after: datetime) -> Iterator[datetime]:
        """Ticks after ``after`` in order (maybe repeated). Lazy, so that the next tick
        costs a step or two of croniter, also inside a repeated hour."""
        cursor = self._wall(after)
        region = self._repeat_region(cursor)
        if region is not None:
            # ``after`` is inside a repeated hour: finish its pass, then the second one.
            start, end, change = region
            if after < change:
                yield from self._pass(cursor, end, fold=0)
                if not self._fixed_hour:
                    yield from self._pass(start - _ONE_US, end, fold=1)
            elif not self._fixed_hour:
                yield from self._pass(cursor, end, fold=1)
            cursor = end - _ONE_US
        walls = self._walls(cursor)
        while True:
            wall = next(walls)
            first, second = self._instants(wall)
            if first == second:
                yield first
            elif self._wall(first) != wall:  # in a gap: the time does not exist
                if self._fixed_hour:
                    yield _transition(min(first, second), max(first, second), self._tz)
            else:  # the first matching wall of a repeated hour
                start, end, _ = self._region_of(first, second)
                yield first
                yield from self._pass(wall, end, fold=0)
                if not self._fixed_hour:
                    yield from self._pass(start - _ONE_US, end, fold=1)
                walls = self._walls(end - _ONE_US)

    # -- helpers -----------------------------------------------------------------------------
    def _pass(self, after_wall: datetime, end: datetime, fold: int) -> Iterator[datetime]:
        """One pass over a repeated hour: matching walls in ``(after_wall, end)`` read
        with ``fold``."""
        for wall in self._walls(after_wall):
            if wall >= end:
                return
            yield self._instants(wall)[fold]

    def _walls(self, after_wall: datetime) -> Iterator[datetime]:
        """Naive wall-clock times that match, strictly after ``after_wall``."""
        it = croniter(self.expression, after_wall, second_at_beginning=self._six)
        while True:
            wall: datetime = it.get_next(datetime)
            yield wall

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self._tz).replace(tzinfo=None)

    def _instants(self, wall: datetime) -> tuple[datetime, datetime]:
        """``wall`` read with fold 0 and fold 1 (equal unless DST makes it a gap or a
        repeat; in a repeat, the first is the first pass)."""
        return (
            wall.replace(tzinfo=self._tz, fold=0).astimezone(UTC),
            wall.replace(tzinfo=self._tz, fold=1).astimezone(UTC),
        )

    def _repeat_region(self, wall: datetime) -> tuple[datetime, datetime, datetime] | None:
        first, second = self._instants(wall)
        if first == second or self._wall(first) != wall:
            return None
        return self._region_of(first, second)

    def _region_of(self, first: datetime, second: datetime) -> tuple[datetime, datetime, datetime]:
        """The wall-clock interval ``[start, end)`` that a fall-back repeats, and the
        instant of the change (the second pass starts there)."""
        change = _transition(first, second, self._tz)
        return self._wall(change), self._wall(change - _ONE_US) + _ONE_US, change

    def _window_start(self, after: datetime, until: datetime, limit: int) -> tuple[datetime, bool]:
        """``after``, or an instant before the newest ``limit`` ticks up to ``until`` when
        there are more (then ``True``: older ticks are left out).

        The backward walk is over naive wall-clock times, so near a DST change it is an
        estimate (the forward walk then trims to ``limit``)."""
        after_wall = self._wall(after)
        it = croniter(self.expression, self._wall(until) + _ONE_US, second_at_beginning=self._six)
        counted = 0
        while counted <= limit:
            wall: datetime = it.get_prev(datetime)
            if wall <= after_wall:
                return after, False
            first, second = self._instants(wall)
            # A wall inside a spring-forward gap is no tick of its own (dropped, or one
            # of several collapsing onto the gap's end): counting it would start the
            # window too late and lose real ticks. Counting too few is safe, as the
            # forward walk keeps only the newest ``limit``.
            if first == second or self._wall(first) == wall:
                counted += 1
        estimate = min(self._instants(wall))  # the earlier reading of a repeat
        if estimate <= after:
            return after, False
        return estimate, self.next_after(after) <= estimate


def _transition(lo: datetime, hi: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    """The instant in ``(lo, hi]`` where ``tz``'s offset changes (they are whole seconds)."""
    low = int(lo.timestamp())
    high = int(hi.timestamp()) + (1 if hi.microsecond else 0)
    before = lo.astimezone(tz).utcoffset()
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == before:
            low = mid
        else:
            high = mid
    return datetime.fromtimestamp(high, UTC)
