"""Built-in realtime receivers: one folder per broker behind one interface.

Each broker folder has the same layout (``receiver.py`` the ``EventReceiver``,
``__init__.py`` exporting ``create_receiver``) and is imported only when a trigger of its
type starts, so a broker's client library stays optional. Which folder runs which
trigger type is the receiver catalog's line (``headwater.workspace.receiver_triggers``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeGuard

from headwater.errors import ConfigError, MissingClientError
from headwater.triggers.receivers.base import (
    RECEIVER_NAMESPACE,
    EventReceiver,
    ReceiverContext,
    ReceiverLag,
    receiver_key,
)
from headwater.workspace.receiver_triggers import RECEIVERS, ReceiverTriggerBase
from headwater.workspace.templating import TemplateEngine

__all__ = [
    "RECEIVER_NAMESPACE",
    "EventReceiver",
    "ReceiverContext",
    "ReceiverFactory",
    "ReceiverLag",
    "create_receiver",
    "is_receiver_trigger",
    "receiver_key",
]


ReceiverFactory = Callable[[Any, Callable[[Any, str], Any], TemplateEngine], EventReceiver]


def is_receiver_trigger(trigger: object) -> TypeGuard[ReceiverTriggerBase]:
    return isinstance(trigger, ReceiverTriggerBase) and trigger.type in RECEIVERS


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    """Build the receiver of ``trigger``; ``render(value, where)`` fills in secrets."""
    kind = RECEIVERS.kind(trigger.type)
    if kind is None:
        raise ConfigError(f"no receiver for trigger type {trigger.type!r}")
    missing = kind.model.missing_client()
    if missing is not None:
        raise MissingClientError(missing)
    try:
        module = importlib.import_module(kind.runtime)
    except ImportError as exc:
        raise MissingClientError(
            f"the {trigger.type} receiver needs a client library that is not installed"
            f" ({exc.name}): pip install 'headwater[{kind.model.pip_extra or trigger.type}]'"
        ) from exc
    factory: ReceiverFactory = module.create_receiver
    return factory(trigger, render, templates)
