"""A broker password never shows: not in ``describe()``, not in the log lines a receiver
writes when it starts or fails, not in ``/api/triggers`` — for every receiver.

The password is given the recommended way (a ``{{ secret.x }}`` template, in the URL or
in a password field) and, for the listing, also written in clear. Nothing here relies on
the API's masking of known secret values: what is checked is what the receivers and
the manager produce before it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from headwater.dispatch.dispatcher import Dispatcher
from headwater.server.routes_triggers import trigger_json
from headwater.store.base import Store
from headwater.triggers.receivers import create_receiver
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.workspace.receiver_triggers import RECEIVERS
from headwater.workspace.templating import TemplateEngine
from tests.integration.receivers.conftest import TRIGGER, Rig, eventually, workspace_with
from tests.integration.receivers.harnesses.amqp import rabbitmqctl
from tests.integration.receivers.harnesses.tcp_proxy import free_port

PW = "Sup3r-S3cret-Pw"

_SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _unreachable(kind: str, port: int) -> dict[str, Any]:
    """A trigger of ``kind`` with the password in its templates, pointed at a closed port."""
    url = "{{ secret.url }}"
    specific: dict[str, dict[str, Any]] = {
        "redis_stream": {"url": url, "stream": "s"},
        "redis_list": {"url": url, "list": "l"},
        "amqp": {"url": url, "queue": "q"},
        "mqtt": {"url": url, "topic": "t/#", "client_id": "c", "password": "{{ secret.pw }}"},
        "nats": {"url": url, "stream": "S", "durable": "d", "password": "{{ secret.pw }}"},
        "kafka": {
            "bootstrap_servers": f"127.0.0.1:{port}",
            "topic": "t",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "hw",
            "sasl_password": "{{ secret.pw }}",
        },
        "sqs": {
            "queue_url": f"http://127.0.0.1:{port}/123456789012/q",
            "endpoint_url": f"http://127.0.0.1:{port}",
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": "{{ secret.pw }}",
        },
        "postgres": {"url": url, "table": "t", "key_column": "id"},
        "sqlserver_cdc": {"url": url, "capture_instance": "dbo_t", "login_timeout_secs": 2},
        "postgres_cdc": {"url": url, "tables": "t"},
        "pubsub": {
            "subscription": "projects/p/subscriptions/s",
            "emulator_host": f"127.0.0.1:{port}",
            "service_account_key": "{{ secret.pw }}",
        },
        "pulsar": {"service_url": url, "topic": "t", "auth_token": "{{ secret.pw }}"},
        "eventhubs": {
            "connection_string": (
                f"Endpoint=sb://127.0.0.1:{port}/;SharedAccessKeyName=hw;"
                "SharedAccessKey={{ secret.pw }}"
            ),
            "eventhub": "h",
        },
        "mysql_cdc": {"url": url, "tables": ["shop.orders"]},
    }
    return {"type": kind, "target_task": "handle", **specific[kind]}


def _secrets(kind: str, port: int) -> dict[str, str]:
    scheme = {
        "redis_stream": "redis",
        "redis_list": "redis",
        "postgres": "postgresql",
        "sqlserver_cdc": "mssql",
        "postgres_cdc": "postgresql",
        "mysql_cdc": "mysql",
    }
    url = f"{scheme.get(kind, kind)}://hw:{PW}@127.0.0.1:{port}/"
    return {"url": url, "pw": PW}


BUILT_IN = sorted(k for k in RECEIVERS if k != "custom")


def _render(secrets: dict[str, str]) -> Callable[[Any, str], Any]:
    engine = TemplateEngine()
    ctx = {"secret": secrets, "secrets": secrets}
    return lambda value, where: engine.render(value, ctx, where=where)


def _leaks(*things: Any) -> list[str]:
    return [repr(t)[:300] for t in things if PW in json.dumps(t, default=repr)]


@pytest.mark.parametrize("kind", BUILT_IN)
def test_describe_never_shows_the_password(kind: str) -> None:
    port = 1
    trigger = workspace_with(_unreachable(kind, port)).triggers[TRIGGER]
    receiver = create_receiver(trigger, _render(_secrets(kind, port)), TemplateEngine())
    described = receiver.describe()
    assert _leaks(described) == []
    assert any("127.0.0.1" in str(v) for v in described.values())  # still says where


@_SQLITE_ONLY
@pytest.mark.parametrize("kind", BUILT_IN)
@pytest.mark.parametrize("in_clear", [False, True], ids=["template", "in_clear"])
async def test_a_failing_receiver_logs_and_lists_no_password(
    kind: str, in_clear: bool, store: Store
) -> None:
    port = free_port()  # nothing listens there: connecting or reading fails
    secrets = _secrets(kind, port)
    spec = _unreachable(kind, port)
    if in_clear:  # written without a template (``headwater validate`` warns about it)
        spec = {k: _render(secrets)(v, k) if isinstance(v, str) else v for k, v in spec.items()}
    ws = workspace_with(spec)
    manager = ReceiverManager(
        store,
        Dispatcher(store, lambda: ws),
        lambda: ws,
        TemplateEngine(),
        lambda: secrets,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    with capture_logs() as logs:
        await manager.reconcile()

        async def failed() -> dict[str, Any] | None:
            await manager.reconcile()
            state = (await manager.states())[TRIGGER]
            seen = any(e["event"] == "receiver_reconnecting" for e in logs)
            return state if state["last_error"] or seen else None

        state = await eventually(failed, timeout=60, what="the receiver to fail")
        listing = trigger_json(TRIGGER, ws.triggers[TRIGGER], state)
        await manager.reconcile()
    await _stop(manager)
    assert _leaks(*logs) == []
    assert _leaks(state, listing) == []


async def _stop(manager: ReceiverManager) -> None:
    stop = asyncio.Event()
    stop.set()
    await manager.run(stop)  # stops every receiver on its way out


# -- running against the real broker, with a password it accepts --------------------------
_AMQP_USER = "hw_test_secret"


async def _with_password(rig: Rig) -> None:
    """Make the rig's trigger carry ``PW`` to a broker that accepts it."""
    kind = rig.harness.trigger_type
    base = getattr(rig.harness, "secrets", dict)()
    extra: dict[str, str] = {
        "redis_stream": {"redis_url": f"redis://default:{PW}@127.0.0.1:6379/0"},
        "redis_list": {"redis_url": f"redis://default:{PW}@127.0.0.1:6379/0"},
        "nats": {"nats_url": f"nats://hw:{PW}@127.0.0.1:4222"},
        # The harness's own database (trust auth here: the password is still sent).
        "postgres": {
            "pg_url": str(base.get("pg_url", "")).replace("://postgres@", f"://postgres:{PW}@")
        },
        "postgres_cdc": {
            "pg_url": str(base.get("pg_url", "")).replace("://postgres@", f"://postgres:{PW}@")
        },
        "sqs": {"aws_secret": PW},
        "amqp": {"amqp_url": f"amqp://{_AMQP_USER}:{PW}@127.0.0.1:5672/"},
        "mqtt": {"mqtt_pw": PW},
    }[kind]
    assert any(PW in value for value in extra.values()), extra  # the check has a password
    if kind == "amqp":
        users = {u["user"] for u in await rabbitmqctl("list_users")}
        if _AMQP_USER not in users:
            await rabbitmqctl("add_user", _AMQP_USER, PW)
        await rabbitmqctl("set_permissions", "-p", "/", _AMQP_USER, ".*", ".*", ".*")
    if kind == "mqtt":  # mosquitto here lets anyone in: the password is still sent
        rig.trigger["url"] = "mqtt://hw:{{ secret.mqtt_pw }}@127.0.0.1:1883"
        rig.trigger["password"] = "{{ secret.mqtt_pw }}"
    secrets = {**base, **extra}
    rig.harness.secrets = lambda: secrets  # type: ignore[method-assign]


@_SQLITE_ONLY
# Kafka is left out here: the local broker has no SASL, so it cannot be started with a
# password (its describe() and failure logs are checked above).
@pytest.mark.parametrize(
    "harness",
    ["amqp", "mqtt", "nats", "postgres", "postgres_cdc", "redis_list", "redis_stream", "sqs"],
    indirect=True,
)
async def test_a_running_receiver_logs_and_lists_no_password(rig: Rig) -> None:
    await _with_password(rig)
    with capture_logs() as logs:
        manager = await rig.start()
        await rig.harness.publish([{"n": 1}])
        await rig.wait_jobs(1)
        state = (await manager.states())[TRIGGER]
        listing = trigger_json(TRIGGER, rig.workspace().triggers[TRIGGER], state)
        await rig.halt()
    started = [e for e in logs if e["event"] == "receiver_started"]
    assert len(started) == 1
    assert _leaks(*logs) == []
    assert _leaks(state, listing) == []
