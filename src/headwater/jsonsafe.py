"""Strict, bounded JSON: the one decoder for every JSON headwater reads from outside.

``OUTPUT:`` lines, webhook and API bodies, broker payloads and the worker protocol all
go through ``loads``. Python's ``json`` alone accepts too much:

- ``NaN``, ``Infinity`` and ``-Infinity`` (and ``1e999``, which becomes ``inf``) are not
  JSON; a value holding one is stored by some paths and refused by others (SQLite's
  JSON functions call it malformed), so a job could be created and then never finish.
- Nesting is unbounded: 100,000 ``[`` raise ``RecursionError`` deep in a consumer.
- ``"\\u0000"`` is valid JSON that PostgreSQL's ``jsonb`` cannot store, and a lone
  surrogate (``"\\ud800"``) is valid JSON that is not valid Unicode (no UTF-8 encoding).

``loads`` refuses all of it with a ``JsonValueError`` that says why. Strings the stores
cannot keep are told apart (``unstorable=True``) because such a value is still an event
someone sent: it can be recorded, cleaned by ``clean``, as a rejected event.

``encode`` is the matching strict encoder for values headwater produces itself (a
function's return value, a step's output) before a store writes them; ``check_value``
is the same check without keeping the text.

Both take a fast path through ``orjson`` when it is installed (a dependency; the module
works without it): an event source decodes and encodes every event, and the standard
library spent 1.3 µs decoding ``{"n": 1}`` and 2 µs encoding it. The fast path accepts
and refuses exactly what the standard library path does: any text ``orjson`` refuses
(or might read differently: an integer of 19 or more digits, which it reads as a
float) goes through the standard library, which says why, and only values made of
exact JSON types with finite floats are encoded by ``orjson``.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from itertools import accumulate
from typing import Any

from headwater.errors import JsonValueError


def orjson_module() -> Any:
    """``orjson`` when it is installed (a dependency), else None: every caller keeps the
    standard library's path for when it is missing."""
    try:
        return importlib.import_module("orjson")
    except ImportError:  # pragma: no cover - installed with headwater
        return None


_orjson: Any = orjson_module()


def fast_text(value: Any) -> str | None:
    """orjson's compact text of ``value`` (the standard encoder's text, in a tenth of the
    time), or None when orjson is missing or refuses it (a lone surrogate): the caller
    then takes the standard path, which says what is wrong."""
    if _orjson is None:
        return None
    try:
        text: str = _orjson.dumps(value).decode()
    except _orjson.JSONEncodeError:
        return None
    return text


__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "STORE_MAX_DEPTH",
    "check_value",
    "clean",
    "depth",
    "encode",
    "fast_text",
    "is_data_error",
    "loads",
    "orjson_module",
]

# Deep enough for any real document, far below Python's recursion limit (~1000) and
# SQLite's JSON depth limit (1000).
MAX_DEPTH = 100
# What a store accepts from headwater's own values: a job's input is a payload (at most
# MAX_DEPTH) plus a few levels of defaults; the stores wrap rows in two more.
STORE_MAX_DEPTH = 512
MAX_BYTES = 16 * 1024 * 1024

_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}
# Escapes or characters that may decode to a string the stores cannot keep; only a
# text that has one is walked to find out (paired surrogate escapes are fine).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BIG_EXPONENT = re.compile(r"[eE][+-]?\d\d\d")
_LONG_DIGITS = re.compile(r"\d{309}")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# orjson reads an integer beyond 64 bits as a float: such texts take the standard path.
_LONG_NUMBER = re.compile(r"\d{19}")
# Exact JSON leaf types (subclasses, e.g. enums, take the standard library's path).
_LEAVES = frozenset({str, int, bool, type(None)})
# Deep values take the standard path (orjson refuses nesting beyond 254 levels).
_FAST_MAX_DEPTH = 200


def depth(text: str) -> int:
    """How deeply a JSON text nests arrays and objects (brackets inside strings do not
    count). Linear and without recursion, so it is safe on hostile input."""
    if text.count("[") + text.count("{") == 0:
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    raise JsonValueError(f"{name} is not a JSON number (use null or a string)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonValueError(f"the number {text[:40]} is too large for a JSON number")
    return value


# Built once: json.loads with options builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_CHECKED_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads(
    data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES
) -> Any:
    """The value of a JSON text; ``JsonValueError`` for anything this module refuses.

    Bytes must be UTF-8 (a BOM is allowed). ``unstorable`` is set on the error for valid
    JSON whose strings hold ``\\u0000`` or a lone surrogate."""
    if isinstance(data, bytes | bytearray):
        if len(data) > max_bytes:
            raise JsonValueError(f"the JSON text is larger than {max_bytes} bytes")
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JsonValueError(f"the JSON text is not UTF-8 ({exc.reason})") from None
    else:
        text = data
        # A character takes at least one byte: measure only when it could be too large.
        if len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise JsonValueError(f"the JSON text is larger than {max_bytes} bytes")
    if text.count("[") + text.count("{") > max_depth and depth(text) > max_depth:
        raise JsonValueError(f"the JSON nests deeper than {max_depth} levels")
    if _orjson is not None and not _LONG_NUMBER.search(text):
        try:
            value = _orjson.loads(text)
        except _orjson.JSONDecodeError:
            pass  # the standard library's path below refuses it, saying why, or reads it
        else:
            if "\\u" in text and _SUSPECT_ESCAPE.search(text):  # a NUL (orjson refuses
                try:  # lone surrogates, so the text was UTF-8)
                    _check_strings(value)
                except JsonValueError as exc:
                    raise JsonValueError(str(exc), unstorable=True, cleaned=clean(value)) from None
            return value
    # Only a number with a 3-digit exponent or 309+ digits can overflow to inf: the
    # (slower) checked float parser is used only when the text has one.
    big = _BIG_EXPONENT.search(text) or (len(text) > 308 and _LONG_DIGITS.search(text))
    decoder = _CHECKED_DECODER if big else _DECODER
    try:
        value = decoder.decode(text)
    except JsonValueError:
        raise
    except RecursionError:  # cannot happen after the depth check; kept as a backstop
        raise JsonValueError(f"the JSON nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise JsonValueError(f"malformed JSON ({exc})") from None
    if ("\\u" in text and _SUSPECT_ESCAPE.search(text)) or not _is_utf8(text):
        try:
            _check_strings(value)
        except JsonValueError as exc:
            raise JsonValueError(str(exc), unstorable=True, cleaned=clean(value)) from None
    return value


def _is_utf8(text: str) -> bool:
    """No surrogate code point (the encoder says so at C speed; a regex is slower)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode(value: Any, *, max_depth: int = STORE_MAX_DEPTH) -> str:
    """Compact UTF-8 JSON text of a value headwater is about to store, or
    ``JsonValueError`` (``unstorable=True``) naming what no store can keep."""
    if _plain(value, min(max_depth, _FAST_MAX_DEPTH)):
        fast = fast_text(value)
        if fast is not None:
            if "\\u0000" in fast:
                _check_strings(value)
            return fast
    try:
        text = _ENCODE(value)
    except RecursionError:
        raise JsonValueError(
            f"the value nests deeper than {max_depth} levels", unstorable=True
        ) from None
    except (TypeError, ValueError) as exc:
        raise JsonValueError(f"the value is not JSON ({exc})", unstorable=True) from None
    if text.count("[") + text.count("{") > max_depth and depth(text) > max_depth:
        raise JsonValueError(f"the value nests deeper than {max_depth} levels", unstorable=True)
    # ensure_ascii=False: a NUL is written as the escape, a surrogate as itself.
    if "\\u0000" in text or not _is_utf8(text):
        _check_strings(value)
    return text


def _plain(value: Any, room: int) -> bool:
    """Whether ``value`` is made of exact JSON types only (str keys, finite floats),
    nested at most ``room`` levels: what orjson encodes as the standard library does."""
    kind = type(value)
    if kind in _LEAVES:
        return True
    if kind is float:
        return math.isfinite(value)
    if room <= 0:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            kind = type(item)
            if kind not in _LEAVES and not _plain(item, room - 1):
                return False
        return True
    if kind is list:
        return all(type(item) in _LEAVES or _plain(item, room - 1) for item in value)
    return False


def check_value(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """``encode``'s checks (with the tighter default depth) for a value that is kept
    as a Python object."""
    encode(value, max_depth=max_depth)


def _check_strings(value: Any) -> None:
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            _check_string(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                where = _member(path, key)
                if isinstance(key, str):
                    _check_string(key, where + " (the key)")
                stack.append((child, where))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))


def _member(path: str, key: object) -> str:
    name = str(key)
    if name.isidentifier() and name.isascii():
        return f"{path}.{name}"[:200]
    return f"{path}[{ascii(name)[:60]}]"[:200]


def _check_string(text: str, where: str) -> None:
    found = _BAD_CHAR.search(text)
    if found is None:
        return
    char = found.group()
    if char == "\x00":
        raise JsonValueError(
            f"the string at {where} contains \\u0000 (NUL), which the store cannot keep",
            unstorable=True,
        )
    raise JsonValueError(
        f"the string at {where} contains a lone surrogate \\u{ord(char):04x}, which is not"
        " valid Unicode",
        unstorable=True,
    )


def clean(value: Any) -> Any:
    """A copy of a JSON value whose strings (and keys) have every NUL and lone surrogate
    replaced by U+FFFD, so that it can be stored (for example as a rejected event's
    payload); any other non-JSON leaf becomes its ``repr``."""
    if isinstance(value, str):
        return _BAD_CHAR.sub("\ufffd", value)
    if isinstance(value, dict):
        return {clean(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return repr(value)


def is_data_error(exc: BaseException) -> bool:
    """Whether a store failure is about the values written (one bad row), not the store
    (unreachable, locked, full): only then is a batch split to find the bad rows."""
    seen: BaseException | None = exc
    for _ in range(5):  # the driver's error is wrapped once or twice
        if seen is None:
            return False
        if isinstance(seen, JsonValueError | UnicodeError | TypeError):
            return True
        names = {cls.__name__ for cls in type(seen).__mro__}
        sqlstate = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if "DataError" in names or (isinstance(sqlstate, str) and sqlstate.startswith("22")):
            return True  # PostgreSQL's class 22: data exception
        if "malformed JSON" in str(seen):  # SQLite's JSON functions
            return True
        seen = seen.__cause__ or seen.__context__
    return False
