"""headwater: an event-driven job orchestrator.

Every event (cron tick, webhook, ``OUTPUT:`` line, broker message, SDK call) becomes a
durable job; workers run the job's steps and record status, output and logs.

The Python SDK is importable from here (``headwater.consumer``, ``headwater.send_event``,
``headwater.on_kafka`` …); it is loaded on first use, so ``headwater --version`` and the
CLI do not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from headwater.errors import HeadwaterError

if TYPE_CHECKING:
    from headwater.sdk import (
        CommitInTransactionError,
        ConsumerRegistration,
        EventReceiver,
        Guarantee,
        ReceiverContext,
        ReceiverLag,
        ReceiverRegistration,
        RegistrationError,
        Registry,
        StreamEvent,
        Submitter,
        asend_event,
        asubmit,
        consumer,
        default_registry,
        on,
        on_amqp,
        on_eventhubs,
        on_kafka,
        on_mqtt,
        on_mysql_cdc,
        on_nats,
        on_postgres,
        on_postgres_cdc,
        on_pubsub,
        on_pulsar,
        on_receiver,
        on_redis_list,
        on_redis_stream,
        on_sqlserver_cdc,
        on_sqs,
        receiver_defaults,
        send_event,
        set_default_registry,
        submit,
    )

__version__ = "0.1.0"

_SDK_NAMES = (
    "CommitInTransactionError",
    "ConsumerRegistration",
    "EventReceiver",
    "Guarantee",
    "ReceiverContext",
    "ReceiverLag",
    "ReceiverRegistration",
    "RegistrationError",
    "Registry",
    "StreamEvent",
    "Submitter",
    "asend_event",
    "asubmit",
    "consumer",
    "default_registry",
    "on",
    "on_amqp",
    "on_kafka",
    "on_mqtt",
    "on_mysql_cdc",
    "on_nats",
    "on_postgres",
    "on_postgres_cdc",
    "on_pulsar",
    "on_eventhubs",
    "on_pubsub",
    "on_receiver",
    "on_redis_list",
    "on_redis_stream",
    "on_sqlserver_cdc",
    "on_sqs",
    "receiver_defaults",
    "send_event",
    "set_default_registry",
    "submit",
)

__all__ = [
    "CommitInTransactionError",
    "ConsumerRegistration",
    "EventReceiver",
    "Guarantee",
    "HeadwaterError",
    "ReceiverContext",
    "ReceiverLag",
    "ReceiverRegistration",
    "RegistrationError",
    "Registry",
    "StreamEvent",
    "Submitter",
    "__version__",
    "asend_event",
    "asubmit",
    "consumer",
    "default_registry",
    "on",
    "on_amqp",
    "on_eventhubs",
    "on_kafka",
    "on_mqtt",
    "on_mysql_cdc",
    "on_nats",
    "on_postgres",
    "on_postgres_cdc",
    "on_pubsub",
    "on_pulsar",
    "on_receiver",
    "on_redis_list",
    "on_redis_stream",
    "on_sqlserver_cdc",
    "on_sqs",
    "receiver_defaults",
    "send_event",
    "set_default_registry",
    "submit",
]


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        value = getattr(importlib.import_module("headwater.sdk"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headwater' has no attribute {name!r}")
