"""A fake Kubernetes API server (core/v1 pods) for the pod runner's tests.

Shapes follow the Kubernetes API reference (Pod, PodList, Status, WatchEvent): create
answers 201 with the pod (uid, resourceVersion, phase Pending); a watch
(``?watch=true&fieldSelector=metadata.name=X``) is a chunked stream of
``{"type": ..., "object": pod}`` lines from the given resourceVersion on; the log
(``/pods/X/log?follow=true&timestamps=true``) is a chunked stream of
``<RFC3339Nano> <line>\\n``; delete sets ``deletionTimestamp``, lets the container end
(exit 143) and then sends DELETED. A fake kubelet moves each pod along a ``PodScript``.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fake_http import FakeApi, Reply, Request

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def rfc3339nano(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond * 1000:09d}Z"


def waiting(reason: str, message: str) -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


@dataclass
class PodScript:
    # Container states shown while Pending, in order, before the container runs.
    pending: list[dict[str, Any]] = field(default_factory=list)
    stay_pending: bool = False  # never start (ImagePullBackOff, unschedulable...)
    unschedulable: str | None = None  # a PodScheduled=False condition with this message
    lines: list[str] = field(default_factory=list)
    exit_code: int | None = 0  # None: run until deleted
    reason: str | None = None  # termination reason (OOMKilled...)
    break_log_after: int | None = None  # drop the follow connection after N lines, once
    lines_on_delete: list[str] = field(default_factory=list)
    report_exit: bool = True  # False: the status never shows the termination


@dataclass
class Pod:
    name: str
    namespace: str
    body: dict[str, Any]
    script: PodScript
    started: threading.Event = field(default_factory=threading.Event)
    deleted: threading.Event = field(default_factory=threading.Event)
    log: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, line)
    log_done: threading.Event = field(default_factory=threading.Event)
    log_changed: threading.Condition = field(default_factory=threading.Condition)
    broke_log: bool = False


class FakeKubeApi(FakeApi):
    def __init__(self) -> None:
        self.script = PodScript()
        self.pods: dict[tuple[str, str], Pod] = {}
        self.extra_pods: list[dict[str, Any]] = []  # listed by label selector
        self._rv = 100
        self._events: list[tuple[int, str, str, dict[str, Any]]] = []  # rv, ns/name, type, obj
        self._changed = threading.Condition()
        self._clock = T0
        super().__init__()

    # -- helpers for tests ---------------------------------------------------------------
    def only(self) -> Pod:
        (pod,) = self.pods.values()
        return pod

    def created_body(self) -> dict[str, Any]:
        (request,) = self.calls(lambda r: r.method == "POST" and r.path.endswith("/pods"))
        assert isinstance(request.body, dict)
        return request.body

    # -- state ---------------------------------------------------------------------------
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _publish(self, pod: Pod, kind: str, status: dict[str, Any] | None = None) -> None:
        with self._changed:
            if status is not None:
                pod.body["status"] = status
            rv = self._next_rv()
            pod.body["metadata"]["resourceVersion"] = str(rv)
            self._events.append((rv, f"{pod.namespace}/{pod.name}", kind, copy.deepcopy(pod.body)))
            self._changed.notify_all()

    def _status(
        self, phase: str, state: dict[str, Any], pod: Pod, conditions: list[Any] | None = None
    ) -> dict[str, Any]:
        return {
            "phase": phase,
            "conditions": conditions or [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "main",
                    "image": pod.body["spec"]["containers"][0]["image"],
                    "ready": "running" in state,
                    "restartCount": 0,
                    "state": state,
                }
            ],
            "qosClass": "Burstable",
        }

    def _line(self, pod: Pod, text: str) -> None:
        with pod.log_changed:
            self._clock += timedelta(milliseconds=1)
            pod.log.append((rfc3339nano(self._clock), text))
            pod.log_changed.notify_all()

    def _kubelet(self, pod: Pod) -> None:
        script = pod.script
        if script.unschedulable is not None:
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": script.unschedulable,
            }
            self._publish(pod, "MODIFIED", {"phase": "Pending", "conditions": [condition]})
        for state in script.pending:
            self._publish(pod, "MODIFIED", self._status("Pending", state, pod))
        if script.stay_pending or script.unschedulable is not None:
            pod.deleted.wait(60)
            self._finish_delete(pod)
            return
        started = {"running": {"startedAt": "2025-03-01T12:00:00Z"}}
        self._publish(pod, "MODIFIED", self._status("Running", started, pod))
        pod.started.set()
        for text in script.lines:
            self._line(pod, text)
        if script.exit_code is None:
            pod.deleted.wait(60)
            for text in script.lines_on_delete:
                self._line(pod, text)
            code, reason = 143, "Error"
        else:
            code = script.exit_code
            reason = script.reason or ("Completed" if code == 0 else "Error")
        with pod.log_changed:
            pod.log_done.set()
            pod.log_changed.notify_all()
        if script.report_exit or pod.deleted.is_set():
            terminated = {"terminated": {"exitCode": code, "reason": reason}}
            phase = "Succeeded" if code == 0 else "Failed"
            self._publish(pod, "MODIFIED", self._status(phase, terminated, pod))
        pod.deleted.wait(60)
        self._finish_delete(pod)

    def _finish_delete(self, pod: Pod) -> None:
        with pod.log_changed:
            pod.log_done.set()
            pod.log_changed.notify_all()
        self._publish(pod, "DELETED")
        self.pods.pop((pod.namespace, pod.name), None)

    # -- the API -------------------------------------------------------------------------
    def handle(self, request: Request, reply: Reply) -> None:
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(?:/(log))?", request.path)
        if m is None:
            reply.json(
                404, api_status(404, "NotFound", f"the server could not find {request.path}")
            )
            return
        namespace, name, sub = m.groups()
        if name is None:
            if request.method == "POST":
                self._create(namespace, request, reply)
            elif request.query.get("watch") in ("true", "True", "1"):
                self._watch(namespace, request, reply)
            else:
                self._list(namespace, request, reply)
            return
        pod = self.pods.get((namespace, name))
        if pod is None:
            reply.json(404, api_status(404, "NotFound", f'pods "{name}" not found'))
            return
        if sub == "log":
            self._log(pod, request, reply)
        elif request.method == "DELETE":
            self._delete(pod, request, reply)
        else:
            reply.json(200, pod.body)

    def _create(self, namespace: str, request: Request, reply: Reply) -> None:
        body = copy.deepcopy(request.body)
        name = body["metadata"]["name"]
        body["metadata"].update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp="2025-03-01T12:00:00Z",
        )
        body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        pod = Pod(name, namespace, body, self.script)
        self.pods[(namespace, name)] = pod
        with self._changed:
            rv = self._next_rv()
            body["metadata"]["resourceVersion"] = str(rv)
            self._events.append((rv, f"{namespace}/{name}", "ADDED", copy.deepcopy(body)))
        reply.json(201, body)
        threading.Thread(target=self._kubelet, args=(pod,), daemon=True).start()

    def _watch(self, namespace: str, request: Request, reply: Reply) -> None:
        selector = request.query.get("fieldSelector", "")
        wanted = selector.removeprefix("metadata.name=")
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 30)
        key = f"{namespace}/{wanted}"

        def events() -> Iterator[bytes]:
            position = since
            deadline = threading.Event()
            timer = threading.Timer(min(timeout, 30), deadline.set)
            timer.daemon = True
            timer.start()
            while not deadline.is_set():
                with self._changed:
                    fresh = [e for e in self._events if e[0] > position and e[1] == key]
                    if not fresh:
                        self._changed.wait(0.2)
                        continue
                for rv, _, kind, obj in fresh:
                    position = rv
                    yield json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                    if kind == "DELETED":
                        return

        reply.stream(200, "application/json", events())

    def _list(self, namespace: str, request: Request, reply: Reply) -> None:
        selector = request.query.get("labelSelector", "")
        wanted = dict(p.split("=", 1) for p in selector.split(",") if p)
        items = [*self.extra_pods, *(p.body for p in self.pods.values())]
        found = [
            i
            for i in items
            if all((i["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        reply.json(
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": found,
            },
        )

    def _log(self, pod: Pod, request: Request, reply: Reply) -> None:
        if not pod.started.is_set():
            reply.json(
                400,
                api_status(
                    400,
                    "BadRequest",
                    f'container "main" in pod "{pod.name}" is waiting to start: ContainerCreating',
                ),
            )
            return
        follow = request.query.get("follow") in ("true", "True", "1")
        stamps = request.query.get("timestamps") in ("true", "True", "1")
        since = request.query.get("sinceSeconds")

        def lines() -> Iterator[bytes]:
            position = 0
            if since is not None:  # relative to "now", the fake's clock
                cutoff = rfc3339nano(self._clock - timedelta(seconds=int(since)))
                position = sum(1 for ts, _ in pod.log if ts < cutoff)
            sent = 0
            while True:
                with pod.log_changed:
                    while position >= len(pod.log) and not pod.log_done.is_set() and follow:
                        pod.log_changed.wait(0.2)
                    fresh = pod.log[position:]
                    done = pod.log_done.is_set() or not follow
                for ts, text in fresh:
                    position += 1
                    yield (f"{ts} {text}\n" if stamps else f"{text}\n").encode()
                    sent += 1
                    brk = pod.script.break_log_after
                    if brk is not None and sent >= brk and not pod.broke_log:
                        pod.broke_log = True
                        return  # the connection drops while the container runs on
                if done and position >= len(pod.log):
                    return

        reply.stream(200, "text/plain", lines())

    def _delete(self, pod: Pod, request: Request, reply: Reply) -> None:
        pod.body["metadata"]["deletionTimestamp"] = "2025-03-01T12:05:00Z"
        grace = request.query.get("gracePeriodSeconds")
        if grace is not None:
            pod.body["metadata"]["deletionGracePeriodSeconds"] = int(grace)
        reply.json(200, pod.body)
        pod.deleted.set()


def api_status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
