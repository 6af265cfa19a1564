"""``custom``: a user's own ``EventReceiver`` subclass, named by import path.

The class is built with the trigger's ``options`` as keyword arguments (string options
rendered with the secret context first) and then lives the same lifecycle as every
built-in receiver: ``start(ctx)`` with a ``ReceiverContext`` (dispatch, checkpoint,
dead letters, backpressure), ``wait``, ``stop``, ``describe``, ``lag``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.engine.functions import resolve_callable
from headwater.errors import ConfigError
from headwater.triggers.receivers.base import EventReceiver
from headwater.workspace.receiver_triggers import CustomTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["create_receiver", "resolve_receiver_class"]


def resolve_receiver_class(ref: str) -> type[EventReceiver]:
    """``"package.module:Class"`` to an ``EventReceiver`` subclass; ConfigError if not."""
    try:
        target = resolve_callable(ref)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load receiver {ref!r}: {exc}") from exc
    if not (isinstance(target, type) and issubclass(target, EventReceiver)):
        raise ConfigError(
            f"receiver {ref!r} is not a subclass of headwater.EventReceiver"
            " (it must implement start, stop, wait and describe)"
        )
    return target


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, CustomTrigger):
        raise TypeError(f"not a custom trigger: {type(trigger).__name__}")
    cls = resolve_receiver_class(trigger.receiver)
    options = {
        key: render(value, f"options.{key}") if isinstance(value, str) else value
        for key, value in trigger.options.items()
    }
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"cannot build receiver {trigger.receiver!r}: {exc}") from exc
