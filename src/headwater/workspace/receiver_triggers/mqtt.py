from __future__ import annotations

from typing import ClassVar, Literal

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["MqttTrigger"]


class MqttTrigger(ReceiverTriggerBase):
    """Each message on an MQTT topic filter becomes one job; QoS 1 on a persistent
    session, acknowledged (PUBACK) after its job committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url", "password")

    pip_extra: ClassVar[str | None] = "mqtt"
    client_modules: ClassVar[tuple[str, ...]] = ("aiomqtt", "paho")
    sdk_argument: ClassVar[str | None] = "topic"

    type: Literal["mqtt"]
    url: str  # mqtt://host:1883 (mqtts:// for TLS)
    topic: str  # a filter: sensors/+/temperature, orders/#
    client_id: str  # the persistent session's identity: keep it stable
    qos: Literal[1, 2] = 1
    username: str | None = None
    password: str | None = None  # templated
