"""What a decorator records: one registration binds one function to one source.

Two kinds, because they run differently:
- ``ConsumerRegistration``: an outbox consumer (``@headwater.consumer``), run by
  ``headwater consumer run`` as a worker process of its own that reads the Redis Stream
  and calls the handler under its delivery guarantee;
- ``ReceiverRegistration``: a function bound to a broker receiver (``@headwater.on_kafka``,
  …, ``@headwater.on_receiver``). Each message becomes a durable job of a synthesized
  task whose one step is the function (``type: function``), so it gets every promise of
  the receivers (acknowledged after the job committed, one job per message, dead
  letters) and of jobs (retries, logs, recovery).
The ``name`` is the stable identity: dedup records, checkpoints and leases are keyed by
it, never by the function, so a rename of the function changes nothing.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headwater.errors import RegistrationError
from headwater.sdk.class_defaults import shown_config
from headwater.sdk.events import Guarantee
from headwater.workspace.models import RetryPolicy
from headwater.workspace.receiver_triggers import ReceiverTriggerBase

__all__ = [
    "GATHERED_KWARGS",
    "NAME_PATTERN",
    "RECEIVER_KWARGS",
    "ConsumerRegistration",
    "ReceiverRegistration",
    "Registration",
    "WorkflowRegistration",
    "check_name",
    "function_ref",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$")
# What a receiver-bound function may take, as keyword arguments (the job's input).
RECEIVER_KWARGS = ("payload", "metadata", "content_type")
# ... and of a trigger with ``debounce`` or ``batch``: the gathered messages, each one's
# {payload, metadata}, oldest first (``events``), and their ``key``.
GATHERED_KWARGS = ("events", "key")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise RegistrationError(
            f"name={name!r} is not a valid consumer name: use letters, digits and _ . : -"
            ' (it is the consumer\'s stable identity, e.g. name="handle_user_event")'
        )
    return name


def function_ref(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "function")
    return f"{module}:{qualname}"


def _positional_arity(fn: Callable[..., Any]) -> tuple[int, int | None]:
    """(required, maximum) positional parameters; maximum None for *args."""
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is p.empty)
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    return required, None if varargs else len(positional)


@dataclass(frozen=True, slots=True)
class ConsumerRegistration:
    """``@headwater.consumer(stream, name=…, guarantee=…)``."""

    name: str
    app: str
    stream: str
    function: Callable[..., Any]
    guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    max_attempts: int | None = None  # None: retry forever (the seed's behaviour)
    retry_backoff: float = 5.0  # first retry after this many seconds, then doubling …
    retry_max_backoff: float = 300.0  # … up to this
    kind: str = field(default="outbox", init=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.stream, str) or not self.stream:
            raise RegistrationError(f"consumer {self.name!r}: stream must be a non-empty string")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise RegistrationError(
                f"consumer {self.name!r}: max_attempts must be at least 1 (or None: forever)"
            )
        if self.retry_backoff < 0 or self.retry_max_backoff < self.retry_backoff:
            raise RegistrationError(
                f"consumer {self.name!r}: need 0 <= retry_backoff <= retry_max_backoff"
            )
        wanted = 2 if self.guarantee is Guarantee.EXACTLY_ONCE else 1
        try:
            required, maximum = _positional_arity(self.function)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            return
        if required > wanted or (maximum is not None and maximum < wanted):
            shape = "(event, session)" if wanted == 2 else "(event)"
            why = (
                "the session is the worker's transaction"
                if wanted == 2
                else f"under {self.guarantee.name} the handler gets no session"
            )
            raise RegistrationError(
                f"consumer {self.name!r}: {function_ref(self.function)} must take {shape}: {why}"
            )

    @property
    def full_name(self) -> str:
        """What the store keys dedup records, checkpoints and quarantine by."""
        return f"{self.app}.{self.name}"

    @property
    def source(self) -> str:
        return f"outbox:{self.stream}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "full_name": self.full_name,
            "kind": self.kind,
            "source": self.source,
            "stream": self.stream,
            "function": function_ref(self.function),
            "guarantee": self.guarantee.value,
            "max_attempts": self.max_attempts,
        }


@dataclass(frozen=True, slots=True)
class ReceiverRegistration:
    """``@headwater.on_<broker>(source, name=…)`` and ``@headwater.on_receiver(Class, …)``."""

    name: str
    app: str
    trigger: ReceiverTriggerBase
    function: Callable[..., Any]
    retry: RetryPolicy | None = None
    timeout: float | None = None
    flow: Mapping[str, Any] = field(default_factory=dict)  # the task's concurrency, rate_limit
    defined_at: str | None = None  # file:line of the function
    defaults_from: str | None = None  # the class whose receiver_defaults filled some keys
    class_defaults: tuple[str, ...] = ()  # ... which ones
    kind: str = field(default="receiver", init=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        if not self.accepted_kwargs:
            shape = "events, key" if self.gathers else "payload, metadata"
            raise RegistrationError(
                f"receiver function {function_ref(self.function)} ({self.name!r}) must accept"
                f" the message as keyword arguments: def handle({shape}): …"
            )

    @property
    def gathers(self) -> bool:
        """The trigger has ``debounce`` or ``batch``: one call receives many messages."""
        return self.trigger.debounce is not None or self.trigger.batch is not None

    @property
    def accepted_kwargs(self) -> tuple[str, ...]:
        """Which of payload/metadata/content_type (events/key when it gathers) the
        function takes."""
        names = GATHERED_KWARGS if self.gathers else RECEIVER_KWARGS
        try:
            params = inspect.signature(self.function).parameters
        except (TypeError, ValueError):
            return names
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
        by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(k for k in names if k in params and params[k].kind in by_name)

    @property
    def full_name(self) -> str:
        return f"{self.app}.{self.name}"

    @property
    def source(self) -> str:
        trigger = self.trigger
        detail = getattr(trigger, "receiver", None) or _source_of(trigger)
        return f"{trigger.type}:{detail}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "full_name": self.full_name,
            "kind": self.kind,
            "source": self.source,
            "type": self.trigger.type,
            "function": function_ref(self.function),
            "task": self.name,
            "trigger": f"{self.app}/{self.name}",
            "config": shown_config(self.trigger),
            "config_set": sorted(self.trigger.model_fields_set - {"type", "target_task"}),
            "defaults_from": self.defaults_from,
            "class_defaults": list(self.class_defaults),
            "defined_at": self.defined_at,
        }


_SOURCE_FIELD = {
    "redis_stream": "stream",
    "redis_list": "list",
    "amqp": "queue",
    "mqtt": "topic",
    "nats": "stream",
    "kafka": "topic",
    "sqs": "queue_url",
    "postgres": "table",
    "pulsar": "topic",
    "eventhubs": "eventhub",
    "pubsub": "subscription",
}


def _source_of(trigger: ReceiverTriggerBase) -> str:
    # A receiver added by a catalog line names its source by its SDK argument.
    field = _SOURCE_FIELD.get(trigger.type) or type(trigger).sdk_argument or "type"
    value = getattr(trigger, field, trigger.type)
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass(frozen=True, slots=True)
class WorkflowRegistration:
    """``@headwater.workflow``: a task ``{name}`` whose one step runs the workflow's
    function (``type: function``), durably (``headwater.sdk.workflows``)."""

    name: str
    app: str
    function: Callable[..., Any]  # the decorated wrapper (what the task's step calls)
    flow: Mapping[str, Any] = field(default_factory=dict)  # the task's concurrency, rate_limit
    kind: str = field(default="workflow", init=False)

    def __post_init__(self) -> None:
        check_name(self.name)

    @classmethod
    def of(
        cls,
        name: str,
        app: str,
        function: Callable[..., Any],
        *,
        concurrency: Mapping[str, Any] | None = None,
        rate_limit: Mapping[str, Any] | None = None,
    ) -> WorkflowRegistration:
        flow = {
            key: value
            for key, value in (("concurrency", concurrency), ("rate_limit", rate_limit))
            if value is not None
        }
        return cls(name, app, function, flow)

    @property
    def full_name(self) -> str:
        return f"{self.app}.{self.name}"

    @property
    def source(self) -> str:
        return "workflow"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "full_name": self.full_name,
            "kind": self.kind,
            "source": self.source,
            "function": function_ref(self.function),
            "task": self.name,
            "guarantee": "steps recorded once",
        }


Registration = ConsumerRegistration | ReceiverRegistration | WorkflowRegistration
