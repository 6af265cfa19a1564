"""Tera's string and number filters, with Tera's argument names and results.

Each filter is called by Jinja as ``f(value, *args, **kwargs)``. Where Jinja has a
filter of the same name with other arguments (``replace``, ``truncate``, ``indent``),
the Tera keywords select Tera's behaviour and Jinja's positional spelling keeps
working. A filter that cannot use its input raises ``TemplateCallError``; the engine
adds which template it was.
"""

from __future__ import annotations

import math
import re
import shlex
import unicodedata
from typing import Any
from urllib.parse import quote

from jinja2 import Undefined

from headwater.errors import TemplateCallError

__all__ = ["STRING_FILTERS", "as_text", "need_str"]

_WORDS = re.compile(r"\b([\w'])([\w']*)\b")
_TAGS = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)
_BETWEEN_TAGS = re.compile(r">\s+<")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB", "EB")
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def need_str(name: str, value: Any, arg: str = "value") -> str:
    """``value`` as a str, or the error Tera gives for a filter called on a non-string."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if not isinstance(value, str):
        raise TemplateCallError(
            f"filter `{name}` needs a string for `{arg}`, got {type_name(value)}"
        )
    return value


def need_arg(name: str, kwargs: dict[str, Any], arg: str, args: tuple[Any, ...] = ()) -> Any:
    """A mandatory argument, by Tera keyword or (Jinja) first position."""
    if arg in kwargs:
        return kwargs[arg]
    if args:
        return args[0]
    raise TemplateCallError(f"filter `{name}` needs the argument `{arg}`")


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def as_text(value: Any) -> str:
    """How a value is written into text: JSON spelling for null, booleans and containers."""
    import json

    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _unescape_pattern(pat: str) -> str:
    # Tera reads "\\n" and "\\t" in a pattern as a newline and a tab.
    return pat.replace("\\n", "\n").replace("\\t", "\t")


# -- strings ---------------------------------------------------------------------------------
def f_capitalize(value: Any) -> str:
    s = need_str("capitalize", value)
    return s[:1].upper() + s[1:].lower()


def f_title(value: Any) -> str:
    s = need_str("title", value)
    return _WORDS.sub(lambda m: m.group(1).upper() + m.group(2).lower(), s)


def f_wordcount(value: Any) -> int:
    return len(need_str("wordcount", value).split())


def f_replace(value: Any, /, *args: Any, **kwargs: Any) -> str:
    s = need_str("replace", value)
    if "from" in kwargs or "to" in kwargs:
        old = need_str("replace", need_arg("replace", kwargs, "from"), "from")
        new = need_str("replace", need_arg("replace", kwargs, "to"), "to")
        return s.replace(old, new)
    if len(args) < 2:
        raise TemplateCallError("filter `replace` needs the arguments `from` and `to`")
    count = int(args[2]) if len(args) > 2 else -1
    return s.replace(str(args[0]), str(args[1]), count)


def f_addslashes(value: Any) -> str:
    s = need_str("addslashes", value)
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")


def f_slugify(value: Any) -> str:
    s = need_str("slugify", value)
    ascii_text = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")


def f_trim(value: Any, chars: str | None = None) -> str:
    return need_str("trim", value).strip(chars)


def f_trim_start(value: Any) -> str:
    return need_str("trim_start", value).lstrip()


def f_trim_end(value: Any) -> str:
    return need_str("trim_end", value).rstrip()


def f_trim_start_matches(value: Any, /, *args: Any, **kwargs: Any) -> str:
    s = need_str("trim_start_matches", value)
    pat = _unescape_pattern(need_str("trim_start_matches", need_arg("x", kwargs, "pat", args)))
    if pat:
        while s.startswith(pat):
            s = s[len(pat) :]
    return s


def f_trim_end_matches(value: Any, /, *args: Any, **kwargs: Any) -> str:
    s = need_str("trim_end_matches", value)
    pat = _unescape_pattern(need_str("trim_end_matches", need_arg("x", kwargs, "pat", args)))
    if pat:
        while s.endswith(pat):
            s = s[: -len(pat)]
    return s


def f_truncate(value: Any, /, *args: Any, **kwargs: Any) -> str:
    s = need_str("truncate", value)
    if args or "killwords" in kwargs or "leeway" in kwargs:
        return _jinja_truncate(s, *args, **kwargs)
    length = int(kwargs.get("length", 255))
    end = str(kwargs.get("end", "…"))
    if length < 0:
        raise TemplateCallError("filter `truncate`: `length` cannot be negative")
    # Tera counts grapheme clusters; combining marks stay with their base character.
    clusters: list[str] = []
    for char in s:
        if clusters and unicodedata.combining(char):
            clusters[-1] += char
        else:
            clusters.append(char)
    if length >= len(clusters):
        return s
    return "".join(clusters[:length]) + end


def _jinja_truncate(
    s: str,
    length: int = 255,
    killwords: bool = False,
    end: str = "...",
    leeway: int = 5,
) -> str:
    # Jinja's word-aware truncate, for templates that call it positionally.
    if len(s) <= length + leeway:
        return s
    if killwords:
        return s[: length - len(end)] + end
    result = s[: length - len(end)].rsplit(" ", 1)[0]
    return result + end


def f_linebreaksbr(value: Any) -> str:
    return need_str("linebreaksbr", value).replace("\r\n", "<br>").replace("\n", "<br>")


def f_spaceless(value: Any) -> str:
    return _BETWEEN_TAGS.sub("><", need_str("spaceless", value))


def f_striptags(value: Any) -> str:
    return _TAGS.sub("", need_str("striptags", value))


def f_escape(value: Any) -> str:
    s = value if isinstance(value, str) else as_text(value)
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#x27;")
        .replace("/", "&#x2F;")
    )


def f_escape_xml(value: Any) -> str:
    s = need_str("escape_xml", value)
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def f_urlencode(value: Any) -> str:
    if isinstance(value, dict):
        return "&".join(
            f"{quote(str(k), safe='')}={quote(as_text(v), safe='')}" for k, v in value.items()
        )
    return quote(need_str("urlencode", value), safe="/")


def f_urlencode_strict(value: Any) -> str:
    s = need_str("urlencode_strict", value)
    return "".join(
        ch if ch in _ALNUM else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in s
    )


def f_indent(value: Any, /, *args: Any, **kwargs: Any) -> str:
    s = need_str("indent", value)
    width: Any = kwargs.get("prefix", kwargs.get("width", args[0] if args else "    "))
    prefix = " " * width if isinstance(width, int) and not isinstance(width, bool) else str(width)
    first = bool(kwargs.get("first", args[1] if len(args) > 1 else False))
    blank = bool(kwargs.get("blank", args[2] if len(args) > 2 else False))
    out: list[str] = []
    for i, line in enumerate(s.splitlines()):
        if i == 0:
            out.append(prefix + line if first else line)
        elif blank or line.strip():
            out.append(prefix + line)
        else:
            out.append(line)
    return "\n".join(out)


def f_split(value: Any, /, *args: Any, **kwargs: Any) -> list[str]:
    s = need_str("split", value)
    pat = _unescape_pattern(need_str("split", need_arg("split", kwargs, "pat", args), "pat"))
    if not pat:
        # Rust's split("") yields "", each char, "".
        return ["", *s, ""]
    return s.split(pat)


def f_as_str(value: Any) -> str:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return as_text(value)


def f_shell_quote(value: Any) -> str:
    """The value as one shell word (``shlex.quote``): safe to paste into a shell script."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return shlex.quote(as_text(value))


# -- numbers ---------------------------------------------------------------------------------
def _number(name: str, value: Any) -> int | float:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TemplateCallError(f"filter `{name}` needs a number, got {type_name(value)}")
    return value


def f_abs(value: Any) -> int | float:
    return abs(_number("abs", value))


def f_round(value: Any, /, *args: Any, **kwargs: Any) -> float:
    num = float(_number("round", value))
    precision = int(kwargs.get("precision", args[0] if args else 0))
    method = str(kwargs.get("method", args[1] if len(args) > 1 else "common"))
    factor = 10.0**precision
    scaled = num * factor
    if method == "common":
        # Half away from zero, as Rust's f64::round (Python's round() is half-to-even).
        rounded = math.floor(abs(scaled) + 0.5) * (1 if scaled >= 0 else -1)
    elif method == "ceil":
        rounded = math.ceil(scaled)
    elif method == "floor":
        rounded = math.floor(scaled)
    else:
        raise TemplateCallError(
            f"filter `round`: method {method!r} is not one of common, ceil, floor"
        )
    return rounded / factor


def f_pluralize(value: Any, singular: str = "", plural: str = "s") -> str:
    num = _number("pluralize", value)
    return singular if abs(num) == 1 else plural


def f_filesizeformat(value: Any, binary: bool = False) -> str:
    num = _number("filesizeformat", value)
    if num < 0:
        raise TemplateCallError("filter `filesizeformat` needs a number of bytes >= 0")
    units = _BINARY_UNITS if binary else _SIZE_UNITS
    size = float(num)
    unit = 0
    while size >= 1024 and unit < len(units) - 1:
        size /= 1024
        unit += 1
    if unit == 0:
        return f"{int(num)} B"
    text = f"{size:.2f}".rstrip("0").rstrip(".")
    return f"{text} {units[unit]}"


STRING_FILTERS: dict[str, Any] = {
    "capitalize": f_capitalize,
    "title": f_title,
    "wordcount": f_wordcount,
    "replace": f_replace,
    "addslashes": f_addslashes,
    "slugify": f_slugify,
    "trim": f_trim,
    "trim_start": f_trim_start,
    "trim_end": f_trim_end,
    "trim_start_matches": f_trim_start_matches,
    "trim_end_matches": f_trim_end_matches,
    "truncate": f_truncate,
    "linebreaksbr": f_linebreaksbr,
    "spaceless": f_spaceless,
    "striptags": f_striptags,
    "escape": f_escape,
    "e": f_escape,
    "escape_xml": f_escape_xml,
    "urlencode": f_urlencode,
    "urlencode_strict": f_urlencode_strict,
    "indent": f_indent,
    "split": f_split,
    "as_str": f_as_str,
    "shell_quote": f_shell_quote,
    "abs": f_abs,
    "round": f_round,
    "pluralize": f_pluralize,
    "filesizeformat": f_filesizeformat,
}
