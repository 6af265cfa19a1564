"""Receiver helpers and the redis_stream trigger model, without services."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from headwater.triggers.receivers import create_receiver, is_receiver_trigger
from headwater.triggers.receivers.base import decode_body
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.triggers.receivers.redis_client import blocking_client
from headwater.triggers.receivers.redis_stream import RedisStreamReceiver, RedisStreamSettings
from headwater.triggers.receivers.redis_stream.receiver import parse_id
from headwater.workspace import check_workspace
from headwater.workspace.models import RedisStreamTrigger, Workspace
from headwater.workspace.templating import TemplateEngine


def test_decode_body_json_text_binary() -> None:
    assert decode_body(b'{"a": 1}').payload == {"a": 1}
    assert decode_body(b"123").payload == "123"  # only documents are parsed
    assert decode_body("hello").payload == "hello"
    binary = decode_body(b"\xff\x00")
    assert binary.content_type == "application/octet-stream"
    assert binary.payload == "/wA="
    with pytest.raises(ValueError, match="not JSON"):
        decode_body(b"{bad", "json")
    with pytest.raises(ValueError, match="UTF-8"):
        decode_body(b"\xff", "text")


def test_decode_body_parses_only_what_looks_like_a_json_document() -> None:
    """``auto``: a JSON document (object, array, string), also after leading whitespace,
    is parsed; a body that only looks like one stays text, as do bare numbers and
    words; ``json`` and ``text`` insist, for ``str`` bodies too."""
    assert decode_body(b' \n {"a": 1}').payload == {"a": 1}
    assert decode_body(b"\t[1, 2]").payload == [1, 2]
    assert decode_body(b'"quoted"').payload == "quoted"
    assert decode_body(b"{not json").payload == "{not json"
    assert decode_body(b"true").payload == "true"
    assert decode_body(b"").payload == ""
    assert decode_body("é").payload == "é"
    assert decode_body("é".encode()).content_type is None  # UTF-8 text is not binary
    assert decode_body('{"a": 1}', "json").payload == {"a": 1}
    assert decode_body(b"123", "json").payload == 123  # json takes any JSON value
    assert decode_body(b'{"a": 1}', "text").payload == '{"a": 1}'
    text = decode_body("plain", "text")
    assert (text.payload, text.content_type) == ("plain", None)
    with pytest.raises(ValueError, match="not UTF-8 text, so it cannot be JSON"):
        decode_body(b"\xff", "json")
    with pytest.raises(ValueError, match="cannot be stored"):
        decode_body(b' {"a": "\\u0000"}')


def test_decode_body_is_strict_and_bounded() -> None:
    """Issue 14: a broker payload is read by the same strict decoder as everything else."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert decode_body(deep).payload == deep.decode()  # not JSON we take: it stays text
    with pytest.raises(ValueError, match="deeper than"):
        decode_body(deep, "json")
    assert decode_body(b'{"a": NaN}').payload == '{"a": NaN}'
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        decode_body(b'{"a": NaN}', "json")
    for fmt in ("auto", "json"):  # valid JSON that no store can keep: dead-lettered
        with pytest.raises(ValueError, match="NUL"):
            decode_body(b'{"a": "\\u0000"}', fmt)
        with pytest.raises(ValueError, match="lone surrogate"):
            decode_body(b'["\\ud800"]', fmt)


def _trigger(**kw: object) -> RedisStreamTrigger:
    data = {"type": "redis_stream", "target_task": "t", "url": "redis://h/0", "stream": "s"}
    return RedisStreamTrigger.model_validate({**data, **kw})


def test_trigger_defaults_and_limits() -> None:
    t = _trigger()
    assert (t.group, t.batch_size, t.start_id, t.task) == ("headwater", 100, "$", "t")
    assert is_receiver_trigger(t)
    with pytest.raises(ValidationError):
        _trigger(start_id="5-0")
    with pytest.raises(ValidationError):
        _trigger(max_in_flight=0)


def test_trigger_is_part_of_the_workspace_union() -> None:
    ws = Workspace.model_validate(
        {"triggers": {"r": {"type": "redis_stream", "target_task": "t", "url": "u", "stream": "s"}}}
    )
    assert isinstance(ws.triggers["r"], RedisStreamTrigger)


def test_settings_render_secrets_and_hide_them() -> None:
    engine = TemplateEngine()
    ctx = {"secret": {"pw": "hunter2"}}
    trigger = _trigger(url="redis://:{{ secret.pw }}@cache:6379/0")
    receiver = create_receiver(trigger, lambda v, where: engine.render(v, ctx, where), engine)
    assert isinstance(receiver, RedisStreamReceiver)
    assert receiver.settings.url == "redis://:hunter2@cache:6379/0"
    described = receiver.describe()
    assert "hunter2" not in str(described)
    assert described["url"] == "redis://•••@cache:6379/0"
    assert receiver.settings.consumer == socket.gethostname()  # stable across restarts


def test_parse_id_orders_numerically() -> None:
    assert parse_id("10-2") > parse_id("9-15")
    assert RedisStreamSettings.model_fields["claim_idle_ms"].is_required()


def test_validate_checks_target_task_and_clear_passwords(tmp_path: Path) -> None:
    (tmp_path / "ws.yaml").write_text(
        "triggers:\n"
        "  orders:\n"
        "    type: redis_stream\n"
        "    target_task: nope\n"
        "    url: redis://:hunter2@cache:6379/0\n"
        "    stream: orders\n"
    )
    report = check_workspace(tmp_path / "ws.yaml", {})
    messages = [p.message for p in report.problems]
    assert any("target_task 'nope' is not defined" in m for m in messages), messages
    assert any("password in clear" in m for m in messages), messages


def test_every_receiver_trigger_type_has_a_receiver_and_a_contract_harness() -> None:
    import importlib

    from headwater.workspace.receiver_triggers import RECEIVERS
    from tests.integration.receivers.harness import HARNESS_MODULES

    for kind in RECEIVERS:
        line = RECEIVERS.kind(kind)
        assert line is not None
        assert callable(importlib.import_module(line.runtime).create_receiver)
    # ``custom`` runs the user's own EventReceiver: its promises are the user's to keep.
    builtin = set(RECEIVERS) - {"custom"}
    assert builtin == set(HARNESS_MODULES)
    assert len(builtin) == 14


async def test_stop_survives_a_client_library_cancelling_its_own_close() -> None:
    """aiokafka's stop, with the broker gone, can raise CancelledError from its own
    cancelled tasks: stopping the receiver must not look like a cancellation."""

    class _Receiver(BatchReceiver):
        async def connect(self) -> None: ...
        async def fetch(self, room: int) -> Sequence[BrokerMessage]:
            return []

        async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None: ...
        async def close(self) -> None:
            raise asyncio.CancelledError

        def public_settings(self) -> dict[str, Any]:
            return {}

    receiver = _Receiver(TemplateEngine(), _trigger())
    await receiver.stop()  # returns: nobody cancelled us
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_a_stop_that_is_itself_cancelled_stays_cancelled() -> None:
    """The other side of the rule above: when whoever stops the receiver is cancelled
    while the close is under way (a shutdown that gave up waiting), the cancellation
    reaches it and is not swallowed as the client library's."""
    closing = asyncio.Event()

    class _Receiver(BatchReceiver):
        async def connect(self) -> None: ...
        async def fetch(self, room: int) -> Sequence[BrokerMessage]:
            return []

        async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None: ...
        async def close(self) -> None:
            closing.set()
            await asyncio.Event().wait()  # a close that hangs

        def public_settings(self) -> dict[str, Any]:
            return {}

    stopping = asyncio.create_task(_Receiver(TemplateEngine(), _trigger()).stop())
    await asyncio.wait_for(closing.wait(), 10.0)
    stopping.cancel()
    await asyncio.wait([stopping], timeout=10.0)
    assert stopping.cancelled()


@pytest.mark.parametrize(
    ("url", "block", "expected"),
    [
        ("redis://h:6379/0", 5.0, 15.0),  # redis-py's 5 s default would end an idle block
        ("redis://h:6379/0", 60.0, 70.0),
        ("redis://h:6379/0?socket_timeout=100", 5.0, 100.0),  # a larger one is kept
    ],
)
def test_a_blocking_read_outlives_its_block_time(url: str, block: float, expected: float) -> None:
    client = blocking_client(url, block)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == expected
