"""Registrations: decorators, validation at import time, the synthesized workspace,
finding an app's registry."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

import headwater
from headwater import EventReceiver, Guarantee, ReceiverContext, RegistrationError
from headwater.dispatch.dispatcher import task_tags
from headwater.sdk.loading import load_registry
from headwater.sdk.registry import default_registry, set_default_registry
from headwater.workspace.models import ActionType
from headwater.workspace.receiver_triggers import CustomTrigger


def test_import_headwater_exposes_the_sdk() -> None:
    for name in headwater.__all__:
        assert getattr(headwater, name) is not None, name
    with pytest.raises(AttributeError):
        headwater.nothing_like_this  # noqa: B018


def test_a_consumer_is_registered_under_its_stable_name() -> None:
    reg = headwater.Registry(app="shop")

    @reg.consumer("stream:user:events", name="handle_user_event")
    def handle(event: Any, session: Any) -> None: ...

    (item,) = reg.describe()
    assert item == {
        "name": "handle_user_event",
        "full_name": "shop.handle_user_event",
        "kind": "outbox",
        "source": "outbox:stream:user:events",
        "stream": "stream:user:events",
        "function": f"{__name__}:{test_a_consumer_is_registered_under_its_stable_name.__name__}"
        ".<locals>.handle",
        "guarantee": "exactly_once",
        "max_attempts": None,
    }
    assert handle.__name__ == "handle"  # the decorator returns the function itself


@pytest.mark.parametrize(
    ("guarantee", "shape"),
    [(Guarantee.EXACTLY_ONCE, "(event, session)"), (Guarantee.AT_LEAST_ONCE, "(event)")],
)
def test_a_handler_of_the_wrong_shape_is_refused_at_import(
    guarantee: Guarantee, shape: str
) -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match=re.escape(f"must take {shape}")):
        if guarantee is Guarantee.EXACTLY_ONCE:

            @reg.consumer("s", name="n", guarantee=guarantee)
            def one(event: Any) -> None: ...

        else:

            @reg.consumer("s", name="n", guarantee=guarantee)
            def two(event: Any, session: Any) -> None: ...


@pytest.mark.parametrize("name", ["", "has space", "ümlaut", "x" * 201, None])
def test_invalid_names_are_refused(name: Any) -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match="not a valid consumer name"):
        reg.consumer("s", name=name)(lambda event, session: None)


def test_two_functions_cannot_share_a_name() -> None:
    reg = headwater.Registry(app="shop")

    def first(event: Any, session: Any) -> None: ...

    def second(event: Any, session: Any) -> None: ...

    reg.consumer("s", name="dup")(first)
    reg.consumer("s", name="dup")(first)  # the same function again (a re-import): fine
    with pytest.raises(RegistrationError, match="two registrations are named 'dup'"):
        reg.consumer("s", name="dup")(second)


def test_max_attempts_and_backoff_are_checked() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match="max_attempts must be at least 1"):
        reg.consumer("s", name="a", max_attempts=0)(lambda e, s: None)
    with pytest.raises(RegistrationError, match="retry_backoff"):
        reg.consumer("s", name="b", retry_backoff=10, retry_max_backoff=1)(lambda e, s: None)


RECEIVERS: list[tuple[str, str, dict[str, Any]]] = [
    ("on_redis_stream", "stream:x", {"url": "redis://localhost"}),
    ("on_redis_list", "jobs", {"url": "redis://localhost"}),
    ("on_amqp", "orders", {"url": "amqp://guest:guest@localhost/"}),
    ("on_mqtt", "sensors/#", {"url": "mqtt://localhost", "client_id": "c1"}),
    ("on_nats", "ORDERS", {}),
    ("on_kafka", "orders", {"bootstrap_servers": "localhost:9092", "group_id": "g"}),
    ("on_sqs", "http://localhost:4566/000000000000/q", {}),
    ("on_postgres", "public.orders", {"url": "postgresql://localhost/db"}),
    ("on_pubsub", "projects/p/subscriptions/orders", {}),
    ("on_pulsar", "persistent://public/default/orders", {}),
    ("on_eventhubs", "orders", {"connection_string": "Endpoint=sb://ns/;SharedAccessKey=x"}),
    ("on_mysql_cdc", "shop.orders", {"url": "mysql://cdc@localhost:3306"}),
]


@pytest.mark.parametrize(("decorator", "source", "options"), RECEIVERS)
def test_every_builtin_receiver_has_a_decorator_of_the_same_shape(
    decorator: str, source: str, options: dict[str, Any]
) -> None:
    reg = headwater.Registry(app="shop")

    def handle(payload: Any, metadata: Any) -> dict[str, Any]:
        return {"ok": True}

    getattr(reg, decorator)(source, name="handler-1", max_in_flight=7, retry=2, **options)(handle)
    (registration,) = reg.receivers
    assert registration.trigger.target_task == "handler-1"
    assert registration.trigger.max_in_flight == 7
    assert source in registration.source
    ws = reg.workspace()
    task = ws.tasks["handler-1"]
    step = task.flow["handler"]
    assert step.inline is not None and step.inline.type is ActionType.FUNCTION
    assert step.retry is not None and step.retry.count == 2
    assert step.input == {"payload": "{{ input.payload }}", "metadata": "{{ input.metadata }}"}
    assert task_tags(ws, task) == frozenset({"function"})
    assert ws.triggers["handler-1"] is registration.trigger
    assert ws.name == "shop"


def test_a_receiver_typo_fails_at_import_naming_the_field() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match="kafka receiver 'k': grup_id: Extra inputs"):
        reg.on_kafka("t", name="k", bootstrap_servers="b:9092", grup_id="g")(lambda payload: None)
    with pytest.raises(RegistrationError, match="must accept the message as keyword"):
        reg.on_kafka("t", name="k2", bootstrap_servers="b:9092")(lambda: None)


def test_only_the_kwargs_a_function_takes_are_passed() -> None:
    reg = headwater.Registry(app="shop")

    @reg.on_redis_stream("s", name="only-payload", url="redis://x")
    def payload_only(payload: Any) -> None: ...

    @reg.on_redis_stream("s", name="everything", url="redis://x")
    def everything(**message: Any) -> None: ...

    ws = reg.workspace()
    assert ws.tasks["only-payload"].flow["handler"].input == {"payload": "{{ input.payload }}"}
    assert set(ws.tasks["everything"].flow["handler"].input) == {
        "payload",
        "metadata",
        "content_type",
    }


class Ticks(EventReceiver):
    def __init__(self, every: float = 1.0, label: str = "tick") -> None:
        self.every, self.label = every, label

    async def start(self, ctx: ReceiverContext) -> None: ...

    async def stop(self) -> None: ...

    async def wait(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        return {"every": self.every}


def test_a_custom_receiver_is_a_registration_like_the_builtin_ones() -> None:
    reg = headwater.Registry(app="shop")

    @reg.on_receiver(Ticks, name="ticks", every=0.5, label="{{ secret.label }}", max_in_flight=3)
    def on_tick(payload: Any) -> None: ...

    (registration,) = reg.receivers
    trigger = registration.trigger
    assert trigger.type == "custom"
    assert isinstance(trigger, CustomTrigger)
    assert trigger.receiver == f"{__name__}:Ticks"
    assert trigger.options == {"every": 0.5, "label": "{{ secret.label }}"}
    assert trigger.max_in_flight == 3
    assert registration.source == f"custom:{__name__}:Ticks"
    with pytest.raises(RegistrationError, match="needs an EventReceiver subclass"):
        reg.on_receiver(dict, name="nope")(on_tick)


def test_the_default_registry_is_replaceable() -> None:
    mine = headwater.Registry(app="tests")
    previous = set_default_registry(mine)
    try:

        @headwater.consumer("s", name="via-default")
        def handle(event: Any, session: Any) -> None: ...

        assert default_registry() is mine
        assert [r.name for r in mine] == ["via-default"]
    finally:
        set_default_registry(previous)


def test_endpoints_are_logged_one_line_each() -> None:
    reg = headwater.Registry(app="shop")
    reg.consumer("s", name="c")(lambda event, session: None)
    seen: list[dict[str, Any]] = []

    class Logger:
        def info(self, event: str, **kw: Any) -> None:
            seen.append({"event": event, **kw})

    reg.log_registered_endpoints(Logger())
    assert seen == [
        {
            "event": "registered_endpoint",
            "source": "outbox:s",
            "name": "shop.c",
            "function": f"{__name__}:test_endpoints_are_logged_one_line_each.<locals>.<lambda>",
        }
    ]


APP = """
import headwater

registry = headwater.Registry(app="fileapp")

@registry.consumer("stream:a", name="a")
def a(event, session):
    pass
"""


def test_an_app_is_found_by_file_path_and_by_module_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sdk_file_app.py").write_text(textwrap.dedent(APP))
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = set_default_registry(headwater.Registry(app="empty"))
    try:
        found = load_registry(str(tmp_path / "sdk_file_app.py"))
        assert found.app == "fileapp" and [r.name for r in found] == ["a"]
        assert load_registry("sdk_file_app:registry") is found
        with pytest.raises(RegistrationError, match=r"is not a headwater\.Registry"):
            load_registry("sdk_file_app:headwater")
        (tmp_path / "sdk_empty_app.py").write_text("x = 1\n")
        with pytest.raises(RegistrationError, match="registers nothing"):
            load_registry("sdk_empty_app")
        with pytest.raises(RegistrationError, match="no such module"):
            load_registry("sdk_no_such_app")
    finally:
        set_default_registry(previous)


def test_a_yaml_workspace_can_name_a_custom_receiver(tmp_path: Path) -> None:
    from headwater.workspace import check_workspace

    ws = tmp_path / "ws.yaml"
    ws.write_text(
        textwrap.dedent(
            """
            actions:
              show: { type: script, script: "echo hi" }
            tasks:
              t:
                flow:
                  s: { action: show }
            triggers:
              mine:
                type: custom
                receiver: "my.receivers:Ticks"
                options: { every: 1 }
                target_task: t
              bad:
                type: custom
                receiver: "my.receivers.Ticks"
                target_task: t
            """
        )
    )
    report = check_workspace(ws)
    assert [p.format() for p in report.errors] == [
        f"{ws}:16:15: error: trigger 'bad': `receiver`: write receiver:"
        " \"package.module:ClassName\", not 'my.receivers.Ticks'"
    ]
