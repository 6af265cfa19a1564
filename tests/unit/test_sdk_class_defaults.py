"""Class-level receiver configuration: a class decorator's defaults under each method's
own values, checked at import with the code's file:line, listed with secrets hidden."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import headwater
from headwater import RegistrationError
from headwater.engine.functions import resolve_callable
from headwater.sdk.loading import load_registry
from headwater.sdk.registry import set_default_registry

REG = headwater.Registry(app="shop")


@REG.receiver_defaults(
    "kafka", bootstrap_servers="alice:s3cret@kafka:9092", group_id="orders", retry=3
)
class Orders:
    @staticmethod
    @REG.on_kafka("orders.created", name="order_created")
    def created(payload: Any, metadata: Any) -> str:
        return f"created {payload}"

    @staticmethod
    @REG.on_kafka("orders.paid", name="order_paid", group_id="billing", retry=1)
    def paid(payload: Any) -> None: ...


def test_methods_take_the_class_defaults_and_their_own_values_win() -> None:
    created, paid = REG.get("order_created"), REG.get("order_paid")
    assert created.trigger.bootstrap_servers == "alice:s3cret@kafka:9092"  # type: ignore[attr-defined]
    assert created.trigger.group_id == "orders"  # type: ignore[attr-defined]
    assert paid.trigger.group_id == "billing"  # type: ignore[attr-defined]
    assert created.retry is not None and created.retry.count == 3
    assert paid.retry is not None and paid.retry.count == 1
    assert created.class_defaults == ("bootstrap_servers", "group_id", "retry")
    assert paid.class_defaults == ("bootstrap_servers",)
    assert created.defaults_from == "Orders"


def test_a_bound_method_runs_by_its_function_ref() -> None:
    created = REG.get("order_created")
    fn = resolve_callable(created.describe()["function"])
    assert fn(payload=7, metadata={}) == "created 7"
    assert REG.workspace().tasks["order_created"].flow["handler"].retry.count == 3  # type: ignore[union-attr]


def test_the_listing_shows_the_effective_configuration_with_secrets_hidden() -> None:
    item = REG.get("order_created").describe()
    assert item["config"]["bootstrap_servers"] == "alice:•••@kafka:9092"
    assert item["config"]["group_id"] == "orders"
    assert item["config"]["auto_offset_reset"] == "earliest"  # the model's defaults too
    assert "s3cret" not in repr(REG.describe())
    assert item["defined_at"].startswith(f"{__file__}:")


def test_a_password_field_is_hidden_whole_but_a_secret_template_is_shown() -> None:
    reg = headwater.Registry(app="shop")

    @reg.receiver_defaults("kafka", bootstrap_servers="k:9092", sasl_password="hunter22")
    class A:
        @staticmethod
        @reg.on_kafka("t", name="a")
        def a(payload: Any) -> None: ...

        @staticmethod
        @reg.on_kafka("t", name="b", sasl_password="{{ secret.kafka_pw }}")
        def b(payload: Any) -> None: ...

    assert reg.get("a").describe()["config"]["sasl_password"] == "•••"
    assert reg.get("b").describe()["config"]["sasl_password"] == "{{ secret.kafka_pw }}"


def test_an_unknown_class_key_fails_at_import_with_file_line_and_a_suggestion() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError) as caught:

        @reg.receiver_defaults("kafka", bootstrap_server="k:9092")
        class Typo:
            @staticmethod
            @reg.on_kafka("t", name="t")
            def t(payload: Any) -> None: ...

    message = str(caught.value)
    assert re.match(rf"{re.escape(__file__)}:\d+: receiver_defaults on ", message)
    assert "unknown key 'bootstrap_server'" in message
    assert "did you mean 'bootstrap_servers'" in message
    with pytest.raises(RegistrationError, match="no receiver of type 'kafak'"):
        reg.receiver_defaults("kafak", bootstrap_servers="k")(Orders)
    with pytest.raises(RegistrationError, match="'target_task' cannot be a class default"):
        reg.receiver_defaults("kafka", target_task="x")(Orders)


def test_an_invalid_method_value_names_the_method_line() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError) as caught:

        class Bad:
            @staticmethod
            @reg.on_kafka("t", name="t", poll_timeout_ms=0)
            def t(payload: Any) -> None: ...

    assert re.match(
        rf"{re.escape(__file__)}:\d+: kafka receiver 't': poll_timeout_ms", str(caught.value)
    )


def test_an_invalid_class_value_fails_on_the_method_it_reaches() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match=r":\d+: kafka receiver 'x': auto_offset_reset"):

        @reg.receiver_defaults("kafka", bootstrap_servers="k:1", auto_offset_reset="never")
        class Bad:
            @staticmethod
            @reg.on_kafka("t", name="x")
            def x(payload: Any) -> None: ...


def test_a_method_taking_self_is_refused() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match="must be a @staticmethod"):

        class Bad:
            @reg.on_kafka("t", name="x", bootstrap_servers="k:1")
            def x(self, payload: Any) -> None: ...


def test_a_function_outside_a_class_still_needs_every_field() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match="bootstrap_servers: Field required"):

        @reg.on_kafka("t", name="x")
        def x(payload: Any) -> None: ...


def test_a_method_left_incomplete_is_an_error_when_the_app_is_loaded(tmp_path: Path) -> None:
    app = tmp_path / "incomplete_app.py"
    app.write_text(
        textwrap.dedent(
            """
            import headwater

            class Orders:
                @staticmethod
                @headwater.on_kafka("orders", name="orders")
                def created(payload): ...
            """
        )
    )
    previous = set_default_registry(None)
    try:
        with pytest.raises(RegistrationError) as caught:
            load_registry(str(app))
    finally:
        set_default_registry(previous)
    assert str(caught.value).startswith(f"{app}:")
    assert "bootstrap_servers: Field required" in str(caught.value)
    assert '@headwater.receiver_defaults("kafka"' in str(caught.value)


def test_two_class_decorators_each_give_their_own_type() -> None:
    reg = headwater.Registry(app="shop")

    @reg.receiver_defaults("redis_stream", url="redis://:pw@r:6379/0")
    @reg.receiver_defaults("kafka", bootstrap_servers="k:9092")
    class Both:
        @staticmethod
        @reg.on_kafka("t", name="k")
        def k(payload: Any) -> None: ...

        @staticmethod
        @reg.on_redis_stream("s", name="r")
        def r(payload: Any) -> None: ...

    assert reg.get("k").trigger.bootstrap_servers == "k:9092"  # type: ignore[attr-defined]
    assert reg.get("r").describe()["config"]["url"] == "redis://•••@r:6379/0"
    assert {r.name for r in reg} == {"k", "r"}


def test_the_fulfilment_example_registers_workflows_behind_receivers() -> None:
    app = Path(__file__).parents[2] / "examples" / "sdk" / "fulfilment.py"
    previous = set_default_registry(None)
    try:
        registry = load_registry(str(app))
    finally:
        set_default_registry(previous)
        sys.modules.pop("fulfilment", None)
    placed, cancelled = registry.get("order-placed"), registry.get("order-cancelled")
    assert placed.describe()["config"]["target_workflow"] == "fulfilment:Orders.placed"
    assert placed.class_defaults == ("group", "start_id", "url")
    assert cancelled.describe()["config"]["target_workflow"] == "fulfilment:cancel"
    assert {r.name for r in registry.workflows} == {"fulfil", "cancel", "fulfil_placed"}
