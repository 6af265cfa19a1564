"""A receiver registration's settings, validated: the trigger, the handler step's retry
and timeout, the task's flow control; and where in the user's code it was written."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from headwater.errors import RegistrationError
from headwater.sdk.class_defaults import where
from headwater.workspace.flow_models import Concurrency, RateLimit
from headwater.workspace.models import RetryPolicy, parse_duration
from headwater.workspace.receiver_triggers import RECEIVERS, ReceiverTriggerBase

__all__ = ["Missing", "caller_site", "check_static", "receiver_settings", "task_flow"]


class Missing(RegistrationError):
    """Private: validation found only missing fields (a class default may fill them)."""


def receiver_settings(
    trigger_type: str, fields: Mapping[str, Any], name: str, options: Mapping[str, Any]
) -> tuple[ReceiverTriggerBase, RetryPolicy | None, float | None, dict[str, Any]]:
    """The trigger, retry, timeout and task flow of one receiver, validated."""
    model = RECEIVERS.get(trigger_type)
    if model is None:
        raise RegistrationError(f"no receiver of type {trigger_type!r}")
    flow = task_flow(name, options.get("concurrency"), options.get("rate_limit"))
    try:
        trigger = model.model_validate({**fields, "type": trigger_type, "target_task": name})
    except ValidationError as exc:
        errors = exc.errors()
        invalid = [e for e in errors if e["type"] != "missing"]
        # What is given but wrong first: a missing field may still come from a class.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}"
            for e in invalid or errors
        )
        kind = RegistrationError if invalid else Missing
        raise kind(f"{trigger_type} receiver {name!r}: {problems}") from None
    assert isinstance(trigger, ReceiverTriggerBase)
    timeout = options.get("timeout")
    seconds = parse_duration(timeout) if timeout is not None else None
    return trigger, _retry(options.get("retry"), name), seconds, flow


def caller_site() -> str:
    """``file:line`` of the user's code that called the decorator (the first frame
    outside the SDK)."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__", "").startswith("headwater.sdk"):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


def check_static(fn: Callable[..., Any]) -> None:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return
    if params and params[0] in ("self", "cls"):
        raise RegistrationError(
            f"{where(fn)}: {fn.__qualname__} is bound to a receiver, so it must be a"
            " @staticmethod (headwater calls it without an instance)"
        )


def task_flow(
    name: str,
    concurrency: Concurrency | Mapping[str, Any] | None,
    rate_limit: RateLimit | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The handler task's ``concurrency``/``rate_limit``, checked now (a typo fails at
    import, with the receiver's name)."""
    found: dict[str, Any] = {}
    try:
        if concurrency is not None:
            found["concurrency"] = Concurrency.model_validate(
                concurrency if isinstance(concurrency, Concurrency) else dict(concurrency)
            )
        if rate_limit is not None:
            found["rate_limit"] = RateLimit.model_validate(
                rate_limit if isinstance(rate_limit, RateLimit) else dict(rate_limit)
            )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise RegistrationError(f"receiver {name!r}: {problems}") from None
    return found


def _retry(value: int | RetryPolicy | Mapping[str, Any] | None, name: str) -> RetryPolicy | None:
    if value is None or isinstance(value, RetryPolicy):
        return value
    try:
        if isinstance(value, int):
            return RetryPolicy(count=value)
        return RetryPolicy.model_validate(dict(value))
    except ValidationError as exc:
        raise RegistrationError(f"receiver {name!r}: retry: {exc.errors()[0]['msg']}") from None
