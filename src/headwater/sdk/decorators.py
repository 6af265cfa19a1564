"""The module-level decorators: the default registry's methods, looked up at call time.

``@headwater.consumer(...)`` is ``default_registry().consumer(...)``; an application
with its own ``Registry`` uses ``registry.consumer(...)`` instead, with the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from headwater.sdk.events import Guarantee
from headwater.sdk.registry import default_registry

__all__ = [
    "consumer",
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
]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


def consumer(
    stream: str,
    *,
    name: str,
    guarantee: Guarantee = Guarantee.EXACTLY_ONCE,
    max_attempts: int | None = None,
    retry_backoff: float = 5.0,
    retry_max_backoff: float = 300.0,
) -> Callable[[F], F]:
    """Bind a handler to an outbox stream (see ``Registry.consumer``)."""
    return default_registry().consumer(
        stream,
        name=name,
        guarantee=guarantee,
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        retry_max_backoff=retry_max_backoff,
    )


def on(trigger_type: str, argument: Any, *, name: str, **options: Any) -> Callable[[F], F]:
    """Any catalog receiver's decorator (see ``Registry.on``)."""
    return default_registry().on(trigger_type, argument, name=name, **options)


def on_redis_stream(
    stream: str, *, name: str, url: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_redis_stream(stream, name=name, url=url, **options)


def on_redis_list(
    key: str, *, name: str, url: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_redis_list(key, name=name, url=url, **options)


def on_amqp(queue: str, *, name: str, url: str | None = None, **options: Any) -> Callable[[F], F]:
    return default_registry().on_amqp(queue, name=name, url=url, **options)


def on_mqtt(
    topic: str, *, name: str, url: str | None = None, client_id: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_mqtt(topic, name=name, url=url, client_id=client_id, **options)


def on_nats(stream: str, *, name: str, **options: Any) -> Callable[[F], F]:
    return default_registry().on_nats(stream, name=name, **options)


def on_kafka(
    topic: str, *, name: str, bootstrap_servers: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_kafka(
        topic, name=name, bootstrap_servers=bootstrap_servers, **options
    )


def on_sqs(queue_url: str, *, name: str, **options: Any) -> Callable[[F], F]:
    return default_registry().on_sqs(queue_url, name=name, **options)


def on_postgres(
    table: str, *, name: str, url: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_postgres(table, name=name, url=url, **options)


def on_sqlserver_cdc(
    capture_instance: str, *, name: str, url: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_sqlserver_cdc(capture_instance, name=name, url=url, **options)


def on_postgres_cdc(
    tables: str | Sequence[str], *, name: str, url: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_postgres_cdc(tables, name=name, url=url, **options)


def on_pubsub(subscription: str, *, name: str, **options: Any) -> Callable[[F], F]:
    return default_registry().on_pubsub(subscription, name=name, **options)


def on_eventhubs(
    eventhub: str, *, name: str, connection_string: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_eventhubs(
        eventhub, name=name, connection_string=connection_string, **options
    )


def on_pulsar(topic: str, *, name: str, **options: Any) -> Callable[[F], F]:
    return default_registry().on_pulsar(topic, name=name, **options)


def on_mysql_cdc(
    tables: str | list[str], *, name: str, url: str | None = None, **options: Any
) -> Callable[[F], F]:
    return default_registry().on_mysql_cdc(tables, name=name, url=url, **options)


def on_receiver(receiver: type[Any], *, name: str, **options: Any) -> Callable[[F], F]:
    return default_registry().on_receiver(receiver, name=name, **options)


def receiver_defaults(type: str, **defaults: Any) -> Callable[[C], C]:
    """Class decorator: defaults for the class's ``type`` receivers (see
    ``Registry.receiver_defaults``)."""
    return default_registry().receiver_defaults(type, **defaults)
