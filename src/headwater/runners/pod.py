"""The pod runner: a step as a Kubernetes pod, through the official Python client.

Per step: create the pod (``pod_spec.build_pod``: the step's image, env, command and
resources with the action's ``manifest`` merged in) in the worker's namespace, watch
it (a watch, not polling) until its ``main`` container runs, follow its log, read the
exit code from the container's terminated state, delete the pod.

Starting fails with a clear error when the pod cannot start: at once for a waiting
reason that never recovers (``InvalidImageName``, ``CreateContainerConfigError``…),
after ``image_pull_grace`` of ``ErrImagePull``/``ImagePullBackOff``, and after
``start_timeout`` otherwise (still unscheduled: the scheduler's message is included).
Timeout and cancel delete the pod with ``kill_grace`` as its grace period (the kubelet
sends SIGTERM, waits, then SIGKILL) and drain the log; the pod is deleted in every
case. A ``die_with_parent`` step also gets a watchdog process (see
``headwater.runners.watchdog``). Logs: see ``headwater.runners.pod_logs``.

Secrets: the rendered env is part of the pod spec (as with any pod, anyone allowed to
read pods in the namespace can read it); nothing here logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import structlog

from headwater.core.status import LogStream
from headwater.runners.base import LineSink, StepOutcome, StepResult, StepSpec
from headwater.runners.config import KubeConfig
from headwater.runners.containers import (
    HOST_LABEL,
    MANAGED_LABEL,
    WORKER_LABEL,
    StartError,
    check_image_spec,
    object_name,
    seconds,
)
from headwater.runners.identity import ProcessIdentity
from headwater.runners.lines import LineSplitter, decode_line
from headwater.runners.pod_api import (
    PodWatch,
    create_pod,
    delete_pod,
    follow_log,
    list_pods,
    watch_pod,
)
from headwater.runners.pod_logs import LogCursor
from headwater.runners.pod_spec import (
    MAIN_CONTAINER,
    PULL_WAITING,
    TERMINAL_WAITING,
    PodState,
    build_pod,
    label_value,
    pod_state,
    privileged_problem,
)
from headwater.runners.threads import (
    ApiThreads,
    Reason,
    ThreadedReader,
    drain,
    first_of,
    shielded,
    stopped_result,
)
from headwater.runners.watchdog import CleanupOrder, Watchdog

__all__ = ["PodRunner"]

log = structlog.get_logger(__name__)

_STOP_WAIT = 30.0  # after the grace period, wait this long for the container to end
_LIVELY_STREAM = 10.0  # a log stream open this long was following a running container


class PodRunner:
    """Runs image steps as Kubernetes pods. Implements ``Runner``."""

    def __init__(
        self,
        config: KubeConfig | None = None,
        *,
        identity: ProcessIdentity | None = None,
        eof_grace: float = 0.5,
        eof_recheck: float = 2.0,
    ) -> None:
        """``eof_recheck``: after a log ends, how long to wait for the exit status before
        following the log again (the kubelet reports an exit a second or so after the
        log ends; a log that ended while the container runs on is a broken stream)."""
        self.config = config or KubeConfig()
        self.identity = identity or ProcessIdentity.current()
        self._eof_grace = eof_grace
        self._eof_recheck = eof_recheck
        self._threads = ApiThreads(self.config.api_threads, "headwater-kube")
        self._core: Any = None
        self._namespace = ""
        self._lock = asyncio.Lock()

    async def core(self) -> tuple[Any, str]:
        """The ``CoreV1Api`` and the namespace, set up on first use."""
        async with self._lock:
            if self._core is None:

                def connect() -> tuple[Any, str]:
                    from kubernetes.client import CoreV1Api

                    return CoreV1Api(self.config.api_client()), self.config.resolve_namespace()

                self._core, self._namespace = await self._threads.call(connect)
            return self._core, self._namespace

    async def aclose(self) -> None:
        if self._core is not None:
            with contextlib.suppress(Exception):
                self._core.api_client.close()
        self._threads.close()

    # -- a step --------------------------------------------------------------------------
    async def run(self, spec: StepSpec, sink: LineSink, cancel: asyncio.Event) -> StepResult:
        check_image_spec(spec, "pod")
        if cancel.is_set():
            return StepResult(StepOutcome.CANCELLED, None, "cancelled before it started")
        loop = asyncio.get_running_loop()
        deadline = None if spec.timeout is None else loop.time() + spec.timeout
        name = object_name(spec.job_id, spec.step)
        try:
            pod = build_pod(spec, self.identity, name)
        except StartError as exc:
            return StepResult(StepOutcome.FAILED, None, str(exc))
        problem = _pod_problem(pod, self.config)
        if problem is not None:
            return StepResult(StepOutcome.FAILED, None, problem)
        core: Any = None
        namespace = ""
        created = False
        watch: PodWatch | None = None
        watchdog: Watchdog | None = None
        try:
            core, namespace = await self.core()
        except Exception as exc:
            # A missing or broken kubeconfig, an unreadable service account token...
            error = f"cannot use the Kubernetes configuration at {self.config.where}: {exc}"
            return StepResult(StepOutcome.FAILED, None, error)
        try:
            try:
                answer = await self._threads.call(create_pod, core, namespace, pod)
            except Exception as exc:
                if not _is_api_error(exc):
                    raise
                return StepResult(StepOutcome.FAILED, None, self._describe(exc))
            created = True
            log.info(
                "pod_created", pod=name, namespace=namespace, job_id=spec.job_id, step=spec.step
            )
            if spec.die_with_parent:
                order = CleanupOrder(
                    "pod", name, self.config.to_json(), namespace, grace=spec.kill_grace
                )
                try:
                    watchdog = Watchdog.start(order)
                except OSError as exc:  # the step must not run unguarded
                    error = f"cannot start the watchdog of a long-running step: {exc}"
                    return StepResult(StepOutcome.FAILED, None, error)
            version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
            watch = PodWatch(
                ThreadedReader(
                    partial(watch_pod, core, namespace, name, version),
                    name=f"headwater-watch-{name}",
                    maxsize=16,
                ),
                pod_state(answer),
            )
            watch.start()
            started = await self._wait_started(watch, name, spec, cancel, deadline)
            if started is not None:
                return started
            return await self._supervise(core, namespace, name, watch, spec, sink, cancel, deadline)
        finally:
            if watch is not None:
                watch.stop()
            if created:
                await shielded(self._delete(core, namespace, name, spec.kill_grace))
            if watchdog is not None:
                await shielded(watchdog.release())

    async def _wait_started(
        self,
        watch: PodWatch,
        name: str,
        spec: StepSpec,
        cancel: asyncio.Event,
        deadline: float | None,
    ) -> StepResult | None:
        """None once the main container runs (or already ended); else the result."""
        loop = asyncio.get_running_loop()
        start_by = loop.time() + self.config.start_timeout
        pull_failing_since: float | None = None
        while True:
            state = watch.state
            if state.started or state.finished:
                return None
            if watch.error is not None:
                return StepResult(StepOutcome.FAILED, None, self._lost(name, watch.error))
            if watch.gone:
                return StepResult(
                    StepOutcome.FAILED, None, f"pod {name} was deleted before it started"
                )
            now = loop.time()
            wake = start_by
            if state.waiting is not None:
                reason, message = state.waiting
                if reason in TERMINAL_WAITING:
                    return StepResult(
                        StepOutcome.FAILED, None, f"pod {name} cannot start: {reason}: {message}"
                    )
                if reason in PULL_WAITING:
                    pull_failing_since = pull_failing_since or now
                    give_up = pull_failing_since + self.config.image_pull_grace
                    if now >= give_up:
                        return StepResult(
                            StepOutcome.FAILED,
                            None,
                            f"pod {name} cannot pull image {spec.image!r}: {reason}: {message}",
                        )
                    wake = min(wake, give_up)
            else:
                pull_failing_since = None
            if now >= start_by:
                return StepResult(StepOutcome.FAILED, None, _not_started(name, state, self.config))
            seen = state
            stopped = await watch.until(
                lambda: watch.state is not seen,  # noqa: B023 - awaited at once, not kept
                cancel,
                deadline,
                timeout=wake - now,
            )
            if stopped is not None:
                return stopped_result(stopped, spec, None, " while the pod was starting")

    async def _supervise(
        self,
        core: Any,
        namespace: str,
        name: str,
        watch: PodWatch,
        spec: StepSpec,
        sink: LineSink,
        cancel: asyncio.Event,
        deadline: float | None,
    ) -> StepResult:
        loop = asyncio.get_running_loop()
        cursor = LogCursor(spec.max_line_bytes)
        quiet_since: float | None = None  # the log ended, and no exit status since
        while True:
            logs: ThreadedReader[bytes] = ThreadedReader(
                partial(follow_log, core, namespace, name, cursor.since_seconds(time.time())),
                name=f"headwater-log-{name}",
            )
            logs.start()
            following_since = loop.time()
            errors: list[BaseException] = []
            pump = asyncio.ensure_future(_pump_log(logs, cursor, sink, errors))
            lines_before = cursor.lines
            try:
                reason = await first_of(pump, cancel, deadline)
                if reason is not Reason.EXIT:
                    return await self._stop(core, namespace, name, watch, pump, logs, reason, spec)
                pump.result()  # a sink error is the caller's: re-raise it
            except BaseException:
                pump.cancel()
                logs.stop()
                raise
            logs.stop()
            # New lines, or a stream that stayed open a while, mean the container was
            # running; a log that keeps ending at once means it is over.
            lively = loop.time() - following_since >= _LIVELY_STREAM
            if cursor.lines > lines_before or lively or quiet_since is None:
                quiet_since = loop.time()
            stopped = await watch.until(
                lambda: watch.state.finished, cancel, deadline, timeout=self._eof_recheck
            )
            if stopped is not None:
                return await self._stop(core, namespace, name, watch, None, None, stopped, spec)
            state = watch.state
            if state.finished:
                return _exit_result(name, state)
            if watch.error is not None:
                return StepResult(StepOutcome.FAILED, None, self._lost(name, watch.error))
            if watch.gone:
                return StepResult(StepOutcome.FAILED, None, f"pod {name} was deleted while running")
            if loop.time() - quiet_since >= self.config.exit_status_timeout:
                error = errors[0] if errors else None
                why = f" ({self._describe(error)})" if error is not None else ""
                return StepResult(
                    StepOutcome.FAILED,
                    None,
                    f"pod {name}: its log ended but Kubernetes reported no exit status within"
                    f" {self.config.exit_status_timeout:g}s{why}",
                )
            # The log stream broke while the container runs on: follow it again.
            cursor.reconnect()
            log.info("pod_log_reconnect", pod=name, error=str(errors[0]) if errors else None)

    async def _stop(
        self,
        core: Any,
        namespace: str,
        name: str,
        watch: PodWatch,
        pump: asyncio.Future[None] | None,
        logs: ThreadedReader[bytes] | None,
        reason: Reason,
        spec: StepSpec,
    ) -> StepResult:
        await self._delete(core, namespace, name, spec.kill_grace)
        await watch.until(
            lambda: watch.state.finished, asyncio.Event(), None, spec.kill_grace + _STOP_WAIT
        )
        if pump is not None and logs is not None:
            await drain(pump, logs, self._eof_grace)
            pump.result()
        return stopped_result(reason, spec, watch.state.exit_code)

    async def _delete(self, core: Any, namespace: str, name: str, grace: float) -> None:
        try:
            await self._threads.call(delete_pod, core, namespace, name, seconds(grace))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return
            log.error("pod_delete_failed", pod=name, namespace=namespace, error=str(exc))

    # -- orphans -------------------------------------------------------------------------
    async def sweep_orphans(self) -> int:
        """Delete the pods that headwater processes of this host, now gone, left behind."""
        core, namespace = await self.core()
        selector = f"{MANAGED_LABEL}=true,{HOST_LABEL}={label_value(self.identity.host)}"
        found = await self._threads.call(list_pods, core, namespace, selector)
        removed = 0
        for pod in found:
            metadata = pod.get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            owner = ProcessIdentity.parse(str(annotations.get(WORKER_LABEL, "")))
            if owner is None or not owner.is_gone(self.identity):
                continue
            await self._delete(core, namespace, str(metadata.get("name")), 0)
            log.warning("orphan_pod_deleted", pod=metadata.get("name"), owner=owner.token)
            removed += 1
        return removed

    def _lost(self, name: str, error: BaseException) -> str:
        return f"lost track of pod {name}: {self._describe(error)}"

    def _describe(self, exc: BaseException) -> str:
        status = getattr(exc, "status", None)
        if isinstance(status, int) and hasattr(exc, "body"):
            message = getattr(exc, "reason", "") or ""
            with contextlib.suppress(Exception):
                message = json.loads(exc.body).get("message") or message
            return f"Kubernetes API ({status}): {message}"
        return f"cannot reach the Kubernetes API at {self.config.where}: {exc}"


def _pod_problem(pod: Mapping[str, Any], config: KubeConfig) -> str | None:
    containers = (pod.get("spec") or {}).get("containers") or []
    main = next((c for c in containers if c.get("name") == MAIN_CONTAINER), None)
    if main is None or not main.get("image"):
        return (
            "the manifest replaced the step's container: give each container in"
            " `spec.containers` a `name` (`main` is the step's own)"
        )
    if not config.allow_privileged:
        problem = privileged_problem(pod)
        if problem is not None:
            return (
                f"the pod would get access to its node through {problem}; this worker's"
                " pod runner does not allow that (KubeConfig.allow_privileged)"
            )
    return None


def _not_started(name: str, state: PodState, config: KubeConfig) -> str:
    limit = f"{config.start_timeout:g}s (HEADWATER_POD_START_TIMEOUT)"
    if state.unschedulable is not None:
        return f"pod {name} was not scheduled within {limit}: {state.unschedulable}"
    return f"pod {name} did not start within {limit} (phase {state.phase})"


def _exit_result(name: str, state: PodState) -> StepResult:
    code = state.exit_code
    if code == 0 or (code is None and state.phase == "Succeeded"):
        return StepResult(StepOutcome.SUCCEEDED, 0)
    if code is None:
        why = state.reason or "no reason given"
        return StepResult(StepOutcome.FAILED, None, f"pod {name} failed: {why}")
    reason = f" ({state.reason})" if state.reason and state.reason != "Error" else ""
    if state.reason == "OOMKilled":
        reason = " (out of memory: the container reached its memory limit)"
    return StepResult(StepOutcome.FAILED, code, f"exit code {code}{reason}")


def _is_api_error(exc: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException, OpenApiException
    from urllib3.exceptions import HTTPError

    return isinstance(exc, ApiException | OpenApiException | HTTPError | OSError)


async def _pump_log(
    logs: ThreadedReader[bytes], cursor: LogCursor, sink: LineSink, errors: list[BaseException]
) -> None:
    """Lines to the sink until the stream ends; a stream error is kept in ``errors``
    (the caller decides whether to follow again), a sink error propagates."""
    splitter = LineSplitter(cursor.max_raw)
    while True:
        try:
            chunk = await logs.get()
        except Exception as exc:
            errors.append(exc)
            break
        if chunk is None:
            break
        for raw, truncated in splitter.feed(chunk):
            await _emit(cursor, sink, raw, truncated)
    for raw, truncated in splitter.close():
        await _emit(cursor, sink, raw, truncated)


async def _emit(cursor: LogCursor, sink: LineSink, raw: bytes, truncated: bool) -> None:
    accepted = cursor.accept(raw, truncated)
    if accepted is not None:
        content, cut = accepted
        await sink(LogStream.STDOUT, decode_line(content, cut), cut)
