"""The receiver catalog: one line per broker names everything headwater knows of it.

A receiver is two halves in two layers. Its workspace half (one module here: the pydantic
trigger model with its ``pip_extra``, ``client_modules`` and ``sdk_argument``) is what
``validate``, the loader and the SDK read; its runtime half (a folder under
``headwater/triggers/receivers/``, exporting ``create_receiver``) connects to the broker.
The workspace layer may not import the runtime, so the catalog names the runtime by its
module path and ``headwater.triggers.receivers`` imports it when a trigger of that type
starts (the client library stays optional).

The YAML trigger types, the loader's models, the SDK decorators' fields and defaults and
the runtime factory are all read from ``RECEIVERS``; a plugin or a test adds a receiver
with one ``RECEIVERS.register(Model, runtime="pkg.module")`` call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from headwater.errors import ConfigError
from headwater.workspace.receiver_triggers.amqp import AmqpTrigger
from headwater.workspace.receiver_triggers.base import BodyFormat, ReceiverTriggerBase
from headwater.workspace.receiver_triggers.custom import CustomTrigger
from headwater.workspace.receiver_triggers.eventhubs import EventhubsTrigger
from headwater.workspace.receiver_triggers.kafka import KafkaTrigger
from headwater.workspace.receiver_triggers.mqtt import MqttTrigger
from headwater.workspace.receiver_triggers.mysql_cdc import MysqlCdcTrigger
from headwater.workspace.receiver_triggers.nats import NatsTrigger
from headwater.workspace.receiver_triggers.postgres import PostgresTrigger
from headwater.workspace.receiver_triggers.postgres_cdc import PostgresCdcTrigger
from headwater.workspace.receiver_triggers.pubsub import PubsubTrigger
from headwater.workspace.receiver_triggers.pulsar import PulsarTrigger
from headwater.workspace.receiver_triggers.redis_list import RedisListTrigger
from headwater.workspace.receiver_triggers.redis_stream import RedisStreamTrigger
from headwater.workspace.receiver_triggers.sqlserver_cdc import SqlServerCdcTrigger
from headwater.workspace.receiver_triggers.sqs import SqsTrigger

__all__ = [
    "RECEIVERS",
    "RECEIVER_TRIGGER_MODELS",
    "AmqpTrigger",
    "BodyFormat",
    "CustomTrigger",
    "EventhubsTrigger",
    "KafkaTrigger",
    "MqttTrigger",
    "MysqlCdcTrigger",
    "NatsTrigger",
    "PostgresCdcTrigger",
    "PostgresTrigger",
    "PubsubTrigger",
    "PulsarTrigger",
    "ReceiverCatalog",
    "ReceiverKind",
    "ReceiverTriggerBase",
    "RedisListTrigger",
    "RedisStreamTrigger",
    "SqlServerCdcTrigger",
    "SqsTrigger",
]

_RUNTIME = "headwater.triggers.receivers"


@dataclass(frozen=True)
class ReceiverKind:
    """One receiver: its workspace model and the module whose ``create_receiver`` runs it."""

    model: type[ReceiverTriggerBase]
    runtime: str

    @property
    def type(self) -> str:
        return self.model.trigger_type()


class ReceiverCatalog(Mapping[str, type[ReceiverTriggerBase]]):
    """Trigger type → model, in registration order; also the runtime module of each."""

    def __init__(self) -> None:
        self._kinds: dict[str, ReceiverKind] = {}

    def register(self, model: type[ReceiverTriggerBase], *, runtime: str) -> ReceiverKind:
        kind = ReceiverKind(model, runtime)
        existing = self._kinds.get(kind.type)
        if existing is not None and existing != kind:
            raise ConfigError(f"two receivers are registered as type {kind.type!r}")
        self._kinds[kind.type] = kind
        return kind

    def unregister(self, trigger_type: str) -> None:
        self._kinds.pop(trigger_type, None)

    def kind(self, trigger_type: str) -> ReceiverKind | None:
        return self._kinds.get(trigger_type)

    def __getitem__(self, trigger_type: str) -> type[ReceiverTriggerBase]:
        return self._kinds[trigger_type].model

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._kinds))

    def __len__(self) -> int:
        return len(self._kinds)


# The one place a built-in receiver is listed. A registry others extend at import time is
# the point of it (like entry points), so it is module state on purpose.
RECEIVERS = ReceiverCatalog()
RECEIVERS.register(RedisStreamTrigger, runtime=f"{_RUNTIME}.redis_stream")
RECEIVERS.register(RedisListTrigger, runtime=f"{_RUNTIME}.redis_list")
RECEIVERS.register(AmqpTrigger, runtime=f"{_RUNTIME}.amqp")
RECEIVERS.register(MqttTrigger, runtime=f"{_RUNTIME}.mqtt")
RECEIVERS.register(NatsTrigger, runtime=f"{_RUNTIME}.nats")
RECEIVERS.register(KafkaTrigger, runtime=f"{_RUNTIME}.kafka")
RECEIVERS.register(SqsTrigger, runtime=f"{_RUNTIME}.sqs")
RECEIVERS.register(PostgresTrigger, runtime=f"{_RUNTIME}.postgres")
RECEIVERS.register(SqlServerCdcTrigger, runtime=f"{_RUNTIME}.sqlserver_cdc")
RECEIVERS.register(PostgresCdcTrigger, runtime=f"{_RUNTIME}.postgres_cdc")
RECEIVERS.register(PubsubTrigger, runtime=f"{_RUNTIME}.pubsub")
RECEIVERS.register(EventhubsTrigger, runtime=f"{_RUNTIME}.eventhubs")
RECEIVERS.register(PulsarTrigger, runtime=f"{_RUNTIME}.pulsar")
RECEIVERS.register(MysqlCdcTrigger, runtime=f"{_RUNTIME}.mysql_cdc")
RECEIVERS.register(CustomTrigger, runtime=f"{_RUNTIME}.custom")

# Older name: the catalog is the mapping of trigger type → model.
RECEIVER_TRIGGER_MODELS: Mapping[str, type[ReceiverTriggerBase]] = RECEIVERS
