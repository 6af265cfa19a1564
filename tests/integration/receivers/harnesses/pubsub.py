"""Harness of the pubsub receiver: Google's Pub/Sub emulator (the real server side of the
protocol), reached through a gRPC proxy that watches the receiver's calls.

Pub/Sub has no API that counts a subscription's undelivered or unacknowledged messages,
so the proxy counts them from what passes through it: the ``Pull`` replies (delivered),
``Acknowledge`` (done) and ``ModifyAckDeadline`` to 0 (handed back). ``interrupt`` stops
the proxy for a second, cutting every call the way a lost connection does.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from tests.conftest import services_required
from tests.integration.receivers.harnesses.tcp_proxy import free_port
from tests.pubsub_emulator import ensure_emulator

PROJECT = "hw-test"


def emulator_host() -> str:
    """The running emulator (started on first use); skip, or fail under CI, without it."""
    try:
        return ensure_emulator().host
    except (FileNotFoundError, RuntimeError) as exc:
        reason = f"the Pub/Sub emulator cannot run here: {exc}"
        if services_required():
            pytest.fail(reason + " and HEADWATER_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
        raise  # unreachable


class PullWatcher:
    """A gRPC proxy in front of the emulator that keeps the state of each message id."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.state: dict[str, str] = {}  # message id -> "out" | "acked" | "back"
        self._ack_ids: dict[str, str] = {}  # ack id -> message id
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.upstream)
        for _ in range(100):  # after interrupt(), until the old socket lets go of the port
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((_Forward(self),))
            try:
                bound = server.add_insecure_port(f"127.0.0.1:{self.port}")
            except RuntimeError:
                bound = 0
            if bound == self.port:
                await server.start()
                self._server = server
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the Pub/Sub proxy cannot listen on port {self.port} again")

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace=None)
        if self._channel is not None:
            await self._channel.close()

    async def interrupt(self, down_secs: float = 1.0) -> None:
        await self.stop()
        await asyncio.sleep(down_secs)
        await self.start()

    def forward(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def call(request: bytes, context: Any) -> bytes:
            from google.pubsub_v1 import types

            assert self._channel is not None
            name = method.rsplit("/", 1)[-1]
            # Marked when asked: an interrupt() may cut the call after the emulator
            # took it. An ack that was lost brings the message back, which a Pull
            # below marks "out" again.
            if name == "Acknowledge":
                for ack_id in types.AcknowledgeRequest.deserialize(request).ack_ids:
                    self._mark(ack_id, "acked")
            elif name == "ModifyAckDeadline":
                modify = types.ModifyAckDeadlineRequest.deserialize(request)
                if modify.ack_deadline_seconds == 0:
                    for ack_id in modify.ack_ids:
                        self._mark(ack_id, "back")
            try:
                reply: bytes = await self._channel.unary_unary(method)(
                    request, timeout=context.time_remaining()
                )
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # unreachable: abort raises
            if name == "Pull":
                for received in types.PullResponse.deserialize(reply).received_messages:
                    self._ack_ids[received.ack_id] = received.message.message_id
                    self.state[received.message.message_id] = "out"
            return reply

        return call

    def _mark(self, ack_id: str, state: str) -> None:
        message_id = self._ack_ids.get(ack_id)
        if message_id is not None and self.state.get(message_id) != "acked":
            self.state[message_id] = state


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, watcher: PullWatcher) -> None:
        self.watcher = watcher

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            self.watcher.forward(handler_call_details.method)
        )


class PubsubHarness:
    trigger_type = "pubsub"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("pull_timeout_secs", "ack_deadline_secs")
    # The longest a read waits for a message at the default settings (one pull).
    default_wait_secs = 5.0
    # Pub/Sub's API does not count a backlog: the receiver reports its lag as unknown.
    reports_lag = False

    def __init__(self) -> None:
        self.emulator = emulator_host()
        self.watcher = PullWatcher(self.emulator)
        name = uuid.uuid4().hex[:10]
        self.topic = f"projects/{PROJECT}/topics/hw-test-{name}"
        self.subscription = f"projects/{PROJECT}/subscriptions/hw-test-{name}"
        self.published: list[str] = []
        self.publisher: Any = None
        self.subscriber: Any = None

    def secrets(self) -> dict[str, str]:
        return {"pubsub_host": f"127.0.0.1:{self.watcher.port}"}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "pubsub",
            "target_task": "handle",
            "subscription": self.subscription,
            "emulator_host": "{{ secret.pubsub_host }}",
            "pull_timeout_secs": 1,
            "ack_deadline_secs": 2,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
        from google.pubsub_v1.services.subscriber.transports import (
            SubscriberGrpcAsyncIOTransport,
        )

        os.environ.pop("PUBSUB_EMULATOR_HOST", None)  # the trigger says where
        await self.watcher.start()
        channel = grpc.aio.insecure_channel(self.emulator)
        self.publisher = PublisherAsyncClient(
            transport=PublisherGrpcAsyncIOTransport(channel=channel)
        )
        self.subscriber = SubscriberAsyncClient(
            transport=SubscriberGrpcAsyncIOTransport(channel=channel)
        )
        await self.publisher.create_topic(name=self.topic)
        # 10 s is Pub/Sub's shortest; the receiver shortens each batch's lease to its own.
        await self.subscriber.create_subscription(
            name=self.subscription, topic=self.topic, ack_deadline_seconds=10
        )

    async def cleanup(self) -> None:
        try:
            await self.subscriber.delete_subscription(subscription=self.subscription)
            await self.publisher.delete_topic(topic=self.topic)
        finally:
            await self.publisher.transport.close()
            await self.watcher.stop()

    async def publish(self, payloads: list[Any]) -> list[str]:
        reply = await self.publisher.publish(
            topic=self.topic, messages=[{"data": json.dumps(p).encode()} for p in payloads]
        )
        ids = [str(i) for i in reply.message_ids]
        self.published += ids
        return ids

    async def publish_raw(self, body: bytes) -> str:
        reply = await self.publisher.publish(topic=self.topic, messages=[{"data": body}])
        self.published += list(reply.message_ids)
        return str(reply.message_ids[0])

    async def unacked(self) -> int:
        return sum(1 for s in self.watcher.state.values() if s == "out")

    async def undelivered(self) -> int:
        seen = {m for m, s in self.watcher.state.items() if s != "back"}
        return sum(1 for m in self.published if m not in seen)

    async def interrupt(self) -> None:
        await self.watcher.interrupt()
