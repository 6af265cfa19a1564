"""Tera's array and object filters: ``first``, ``nth``, ``join``, ``filter``, ``group_by``...

Arrays come out as lists (never Jinja's lazy generators), so ``"{{ x | map(attribute='id') }}"``
keeps its type as a list and prints as JSON. ``attribute`` is a dotted path into each
item (``"author.name"``, ``"name.1"`` for an array element), as in Tera.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jinja2 import Undefined, pass_context
from jinja2.filters import sync_do_map
from jinja2.runtime import Context

from headwater.errors import TemplateCallError
from headwater.workspace.tera_filters import as_text, need_arg, type_name

__all__ = ["COLLECTION_FILTERS"]

_MISSING = object()


def _defined(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def need_list(name: str, value: Any) -> list[Any]:
    """``value`` as a list; a string is refused, as Tera does (no char-by-char output)."""
    value = _defined(value)
    if isinstance(value, list | tuple):
        return list(value)
    raise TemplateCallError(f"filter `{name}` needs an array, got {type_name(value)}")


def lookup(item: Any, path: Any) -> Any:
    """The value at dotted ``path`` inside ``item``, or ``_MISSING``."""
    current = item
    for part in str(path).split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list | tuple) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def _sort_key(value: Any) -> tuple[int, Any]:
    # Tera's order: numbers by value, strings alphabetically, arrays by length, bools 0/1.
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, float(value))
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, list | tuple):
        return (3, len(value))
    raise TemplateCallError(f"filter `sort` cannot order {type_name(value)}")


def f_first(value: Any) -> Any:
    value = _defined(value)
    if isinstance(value, str):
        return value[:1]
    items = need_list("first", value)
    return items[0] if items else ""


def f_last(value: Any) -> Any:
    value = _defined(value)
    if isinstance(value, str):
        return value[-1:]
    items = need_list("last", value)
    return items[-1] if items else ""


def f_nth(value: Any, /, *args: Any, **kwargs: Any) -> Any:
    items = need_list("nth", value)
    n = need_arg("nth", kwargs, "n", args)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TemplateCallError("filter `nth` needs an integer `n`")
    return items[n] if 0 <= n < len(items) else ""


def f_join(value: Any, /, *args: Any, **kwargs: Any) -> str:
    items = need_list("join", value)
    sep = kwargs.get("sep", kwargs.get("d", args[0] if args else ""))
    attribute = kwargs.get("attribute", args[1] if len(args) > 1 else None)
    if attribute is not None:
        items = [lookup(item, attribute) for item in items]
        items = ["" if item is _MISSING else item for item in items]
    return str(sep).join(as_text(item) for item in items)


def f_length(value: Any) -> int:
    value = _defined(value)
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise TemplateCallError(
        f"filter `length` needs an array, object or string, got {type_name(value)}"
    )


def f_reverse(value: Any) -> Any:
    value = _defined(value)
    if isinstance(value, str):
        return value[::-1]
    return need_list("reverse", value)[::-1]


def f_sort(value: Any, /, *args: Any, **kwargs: Any) -> list[Any]:
    items = need_list("sort", value)
    attribute = kwargs.get("attribute", args[2] if len(args) > 2 else None)
    reverse = bool(kwargs.get("reverse", args[0] if args else False))
    if attribute is None:
        keys = [_sort_key(item) for item in items]
    else:
        keys = []
        for item in items:
            found = lookup(item, attribute)
            if found is _MISSING:
                raise TemplateCallError(f"filter `sort`: an item has no attribute {attribute!r}")
            keys.append(_sort_key(found))
    if len({k[0] for k in keys}) > 1:
        raise TemplateCallError("filter `sort` needs values of one type")
    order = sorted(range(len(items)), key=lambda i: keys[i], reverse=reverse)
    return [items[i] for i in order]


def f_unique(value: Any, /, *args: Any, **kwargs: Any) -> list[Any]:
    items = need_list("unique", value)
    case_sensitive = kwargs.get("case_sensitive", args[0] if args else False)
    if isinstance(case_sensitive, str):  # Tera's docs write case_sensitive="true"
        case_sensitive = case_sensitive.lower() == "true"
    attribute = kwargs.get("attribute", args[1] if len(args) > 1 else None)
    seen: set[str] = set()
    out: list[Any] = []
    for item in items:
        key_value = item if attribute is None else lookup(item, attribute)
        if key_value is _MISSING:
            raise TemplateCallError(f"filter `unique`: an item has no attribute {attribute!r}")
        if isinstance(key_value, str) and not case_sensitive:
            key_value = key_value.lower()
        key = json.dumps(key_value, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def f_slice(value: Any, /, *args: Any, **kwargs: Any) -> Any:
    if args:  # Jinja's slice(count, fill_with): split into columns
        from jinja2.filters import do_slice

        return [list(part) for part in do_slice(value, *args, **kwargs)]
    items = need_list("slice", value)
    start = _index("start", kwargs.get("start", 0), len(items))
    end = _index("end", kwargs.get("end", len(items)), len(items))
    return items[start:end] if start < end else []


def _index(name: str, value: Any, length: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TemplateCallError(f"filter `slice` needs an integer `{name}`")
    index = value + length if value < 0 else value
    return max(0, min(index, length))


def f_group_by(value: Any, /, *args: Any, **kwargs: Any) -> dict[str, list[Any]]:
    items = need_list("group_by", value)
    attribute = need_arg("group_by", kwargs, "attribute", args)
    groups: dict[str, list[Any]] = {}
    for item in items:
        key = lookup(item, attribute)
        if key is _MISSING or key is None:
            continue
        groups.setdefault(as_text(key), []).append(item)
    return groups


def f_filter(value: Any, /, *args: Any, **kwargs: Any) -> list[Any]:
    items = need_list("filter", value)
    attribute = need_arg("filter", kwargs, "attribute", args)
    has_value = "value" in kwargs or len(args) > 1
    wanted = kwargs.get("value", args[1] if len(args) > 1 else None)
    out = []
    for item in items:
        found = lookup(item, attribute)
        if found is _MISSING or found is None:
            continue
        if not has_value or found == wanted:
            out.append(item)
    return out


@pass_context
def f_map(context: Context, value: Any, /, *args: Any, **kwargs: Any) -> list[Any]:
    if args or set(kwargs) - {"attribute"}:  # Jinja's map('upper') and friends
        return list(sync_do_map(context, _defined(value), *args, **kwargs))
    items = need_list("map", value)
    attribute = need_arg("map", kwargs, "attribute")
    out = []
    for item in items:
        found = lookup(item, attribute)
        if found is not _MISSING:
            out.append(found)
    return out


def f_concat(value: Any, /, *args: Any, **kwargs: Any) -> list[Any]:
    items = need_list("concat", value)
    extra = _defined(need_arg("concat", kwargs, "with", args))
    if isinstance(extra, list | tuple):
        return [*items, *extra]
    return [*items, extra]


def f_get(value: Any, /, *args: Any, **kwargs: Any) -> Any:
    value = _defined(value)
    if not isinstance(value, Mapping):
        raise TemplateCallError(f"filter `get` needs an object, got {type_name(value)}")
    key = need_arg("get", kwargs, "key", args)
    if key in value:
        return value[key]
    if "default" in kwargs:
        return kwargs["default"]
    raise TemplateCallError(f"filter `get`: the object has no key {key!r}")


def f_json_encode(value: Any, pretty: bool = False) -> str:
    value = _defined(value)
    if pretty:
        return json.dumps(value, indent=2, default=str, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


COLLECTION_FILTERS: dict[str, Any] = {
    "first": f_first,
    "last": f_last,
    "nth": f_nth,
    "join": f_join,
    "length": f_length,
    "count": f_length,
    "reverse": f_reverse,
    "sort": f_sort,
    "unique": f_unique,
    "slice": f_slice,
    "group_by": f_group_by,
    "filter": f_filter,
    "map": f_map,
    "concat": f_concat,
    "get": f_get,
    "json_encode": f_json_encode,
}
