"""The registry: decorators record registrations here; runners read them back.

``headwater.consumer``, ``headwater.on_kafka`` … write to the default registry, which is
the only module-level state of the SDK and is replaceable (``set_default_registry``).
An application that wants no default at all makes its own ``Registry(app="shop")`` and
uses its methods as decorators; ``headwater consumer run shop.consumers:registry`` then
finds it by name. Like DBOS's ``logRegisteredEndpoints``, ``describe()`` (and
``headwater consumers list``) shows every source, name and function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from headwater.errors import RegistrationError
from headwater.sdk.class_defaults import (
    DEFAULTABLE_OPTIONS,
    PENDING,
    ReceiverSpec,
    class_members,
    defaults_problem,
    is_method,
    where,
)
from headwater.sdk.events import Guarantee
from headwater.sdk.receiver_settings import (
    Missing,
    caller_site,
    check_static,
    receiver_settings,
    task_flow,
)
from headwater.sdk.registrations import (
    ConsumerRegistration,
    ReceiverRegistration,
    Registration,
    WorkflowRegistration,
    check_name,
    function_ref,
)
from headwater.workspace.flow_models import Concurrency, RateLimit
from headwater.workspace.models import (
    Action,
    ActionType,
    RetryPolicy,
    Step,
    Task,
    Workspace,
)
from headwater.workspace.receiver_triggers import RECEIVERS
from headwater.workspace.workflow_refs import WORKFLOW_MARK

__all__ = ["APP_ENV", "Registry", "default_registry", "set_default_registry"]

log = structlog.get_logger(__name__)

APP_ENV = "HEADWATER_APP"
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)
_TRIGGER_LEVEL = (
    *("max_in_flight", "input", "dedup_key", "format", "batch_size", "enabled", "priority"),
    *("debounce", "batch", "target_workflow"),
)
# The handler task's flow control (the workspace's task keys of the same names).
_TASK_FLOW = ("concurrency", "rate_limit")
HANDLER_STEP = "handler"
# The decorators' connection arguments: optional, as a class may give them.
_CONNECTION = ("url", "client_id", "bootstrap_servers", "connection_string")
WORKFLOW_STEP = "workflow"  # the one step of a workflow's task (sdk.workflows.handles)


class Registry:
    """Registrations of one application. ``app`` namespaces every consumer name
    (``{app}.{name}``); default: ``$HEADWATER_APP``, else ``"default"``."""

    def __init__(self, app: str | None = None, *, secrets: Mapping[str, str] | None = None):
        self.app = check_name(app or os.environ.get(APP_ENV) or "default")
        self.secrets = dict(secrets or {})
        self._registrations: dict[str, Registration] = {}

    # -- reading ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Registration]:
        return iter(self._registrations.values())

    def __len__(self) -> int:
        return len(self._registrations)

    def get(self, name: str) -> Registration:
        try:
            return self._registrations[name]
        except KeyError:
            known = ", ".join(sorted(self._registrations)) or "none"
            raise RegistrationError(f"no registration named {name!r} (known: {known})") from None

    @property
    def consumers(self) -> list[ConsumerRegistration]:
        return [r for r in self if isinstance(r, ConsumerRegistration)]

    @property
    def receivers(self) -> list[ReceiverRegistration]:
        return [r for r in self if isinstance(r, ReceiverRegistration)]

    @property
    def workflows(self) -> list[WorkflowRegistration]:
        return [r for r in self if isinstance(r, WorkflowRegistration)]

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self]

    def log_registered_endpoints(self, logger: Any = None) -> None:
        """One log line per registration: source, name, function (DBOS's
        ``logRegisteredEndpoints``)."""
        out = logger or log
        for item in self.describe():
            out.info(
                "registered_endpoint",
                source=item["source"],
                name=item["full_name"],
                function=item["function"],
            )

    # -- registering -----------------------------------------------------------------------
    def add(self, registration: Registration) -> None:
        existing = self._registrations.get(registration.name)
        if existing is not None and (
            existing.function is not registration.function or existing.kind != registration.kind
        ):
            raise RegistrationError(
                f"two registrations are named {registration.name!r}: "
                f"{function_ref(existing.function)} ({existing.kind}) and"
                f" {function_ref(registration.function)} ({registration.kind});"
                " the name is the consumer's identity, so it must be unique (a receiver"
                " that starts a workflow needs a name of its own)"
            )
        self._registrations[registration.name] = registration

    def add_workflow(self, registration: WorkflowRegistration) -> None:
        """``@headwater.workflow`` (its flow control checked now: a typo fails at import)."""
        task_flow(
            registration.name,
            registration.flow.get("concurrency"),
            registration.flow.get("rate_limit"),
        )
        self.add(registration)

    def consumer(
        self,
        stream: str,
        *,
        name: str,
        guarantee: Guarantee = Guarantee.EXACTLY_ONCE,
        max_attempts: int | None = None,
        retry_backoff: float = 5.0,
        retry_max_backoff: float = 300.0,
    ) -> Callable[[F], F]:
        """Bind a handler to an outbox stream. Under ``EXACTLY_ONCE`` it is called as
        ``handler(event, session)`` inside the worker's transaction; otherwise as
        ``handler(event)``. ``max_attempts`` failures send the event to the dead letters
        (None: retry forever)."""

        def decorate(fn: F) -> F:
            self.add(
                ConsumerRegistration(
                    name=name,
                    app=self.app,
                    stream=stream,
                    function=fn,
                    guarantee=Guarantee(guarantee),
                    max_attempts=max_attempts,
                    retry_backoff=retry_backoff,
                    retry_max_backoff=retry_max_backoff,
                )
            )
            return fn

        return decorate

    def on_receiver_trigger(
        self,
        trigger_type: str,
        fields: Mapping[str, Any],
        *,
        name: str,
        retry: int | RetryPolicy | Mapping[str, Any] | None = None,
        timeout: float | str | None = None,
        concurrency: Concurrency | Mapping[str, Any] | None = None,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """The general form behind ``on_redis_stream`` … ``on_receiver``: ``fields`` are
        the workspace trigger's fields (validated now, so a typo fails at import, naming
        its ``file:line``); ``concurrency`` and ``rate_limit`` are the handler task's (as
        in YAML). On a method of a class, fields it misses may come from the class's
        ``receiver_defaults``."""
        check_name(name)
        site = caller_site()
        # ``target_workflow=``: this receiver starts that workflow (no function to decorate).
        target = fields.get("target_workflow")
        if target is not None and not isinstance(target, str):
            if getattr(target, WORKFLOW_MARK, None) is None:
                raise RegistrationError(
                    f"{site}: receiver {name!r}: target_workflow must be a @headwater.workflow,"
                    f" not {target!r}"
                )
            fields = {**fields, "target_workflow": function_ref(target)}
        given: dict[str, Any] = {"retry": retry, "timeout": timeout}
        given |= {"concurrency": concurrency, "rate_limit": rate_limit}
        options = {k: v for k, v in given.items() if v is not None}
        incomplete: RegistrationError | None = None
        try:
            receiver_settings(trigger_type, fields, name, options)
        except Missing as exc:  # a class default may still fill it
            incomplete = RegistrationError(str(exc))
        except RegistrationError as exc:
            raise RegistrationError(f"{site}: {exc}") from None
        spec = ReceiverSpec(trigger_type, dict(fields), name, options, incomplete)
        if target is not None and not isinstance(target, str):
            if incomplete is not None:
                raise RegistrationError(f"{site}: {incomplete}")
            self.add(self.receiver_registration(spec, target))
            return lambda fn: fn

        def decorate(fn: F) -> F:
            target = getattr(fn, "__func__", fn)  # above @staticmethod: the function in it
            if is_method(target):
                check_static(target)
                setattr(target, PENDING, (*getattr(target, PENDING, ()), spec))
                if incomplete is None:  # complete alone: a class decorator may redo it
                    self.add(self.receiver_registration(spec, target))
                return fn
            if incomplete is not None:
                raise RegistrationError(f"{where(target)}: {incomplete}")
            self.add(self.receiver_registration(spec, target))
            return fn

        return decorate

    def receiver_registration(
        self,
        spec: ReceiverSpec,
        fn: Callable[..., Any],
        defaults: Mapping[str, Any] | None = None,
        origin: str | None = None,
    ) -> ReceiverRegistration:
        """``spec`` bound to ``fn``, with ``defaults`` (a class's) under its own values."""
        defaults = dict(defaults or {})
        fields = {k: v for k, v in defaults.items() if k not in DEFAULTABLE_OPTIONS}
        options = {k: v for k, v in defaults.items() if k in DEFAULTABLE_OPTIONS}
        merged = {**fields, **spec.fields}
        if getattr(fn, WORKFLOW_MARK, None) is not None:  # stacked on @headwater.workflow
            merged.setdefault("target_workflow", function_ref(fn))
        if isinstance(fields.get("options"), Mapping) and isinstance(
            spec.fields.get("options"), Mapping
        ):  # a custom receiver's own options: merged one level down
            merged["options"] = {**fields["options"], **spec.fields["options"]}
        options.update(spec.options)
        try:
            trigger, policy, seconds, flow = receiver_settings(
                spec.trigger_type, merged, spec.name, options
            )
        except RegistrationError as exc:
            raise RegistrationError(f"{where(fn)}: {exc}") from None
        used = sorted(k for k in defaults if k not in spec.fields and k not in spec.options)
        return ReceiverRegistration(
            name=spec.name,
            app=self.app,
            trigger=trigger,
            function=fn,
            retry=policy,
            timeout=seconds,
            flow=flow,
            defined_at=where(fn),
            defaults_from=origin if used else None,
            class_defaults=tuple(used),
        )

    def receiver_defaults(self, type: str, **defaults: Any) -> Callable[[C], C]:
        """Class decorator: defaults for the ``type`` receivers bound to the class's
        static methods (e.g. a Kafka broker and group); a method's own values win. Keys
        are checked now: an unknown one fails at import with the class's ``file:line``."""

        def decorate(cls: C) -> C:
            problem = defaults_problem(type, defaults)
            if problem is not None:
                raise RegistrationError(
                    f"{where(cls)}: receiver_defaults on {cls.__qualname__}: {problem}"
                )
            for attr, member, fn in class_members(cls):
                if not isinstance(member, staticmethod):
                    raise RegistrationError(
                        f"{where(fn)}: {cls.__qualname__}.{attr} is bound to a receiver, so it"
                        " must be a @staticmethod (headwater calls it without an instance)"
                    )
                for spec in getattr(fn, PENDING):
                    if spec.trigger_type == type:
                        registration = self.receiver_registration(
                            spec, fn, defaults, origin=cls.__qualname__
                        )
                        self._registrations.pop(spec.name, None)  # its complete-alone form
                        self.add(registration)
            return cls

        return decorate

    # -- one decorator per receiver (options: the trigger's fields) ------------------------
    def on(
        self, trigger_type: str, argument: Any, *, name: str, **options: Any
    ) -> Callable[[F], F]:
        """The decorator of any receiver in the catalog: ``argument`` fills the field its
        model names as ``sdk_argument`` (a Kafka topic, an SQS queue URL), ``options`` the
        rest; ``retry`` and ``timeout`` are the handler step's."""
        model = RECEIVERS.get(trigger_type)
        if model is None or model.sdk_argument is None:
            raise RegistrationError(f"no receiver of type {trigger_type!r} with a decorator")
        retry = options.pop("retry", None)
        timeout = options.pop("timeout", None)
        flow = {k: options.pop(k) for k in _TASK_FLOW if k in options}
        # A connection argument left out (None) may come from the class's defaults.
        given = {k: v for k, v in options.items() if v is not None or k not in _CONNECTION}
        fields = {model.sdk_argument: argument, **given}
        return self.on_receiver_trigger(
            trigger_type, fields, name=name, retry=retry, timeout=timeout, **flow
        )

    # Typed thin wrappers of ``on`` (mypy sees each one's required fields); a test checks
    # there is one per catalog line and that each passes its argument where the model says.
    def on_redis_stream(
        self, stream: str, *, name: str, url: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each entry of a Redis Stream (read through a consumer group) calls the function."""
        return self.on("redis_stream", stream, name=name, url=url, **options)

    def on_redis_list(
        self, key: str, *, name: str, url: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each element pushed to a Redis list calls the function."""
        return self.on("redis_list", key, name=name, url=url, **options)

    def on_amqp(
        self, queue: str, *, name: str, url: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each message of a RabbitMQ queue calls the function."""
        return self.on("amqp", queue, name=name, url=url, **options)

    def on_mqtt(
        self,
        topic: str,
        *,
        name: str,
        url: str | None = None,
        client_id: str | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Each message on an MQTT topic filter (QoS 1, persistent session) calls it."""
        return self.on("mqtt", topic, name=name, url=url, client_id=client_id, **options)

    def on_nats(self, stream: str, *, name: str, **options: Any) -> Callable[[F], F]:
        """Each message of a NATS JetStream stream (durable pull consumer) calls it."""
        return self.on("nats", stream, name=name, **options)

    def on_kafka(
        self, topic: str, *, name: str, bootstrap_servers: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each record of a Kafka topic (consumer group ``group_id``) calls the function."""
        return self.on("kafka", topic, name=name, bootstrap_servers=bootstrap_servers, **options)

    def on_sqs(self, queue_url: str, *, name: str, **options: Any) -> Callable[[F], F]:
        """Each message of an SQS queue calls the function."""
        return self.on("sqs", queue_url, name=name, **options)

    def on_postgres(
        self, table: str, *, name: str, url: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each new row of a PostgreSQL table (in key order, from a checkpoint) calls it."""
        return self.on("postgres", table, name=name, url=url, **options)

    def on_sqlserver_cdc(
        self, capture_instance: str, *, name: str, url: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each insert, update and delete of a SQL Server CDC capture instance calls it."""
        return self.on("sqlserver_cdc", capture_instance, name=name, url=url, **options)

    def on_postgres_cdc(
        self, tables: str | Sequence[str], *, name: str, url: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each insert, update and delete of the tables (a logical replication slot)."""
        chosen = [tables] if isinstance(tables, str) else list(tables)
        return self.on("postgres_cdc", chosen, name=name, url=url, **options)

    def on_pubsub(self, subscription: str, *, name: str, **options: Any) -> Callable[[F], F]:
        """Each message of a Google Cloud Pub/Sub subscription calls the function."""
        return self.on("pubsub", subscription, name=name, **options)

    def on_eventhubs(
        self, eventhub: str, *, name: str, connection_string: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each event of an Azure Event Hub (consumer group consumer_group) calls the function."""
        return self.on(
            "eventhubs", eventhub, name=name, connection_string=connection_string, **options
        )

    def on_pulsar(self, topic: str, *, name: str, **options: Any) -> Callable[[F], F]:
        """Each message of an Apache Pulsar topic (subscription subscription) calls the function."""
        return self.on("pulsar", topic, name=name, **options)

    def on_mysql_cdc(
        self, tables: str | list[str], *, name: str, url: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Each row inserted, updated or deleted in MySQL/MariaDB tables ("schema.table",
        "schema.*"), read from the binlog, calls it; ``metadata`` has the operation."""
        return self.on("mysql_cdc", tables, name=name, url=url, **options)

    def on_receiver(self, receiver: type[Any], *, name: str, **options: Any) -> Callable[[F], F]:
        """Your own ``EventReceiver`` subclass, built as ``receiver(**options)``; each event
        it dispatches calls the function. ``max_in_flight``, ``input``, ``retry`` and
        ``timeout`` are headwater's, not the receiver's."""
        from headwater.triggers.receivers.base import EventReceiver

        if not (isinstance(receiver, type) and issubclass(receiver, EventReceiver)):
            raise RegistrationError(
                f"on_receiver needs an EventReceiver subclass, not {receiver!r}"
            )
        fields: dict[str, Any] = {k: options.pop(k) for k in _TRIGGER_LEVEL if k in options}
        for key in ("retry", "timeout"):
            if key in options:
                fields[key] = options.pop(key)
        flow = {k: options.pop(k) for k in _TASK_FLOW if k in options}
        fields.update(receiver=function_ref(receiver), options=options)
        retry = fields.pop("retry", None)
        timeout = fields.pop("timeout", None)
        return self.on_receiver_trigger(
            "custom", fields, name=name, retry=retry, timeout=timeout, **flow
        )

    # -- what runs it ---------------------------------------------------------------------
    def functions(self) -> dict[str, Callable[..., Any]]:
        """Function refs of the receiver registrations → the callables (so functions
        defined where import by name cannot reach them still resolve in-process)."""
        found = {function_ref(r.function): r.function for r in self.receivers}
        found.update((function_ref(r.function), r.function) for r in self.workflows)
        return found

    def workspace(self, root: Path | None = None) -> Workspace:
        """The workspace the receiver registrations run as: per registration a task
        ``{name}`` with one ``type: function`` step and a receiver trigger ``{name}``."""
        tasks: dict[str, Task] = {}
        triggers: dict[str, Any] = {}
        for reg in self.receivers:
            step_input = {k: f"{{{{ input.{k} }}}}" for k in reg.accepted_kwargs}
            if "content_type" in step_input:  # only binary messages carry it
                step_input["content_type"] = "{{ input.content_type | default(none) }}"
            ref = function_ref(reg.function)
            # A workflow: each message's job is one durable run, its dedup key the run's id.
            is_workflow = getattr(reg.function, WORKFLOW_MARK, None) is not None
            action = Action(
                type=ActionType.WORKFLOW if is_workflow else ActionType.FUNCTION,
                function=ref,
                workflow=ref if is_workflow else None,
                timeout=reg.timeout,
            )
            tasks[reg.name] = Task(
                description=f"{reg.source} → {function_ref(reg.function)}",
                flow={HANDLER_STEP: Step(inline=action, input=step_input, retry=reg.retry)},
                **reg.flow,
            )
            triggers[reg.name] = reg.trigger
        for wf in self.workflows:
            # No step input: the workflow takes the job's input (the call's arguments
            # by name) as its keyword arguments.
            action = Action(type=ActionType.FUNCTION, function=function_ref(wf.function))
            tasks[wf.name] = Task(
                description=f"workflow {function_ref(wf.function)}",
                flow={WORKFLOW_STEP: Step(inline=action, input={})},
                **task_flow(wf.name, wf.flow.get("concurrency"), wf.flow.get("rate_limit")),
            )
        return Workspace.model_validate(
            {
                "name": self.app,
                "root": root or Path.cwd(),
                "tasks": tasks,
                "triggers": triggers,
                "secrets": self.secrets,
            }
        )


class _DefaultHolder:
    """Holds the default registry (the SDK's one piece of module state), replaceable."""

    def __init__(self) -> None:
        self.registry: Registry | None = None


_holder = _DefaultHolder()


def default_registry() -> Registry:
    """The registry the module-level decorators write to (created on first use)."""
    if _holder.registry is None:
        _holder.registry = Registry()
    return _holder.registry


def set_default_registry(registry: Registry | None) -> Registry | None:
    """Replace the default registry (None: a fresh one on next use); returns the old."""
    previous, _holder.registry = _holder.registry, registry
    return previous
