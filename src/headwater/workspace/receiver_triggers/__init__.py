"""Workspace models of the built-in receiver triggers, one module per broker."""

from __future__ import annotations

from pydantic import BaseModel

from headwater.workspace.receiver_triggers.amqp import AmqpTrigger
from headwater.workspace.receiver_triggers.base import BodyFormat, ReceiverTriggerBase
from headwater.workspace.receiver_triggers.custom import CustomTrigger
from headwater.workspace.receiver_triggers.kafka import KafkaTrigger
from headwater.workspace.receiver_triggers.mqtt import MqttTrigger
from headwater.workspace.receiver_triggers.nats import NatsTrigger
from headwater.workspace.receiver_triggers.postgres import PostgresTrigger
from headwater.workspace.receiver_triggers.redis_list import RedisListTrigger
from headwater.workspace.receiver_triggers.redis_stream import RedisStreamTrigger
from headwater.workspace.receiver_triggers.sqs import SqsTrigger

__all__ = [
    "RECEIVER_TRIGGER_MODELS",
    "AmqpTrigger",
    "BodyFormat",
    "CustomTrigger",
    "KafkaTrigger",
    "MqttTrigger",
    "NatsTrigger",
    "PostgresTrigger",
    "ReceiverTrigger",
    "ReceiverTriggerBase",
    "RedisListTrigger",
    "RedisStreamTrigger",
    "SqsTrigger",
]

ReceiverTrigger = (
    RedisStreamTrigger
    | RedisListTrigger
    | AmqpTrigger
    | MqttTrigger
    | NatsTrigger
    | KafkaTrigger
    | SqsTrigger
    | PostgresTrigger
    | CustomTrigger
)

RECEIVER_TRIGGER_MODELS: dict[str, type[BaseModel]] = {
    "redis_stream": RedisStreamTrigger,
    "redis_list": RedisListTrigger,
    "amqp": AmqpTrigger,
    "mqtt": MqttTrigger,
    "nats": NatsTrigger,
    "kafka": KafkaTrigger,
    "sqs": SqsTrigger,
    "postgres": PostgresTrigger,
    "custom": CustomTrigger,
}
