"""Tera's tests (``is starting_with(...)``), functions (``range``, ``now``, ``get_env``...)
and the ``date`` filter.

``get_env`` reads only the environment variables an operator allowed
(``HEADWATER_TEMPLATE_ENV``, comma-separated names; a trailing ``*`` matches a prefix).
Strøm reads the whole process environment, but here templates render inside the server
and its workers, whose environment holds the database URL and broker credentials: a
workspace author must not be able to paste those into a job's input. A name that is not
allowed behaves as an unset variable (the ``default``, or an error that says how to allow
it).

``matching`` compiles its pattern with Python's ``re`` after refusing patterns that can
backtrack exponentially (a repeated group that itself repeats, or back-references), and
matches at most the first 100 000 characters, so event data cannot stall a render.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Undefined
from jinja2.sandbox import MAX_RANGE

from headwater.errors import TemplateCallError
from headwater.workspace.tera_filters import type_name

__all__ = ["DATE_FILTERS", "ENV_ALLOW_VARIABLE", "TESTS", "functions"]

ENV_ALLOW_VARIABLE = "HEADWATER_TEMPLATE_ENV"
_MAX_SUBJECT = 100_000
_MAX_PATTERN = 1_000
_DATE_FORMAT = "%Y-%m-%d"
# The regex parser's tree (private modules, hence no types): to look for nested repeats.
_SRE_PARSE: Any = importlib.import_module("re._parser")
_SRE_CONSTANTS: Any = importlib.import_module("re._constants")


# -- tests -----------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def t_odd(value: Any) -> bool:
    return _is_number(value) and bool(value % 2 == 1)


def t_even(value: Any) -> bool:
    return _is_number(value) and bool(value % 2 == 0)


def t_divisibleby(value: Any, num: Any) -> bool:
    if not _is_number(value) or not _is_number(num) or num == 0:
        return False
    return bool(value % num == 0)


def t_iterable(value: Any) -> bool:
    return isinstance(value, list | tuple | Mapping)


def t_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def t_starting_with(value: Any, prefix: Any) -> bool:
    return isinstance(value, str) and value.startswith(str(prefix))


def t_ending_with(value: Any, suffix: Any) -> bool:
    return isinstance(value, str) and value.endswith(str(suffix))


def t_containing(value: Any, needle: Any) -> bool:
    if isinstance(value, str):
        return isinstance(needle, str) and needle in value
    if isinstance(value, list | tuple):
        return needle in value
    if isinstance(value, Mapping):
        return isinstance(needle, str) and needle in value
    return False


def t_matching(value: Any, pattern: Any) -> bool:
    if not isinstance(value, str):
        return False
    if not isinstance(pattern, str):
        raise TemplateCallError(f"test `matching` needs a string pattern, got {type_name(pattern)}")
    return safe_regex(pattern).search(value[:_MAX_SUBJECT]) is not None


TESTS: dict[str, Callable[..., bool]] = {
    "odd": t_odd,
    "even": t_even,
    "divisibleby": t_divisibleby,
    "number": _is_number,
    "iterable": t_iterable,
    "object": t_object,
    "starting_with": t_starting_with,
    "ending_with": t_ending_with,
    "containing": t_containing,
    "matching": t_matching,
}


# -- regular expressions without catastrophic backtracking -----------------------------------
@lru_cache(maxsize=256)
def safe_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or ``TemplateCallError`` when it could backtrack exponentially."""
    if len(pattern) > _MAX_PATTERN:
        raise TemplateCallError(f"test `matching`: the pattern is over {_MAX_PATTERN} characters")
    try:
        compiled = re.compile(pattern)
        tree = _SRE_PARSE.parse(pattern)  # the parsed form, to look for nested repeats
    except re.error as exc:
        raise TemplateCallError(f"test `matching`: invalid regex {pattern!r}: {exc}") from None
    problem = _backtracking_risk(tree, inside_repeat=False)
    if problem:
        raise TemplateCallError(
            f"test `matching`: the regex {pattern!r} {problem}, which can take exponential"
            " time on some inputs; rewrite it without that"
        )
    return compiled


def _backtracking_risk(tree: Any, *, inside_repeat: bool) -> str | None:
    c = _SRE_CONSTANTS
    for op, arg in tree:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            _low, high, sub = arg
            repeats = high is c.MAXREPEAT or high > 1
            if repeats and inside_repeat and op is not c.POSSESSIVE_REPEAT:
                return "repeats a group that itself repeats"
            found = _backtracking_risk(sub, inside_repeat=inside_repeat or repeats)
            if found:
                return found
        elif op is c.GROUPREF or op is c.GROUPREF_EXISTS:
            return "uses a back-reference"
        elif op is c.SUBPATTERN:
            found = _backtracking_risk(arg[-1], inside_repeat=inside_repeat)
            if found:
                return found
        elif op is c.BRANCH:
            for branch in arg[1]:
                found = _backtracking_risk(branch, inside_repeat=inside_repeat)
                if found:
                    return found
        elif op in (c.ASSERT, c.ASSERT_NOT):
            found = _backtracking_risk(arg[1], inside_repeat=inside_repeat)
            if found:
                return found
        elif op is c.ATOMIC_GROUP:
            found = _backtracking_risk(arg, inside_repeat=inside_repeat)
            if found:
                return found
    return None


# -- dates -----------------------------------------------------------------------------------
def _parse_date(value: Any) -> dt.datetime | dt.date:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if _is_number(value):
        return dt.datetime.fromtimestamp(int(value), tz=dt.UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise TemplateCallError(
        "filter `date` needs a timestamp or a date string (RFC 3339, YYYY-MM-DD or"
        f" YYYY-MM-DDTHH:MM:SS), got {value!r}"
    )


def f_date(value: Any, format: str = _DATE_FORMAT, timezone: str | None = None) -> str:
    moment = _parse_date(value)
    if timezone is not None:
        try:
            zone = ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateCallError(f"filter `date`: unknown timezone {timezone!r}") from None
        if isinstance(moment, dt.datetime):
            aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
            moment = aware.astimezone(zone)
    try:
        return moment.strftime(str(format))
    except ValueError as exc:
        raise TemplateCallError(f"filter `date`: bad format {format!r}: {exc}") from None


DATE_FILTERS: dict[str, Callable[..., Any]] = {"date": f_date}


# -- functions -------------------------------------------------------------------------------
def _integer(name: str, arg: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TemplateCallError(f"function `{name}` needs an integer `{arg}`, got {value!r}")
    return value


def fn_range(*args: Any, **kwargs: Any) -> list[int]:
    """Tera's ``range(end=, start=0, step_by=1)``; Jinja's ``range(a, b, step)`` also works."""
    if args:
        bounds = [_integer("range", "end", a) for a in args]
        result = range(*bounds)
    else:
        if "end" not in kwargs:
            raise TemplateCallError("function `range` needs the argument `end`")
        end = _integer("range", "end", kwargs["end"])
        start = _integer("range", "start", kwargs.get("start", 0))
        step = _integer("range", "step_by", kwargs.get("step_by", 1))
        if step == 0:
            raise TemplateCallError("function `range`: `step_by` cannot be 0")
        result = range(start, end, step)
    if len(result) > MAX_RANGE:
        raise TemplateCallError(f"function `range`: over {MAX_RANGE} items")
    return list(result)


def fn_now(timestamp: bool = False, utc: bool = False) -> str | int:
    moment = dt.datetime.now(dt.UTC)
    if timestamp:
        return int(moment.timestamp())
    if not utc:
        moment = moment.astimezone()
    return moment.isoformat()


def fn_throw(message: Any = None, **_: Any) -> Any:
    if message is None:
        raise TemplateCallError("function `throw` needs the argument `message`")
    raise TemplateCallError(str(message))


def fn_get_random(start: Any = 0, end: Any = None) -> int:
    if end is None:
        raise TemplateCallError("function `get_random` needs the argument `end`")
    low, high = _integer("get_random", "start", start), _integer("get_random", "end", end)
    if high <= low:
        raise TemplateCallError("function `get_random`: `end` must be greater than `start`")
    return low + secrets.randbelow(high - low)


def allowed_env_names(spec: str | None) -> tuple[str, ...]:
    """``"A, B_*"`` as ``("A", "B_*")``."""
    return tuple(name.strip() for name in (spec or "").split(",") if name.strip())


def _allowed(name: str, allow: Iterable[str]) -> bool:
    for pattern in allow:
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return True
        if name == pattern:
            return True
    return False


def make_get_env(environ: Mapping[str, str], allow: tuple[str, ...]) -> Callable[..., Any]:
    def fn_get_env(name: Any = None, **kwargs: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise TemplateCallError("function `get_env` needs the argument `name`")
        if _allowed(name, allow) and name in environ:
            return environ[name]
        if "default" in kwargs:
            return kwargs["default"]
        if not _allowed(name, allow):
            raise TemplateCallError(
                f"environment variable {name!r} is not readable from templates; the"
                f" operator can allow it with {ENV_ALLOW_VARIABLE}={name}"
            )
        raise TemplateCallError(f"environment variable {name!r} is not set")

    return fn_get_env


def functions(environ: Mapping[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    return {
        "range": fn_range,
        "now": fn_now,
        "throw": fn_throw,
        "get_random": fn_get_random,
        "get_env": make_get_env(environ, allow),
    }
