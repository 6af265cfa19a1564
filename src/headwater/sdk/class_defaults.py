"""Class-level receiver configuration: seed 004's class decorators.

``@headwater.receiver_defaults("kafka", bootstrap_servers=…, group_id=…)`` on a class
carries defaults for the receiver-bound methods of that class; a method decorator's own
values win::

    @headwater.receiver_defaults("kafka", bootstrap_servers="kafka:9092", group_id="orders")
    class Orders:
        @staticmethod
        @headwater.on_kafka("orders.created", name="order_created")
        def created(payload, metadata): ...

        @staticmethod
        @headwater.on_kafka("orders.paid", name="order_paid", group_id="billing")
        def paid(payload, metadata): ...

A method decorator runs before its class exists, so it leaves what it was given on the
function (``PENDING``); the class decorator merges its defaults under it and registers
the result. A method whose decorator alone is complete is registered at once (a class
without defaults needs no class decorator) and registered again, merged, by the class
decorator. A method that still misses a field when its module is loaded is an error
naming its ``file:line`` (``check_unclaimed``), never silently dropped.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from headwater.errors import RegistrationError
from headwater.url_secrets import HIDDEN, hide_password
from headwater.workspace.receiver_triggers import RECEIVERS, ReceiverTriggerBase

__all__ = [
    "DEFAULTABLE_OPTIONS",
    "PENDING",
    "ReceiverSpec",
    "check_unclaimed",
    "class_members",
    "defaults_problem",
    "is_method",
    "shown_config",
    "where",
]

PENDING = "__headwater_receivers__"
# What a class may default besides the trigger's own fields (the handler step's and task's).
DEFAULTABLE_OPTIONS = ("retry", "timeout", "concurrency", "rate_limit")
# Never a default: each method has its own.
_NOT_DEFAULTABLE = frozenset({"type", "target_task", "task"})


@dataclass(frozen=True, slots=True)
class ReceiverSpec:
    """What one method decorator was given, before any class default."""

    trigger_type: str
    fields: Mapping[str, Any]
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)  # retry, timeout, flow
    error: RegistrationError | None = None  # what validating it alone said


def where(obj: Any) -> str:
    """``file:line`` of a function or class (``?`` when Python does not know)."""
    if callable(obj) and not isinstance(obj, type):
        obj = inspect.unwrap(obj)  # a decorated function (a workflow): the user's own
    code = getattr(obj, "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    try:
        lines = inspect.getsourcelines(obj)
        return f"{inspect.getsourcefile(obj)}:{lines[1]}"
    except (OSError, TypeError):
        module = sys.modules.get(getattr(obj, "__module__", ""), None)
        return f"{getattr(module, '__file__', '?')}:?"


def is_method(fn: Callable[..., Any]) -> bool:
    """Defined in a class body (``Orders.created``, also ``f.<locals>.Orders.created``),
    not in a function (``f.<locals>.g``) nor at module level."""
    parts = getattr(fn, "__qualname__", "").split(".")
    return len(parts) > 1 and parts[-2] != "<locals>"


def class_members(cls: type) -> list[tuple[str, Any, Callable[..., Any]]]:
    """(attribute, as stored, the function) of the class's own members that a receiver
    decorator marked."""
    found = []
    for attr, member in vars(cls).items():
        fn = getattr(member, "__func__", member)
        if callable(fn) and getattr(fn, PENDING, None):
            found.append((attr, member, fn))
    return found


def defaults_problem(trigger_type: str, defaults: Mapping[str, Any]) -> str | None:
    """Why these defaults cannot be a ``trigger_type`` receiver's (None: they can)."""
    model = RECEIVERS.get(trigger_type)
    if model is None:
        known = ", ".join(sorted(RECEIVERS))
        return f"no receiver of type {trigger_type!r} (known: {known})"
    allowed = _defaultable(model)
    for key in defaults:
        if key in _NOT_DEFAULTABLE:
            return f"{key!r} cannot be a class default: each method has its own"
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown key {key!r} for a {trigger_type} receiver{hint}"
    return None


def _defaultable(model: type[ReceiverTriggerBase]) -> set[str]:
    names = set(DEFAULTABLE_OPTIONS)
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names - _NOT_DEFAULTABLE


def check_unclaimed(module: ModuleType, registered: Callable[[str], bool]) -> None:
    """Raise for a receiver-bound method of ``module`` that no registration holds: its
    decorator alone was incomplete and no class decorator completed it."""
    for value in list(vars(module).values()):
        if not isinstance(value, type) or value.__module__ != module.__name__:
            continue
        for _attr, _member, fn in class_members(value):
            for spec in getattr(fn, PENDING):
                if not registered(spec.name) and spec.error is not None:
                    raise RegistrationError(
                        f"{where(fn)}: {spec.error} (give it on the method or as a class"
                        f' default: @headwater.receiver_defaults("{spec.trigger_type}", …))'
                    )


def shown_config(trigger: ReceiverTriggerBase) -> dict[str, Any]:
    """The trigger's effective configuration for listings: every field but the identity
    ones, connection secrets hidden (URLs keep their host, passwords and keys go)."""
    config = trigger.model_dump(mode="json", exclude={"type", "target_task"}, exclude_none=True)
    for name in type(trigger).secret_fields:
        value = config.get(name)
        if not isinstance(value, str) or value.lstrip().startswith("{{"):
            continue  # unset, or a template naming a secret (not the secret itself)
        url_like = "://" in value or name.endswith(("url", "servers"))
        config[name] = hide_password(value) if url_like else HIDDEN
    return config
