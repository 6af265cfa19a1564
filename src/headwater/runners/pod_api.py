"""The pod runner's side of the Kubernetes API: blocking calls (run in threads) and the
watch that keeps a pod's state current.

Every call asks for the raw JSON (``_preload_content=False``) instead of the client's
models: the runner reads a few fields, and plain dicts are what the tests record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from headwater.runners.lines import CHUNK_SIZE
from headwater.runners.pod_spec import MAIN_CONTAINER, PodState, pod_state
from headwater.runners.threads import Reason, ThreadedReader, first_of

__all__ = [
    "PodWatch",
    "create_pod",
    "delete_pod",
    "follow_log",
    "list_pods",
    "watch_pod",
]

_WATCH_SECONDS = 240  # one watch request; renewed from the last resourceVersion


class PodWatch:
    """The latest known state of one pod, kept current by a watch in its own thread."""

    def __init__(self, reader: ThreadedReader[tuple[str, dict[str, Any]]], first: PodState):
        self.reader = reader
        self.state = first
        self.gone = False
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader.start()
        self.task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        try:
            while (event := await self.reader.get()) is not None:
                kind, pod = event
                if kind == "DELETED":
                    self.gone = True
                if pod:
                    self.state = pod_state(pod)
                self.changed.set()
        except Exception as exc:
            self.error = exc
        self.gone = self.gone or self.error is None
        self.changed.set()

    async def until(
        self,
        ready: Callable[[], bool],
        cancel: asyncio.Event,
        deadline: float | None,
        timeout: float | None = None,
    ) -> Reason | None:
        """Wait until ``ready()``: None when it is (or after ``timeout``, or when the
        watch ended), else the step's TIMEOUT or CANCEL."""
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        while True:
            self.changed.clear()  # no await between this and the check: no lost wake-up
            if ready() or self.gone or self.error is not None:
                return None
            stop_at = min((t for t in (deadline, until) if t is not None), default=None)
            waiter = asyncio.ensure_future(self.changed.wait())
            try:
                reason = await first_of(waiter, cancel, stop_at)
            finally:
                waiter.cancel()
            if reason is Reason.CANCEL:
                return reason
            if reason is Reason.TIMEOUT:
                if deadline is not None and loop.time() >= deadline:
                    return Reason.TIMEOUT
                return None

    def stop(self) -> None:
        self.reader.stop()
        if self.task is not None:
            self.task.cancel()


def _json(response: Any) -> Any:
    return json.loads(response.data or b"{}")


def create_pod(core: Any, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = _json(
        core.create_namespaced_pod(namespace, pod, _preload_content=False)
    )
    return answer


def delete_pod(core: Any, namespace: str, name: str, grace: int) -> None:
    core.delete_namespaced_pod(
        name,
        namespace,
        grace_period_seconds=grace,
        propagation_policy="Background",
        _preload_content=False,
    )


def list_pods(core: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    answer = _json(
        core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
    )
    return list(answer.get("items") or [])


def watch_pod(
    core: Any,
    namespace: str,
    name: str,
    version: str,
    feed: ThreadedReader[tuple[str, dict[str, Any]]],
) -> None:
    """Pod events until the pod is deleted or the reader stopped. An expired
    resourceVersion (410) is recovered by reading the pod; connection errors retry
    with backoff, up to 6 times in a row."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    failures = 0
    while not feed.stopped:
        watcher = watch.Watch()
        feed.set_interrupt(watcher.stop)
        try:
            kwargs: dict[str, Any] = {
                "field_selector": f"metadata.name={name}",
                "timeout_seconds": _WATCH_SECONDS,
                "deserialize": False,
            }
            if version:
                kwargs["resource_version"] = version
            for event in watcher.stream(core.list_namespaced_pod, namespace, **kwargs):
                failures = 0
                kind, pod = event.get("type"), event.get("object") or {}
                version = str((pod.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if not feed.put((str(kind), pod)) or kind == "DELETED":
                    return
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion is too old: start from now
                try:
                    pod = _json(core.read_namespaced_pod(name, namespace, _preload_content=False))
                except ApiException as gone:
                    if gone.status == 404:
                        feed.put(("DELETED", {}))
                        return
                    raise
                version = str(pod["metadata"]["resourceVersion"])
                if not feed.put(("MODIFIED", pod)):
                    return
                continue
            if exc.status == 404:
                feed.put(("DELETED", {}))
                return
            raise
        except Exception:
            if feed.stopped:
                return
            failures += 1
            if failures > 6:
                raise
            feed.pause(min(30.0, 0.5 * 2**failures))


def follow_log(
    core: Any, namespace: str, name: str, since: int | None, feed: ThreadedReader[bytes]
) -> None:
    kwargs: dict[str, Any] = {"container": MAIN_CONTAINER, "follow": True, "timestamps": True}
    if since is not None:
        kwargs["since_seconds"] = since
    response = core.read_namespaced_pod_log(name, namespace, _preload_content=False, **kwargs)
    feed.set_interrupt(partial(_shutdown, response))
    try:
        # read1: whatever has arrived (up to a chunk), so lines are not held back until
        # 64 KiB have accumulated; it handles chunked and plain bodies alike.
        while chunk := response.read1(CHUNK_SIZE):
            if not feed.put(chunk):
                return
    finally:
        response.release_conn()


def _shutdown(response: Any) -> None:
    import socket

    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
