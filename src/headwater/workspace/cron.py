"""Cron expressions as Strøm writes them, and IANA time zones.

Five fields are ``minute hour day month weekday``; six fields put **seconds first**
(``"*/10 * * * * *"`` is every ten seconds), as Strøm and Quartz do, whereas croniter
puts them last by default. ``@hourly``-style aliases are accepted too. Every user of a
cron expression goes through ``make_cron`` so that validation and scheduling agree.
"""

from __future__ import annotations

import difflib
import zoneinfo
from datetime import datetime
from functools import lru_cache

from croniter import croniter

__all__ = ["cron_problem", "make_cron", "timezone_problem"]


def _fields(expression: str) -> list[str]:
    return expression.split()


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a valid cron expression, or None."""
    text = expression.strip()
    if not text:
        return "the cron expression is empty"
    if text.startswith("@"):
        if croniter.is_valid(text):
            return None
        return f"unknown cron alias {text!r} (use @yearly, @monthly, @weekly, @daily, @hourly)"
    count = len(_fields(text))
    if count not in (5, 6):
        return (
            f"cron expression {text!r} has {count} fields; write 5 (minute hour day month"
            " weekday) or 6 (second minute hour day month weekday)"
        )
    if not croniter.is_valid(text, second_at_beginning=count == 6):
        return f"invalid cron expression {text!r}"
    return None


def make_cron(expression: str, start: datetime) -> croniter:
    """A croniter over ``expression`` (validated with ``cron_problem`` first)."""
    text = expression.strip()
    six = not text.startswith("@") and len(_fields(text)) == 6
    return croniter(text, start, second_at_beginning=six)


@lru_cache(maxsize=1)
def _all_zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone (with a suggestion), or None."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    else:
        return None
    close = difflib.get_close_matches(name, _all_zones(), n=1, cutoff=0.6)
    hint = f" (did you mean `{close[0]}`?)" if close else " (write an IANA name like Europe/Oslo)"
    return f"unknown timezone {name!r}{hint}"
