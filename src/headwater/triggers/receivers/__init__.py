"""Built-in realtime receivers: one folder per broker behind one interface.

Each broker folder has the same layout (``config.py`` settings, ``receiver.py`` the
``EventReceiver``, ``__init__.py`` exporting ``create_receiver``) and is imported only
when a trigger of its type is used, so a broker's client library stays optional.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeGuard

from headwater.errors import ConfigError
from headwater.triggers.receivers.base import (
    RECEIVER_NAMESPACE,
    EventReceiver,
    ReceiverContext,
    ReceiverLag,
    receiver_key,
)
from headwater.workspace.receiver_triggers import ReceiverTriggerBase
from headwater.workspace.templating import TemplateEngine

__all__ = [
    "RECEIVER_MODULES",
    "RECEIVER_NAMESPACE",
    "EventReceiver",
    "ReceiverContext",
    "ReceiverFactory",
    "ReceiverLag",
    "create_receiver",
    "is_receiver_trigger",
    "receiver_key",
]

# trigger type → the module whose ``create_receiver(trigger, render, templates)`` builds it
RECEIVER_MODULES: dict[str, str] = {
    "redis_stream": "headwater.triggers.receivers.redis_stream",
    "redis_list": "headwater.triggers.receivers.redis_list",
    "amqp": "headwater.triggers.receivers.amqp",
    "mqtt": "headwater.triggers.receivers.mqtt",
    "nats": "headwater.triggers.receivers.nats",
    "kafka": "headwater.triggers.receivers.kafka",
    "sqs": "headwater.triggers.receivers.sqs",
    "postgres": "headwater.triggers.receivers.postgres",
    "custom": "headwater.triggers.receivers.custom",
}

ReceiverFactory = Callable[[Any, Callable[[Any, str], Any], TemplateEngine], EventReceiver]


def is_receiver_trigger(trigger: object) -> TypeGuard[ReceiverTriggerBase]:
    return isinstance(trigger, ReceiverTriggerBase) and trigger.type in RECEIVER_MODULES


# The package extra that installs each receiver's client library (pyproject.toml).
_EXTRAS = {"redis_stream": "redis", "redis_list": "redis"}


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    """Build the receiver of ``trigger``; ``render(value, where)`` fills in secrets."""
    module_name = RECEIVER_MODULES.get(trigger.type)
    if module_name is None:
        raise ConfigError(f"no built-in receiver for trigger type {trigger.type!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"the {trigger.type} receiver needs a client library that is not installed"
            f" ({exc.name}): pip install 'headwater[{_EXTRAS.get(trigger.type, trigger.type)}]'"
        ) from exc
    factory: ReceiverFactory = module.create_receiver
    return factory(trigger, render, templates)
