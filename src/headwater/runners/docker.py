"""The docker runner: a step as a container on a Docker engine, through the Docker SDK.

Per step: create the container (pulling the image first when the engine lacks it and
the pull policy allows), attach to its output *before* starting it (so no line is
missed), start it, hand each stdout/stderr line to the sink, read the exit status,
remove the container. The attach stream is read by a ``ThreadedReader``: while the
sink is slow the socket is not read, and since an attached stream is unbuffered in the
engine, the container blocks in ``write`` — the same backpressure as a local pipe.

Timeout and cancel stop the container the way ``docker stop`` does (its stop signal,
``kill_grace`` seconds, then SIGKILL, all done by the engine), drain the output that is
left, and remove it. The container is removed in every case: success, failure,
timeout, cancel, a sink error, the caller's own cancellation. A ``die_with_parent``
step (an event-source consumer) also gets a watchdog process that removes the
container if this worker dies (see ``headwater.runners.watchdog``), and
``sweep_orphans`` removes what dead workers of this host left behind.

Secrets: the env (which may hold rendered secrets) goes into the create request only;
nothing here logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import tarfile
from functools import partial
from typing import Any

import structlog

from headwater.core.status import LogStream
from headwater.runners.base import LineSink, StepOutcome, StepResult, StepSpec
from headwater.runners.config import DockerConfig, PullPolicy
from headwater.runners.container_files import (
    CopyOutError,
    pack_folders,
    read_limited,
    unpack_folder,
)
from headwater.runners.containers import (
    HOST_LABEL,
    MANAGED_LABEL,
    WORKER_LABEL,
    StartError,
    check_image_spec,
    container_argv,
    object_name,
    seconds,
    step_env,
)
from headwater.runners.identity import ProcessIdentity
from headwater.runners.lines import CHUNK_SIZE
from headwater.runners.threads import (
    ApiThreads,
    Reason,
    ThreadedReader,
    drain,
    first_of,
    in_thread,
    pump_lines,
    shielded,
    stopped_result,
)
from headwater.runners.watchdog import CleanupOrder, Watchdog
from headwater.workspace.quantities import cpu_nanos, memory_bytes

__all__ = ["DockerRunner", "container_request"]

log = structlog.get_logger(__name__)

_KILL_WAIT = 30  # seconds to wait for the exit after SIGKILL
# Outcomes after which the step's process ran to its end (its folders are worth keeping).
_RAN = frozenset({StepOutcome.SUCCEEDED, StepOutcome.FAILED})


class _PullError(Exception):
    pass


def container_request(
    spec: StepSpec, identity: ProcessIdentity, config: DockerConfig, name: str
) -> dict[str, Any]:
    """Keyword arguments of ``APIClient.create_container`` for ``spec`` (``host_config``
    as the keyword arguments of ``create_host_config``). Raises ``StartError``."""
    entrypoint, cmd = container_argv(spec)
    host_config: dict[str, Any] = {"init": config.init}
    if spec.resources:
        try:
            if "memory" in spec.resources:
                host_config["mem_limit"] = memory_bytes(spec.resources["memory"])
            if "cpu" in spec.resources:
                host_config["nano_cpus"] = cpu_nanos(spec.resources["cpu"])
        except ValueError as exc:
            raise StartError(f"resources: {exc}") from None
    labels = {
        **spec.labels,
        MANAGED_LABEL: "true",
        HOST_LABEL: identity.host,
        WORKER_LABEL: identity.token,
    }
    return {
        "image": spec.image,
        "name": name,
        "entrypoint": list(entrypoint) if entrypoint is not None else None,
        "command": list(cmd) if cmd is not None else None,
        "environment": [f"{key}={value}" for key, value in step_env(spec).items()],
        "labels": labels,
        "host_config": host_config,
        "stdin_open": False,
        "tty": False,
        "detach": True,
    }


class DockerRunner:
    """Runs image steps as Docker containers. Implements ``Runner``."""

    def __init__(
        self,
        config: DockerConfig | None = None,
        *,
        identity: ProcessIdentity | None = None,
        eof_grace: float = 0.5,
    ) -> None:
        self.config = config or DockerConfig()
        self.identity = identity or ProcessIdentity.current()
        self._eof_grace = eof_grace
        self._threads = ApiThreads(self.config.api_threads, "headwater-docker")
        self._api: Any = None
        self._api_lock = asyncio.Lock()

    async def api(self) -> Any:
        """The SDK's ``APIClient``, created on first use (it asks the engine its version)."""
        async with self._api_lock:
            if self._api is None:
                client = await self._threads.call(self.config.client)
                self._api = client.api
            return self._api

    async def aclose(self) -> None:
        if self._api is not None:
            with contextlib.suppress(Exception):
                self._api.close()
        self._threads.close()

    # -- a step --------------------------------------------------------------------------
    async def run(self, spec: StepSpec, sink: LineSink, cancel: asyncio.Event) -> StepResult:
        check_image_spec(spec, "docker")
        if cancel.is_set():
            return StepResult(StepOutcome.CANCELLED, None, "cancelled before it started")
        loop = asyncio.get_running_loop()
        deadline = None if spec.timeout is None else loop.time() + spec.timeout
        try:
            request = container_request(
                spec, self.identity, self.config, object_name(spec.job_id, spec.step)
            )
        except StartError as exc:
            return StepResult(StepOutcome.FAILED, None, str(exc))
        container: str | None = None
        reader: ThreadedReader[tuple[LogStream, bytes]] | None = None
        watchdog: Watchdog | None = None
        api: Any = None
        try:
            api = await self.api()
        except Exception as exc:
            if not _is_api_error(exc):
                raise
            reason = f"cannot reach the Docker engine at {self.config.where}: {_root_cause(exc)}"
            return StepResult(StepOutcome.FAILED, None, reason)
        try:
            try:
                created = await self._create(api, request, spec, sink, cancel, deadline)
                if isinstance(created, StepResult):
                    return created
                container = created
                if spec.die_with_parent:
                    order = CleanupOrder(
                        "docker", container, self.config.to_json(), grace=spec.kill_grace
                    )
                    watchdog = _start_watchdog(order)
                sock = await self._threads.call(
                    api.attach_socket,
                    container,
                    params={"stdout": 1, "stderr": 1, "stream": 1, "logs": 1},
                )
                reader = ThreadedReader(
                    partial(_read_frames, sock),
                    name=f"headwater-docker-{container[:12]}",
                    interrupt=partial(_shutdown, sock),
                )
                reader.start()
                if spec.copy_in:  # Strøm's folders exist whatever the image holds
                    await self._threads.call(
                        api.put_archive, container, "/", pack_folders(spec.copy_in)
                    )
                await self._threads.call(api.start, container)
            except StartError as exc:
                return StepResult(StepOutcome.FAILED, None, str(exc))
            except Exception as exc:
                if not _is_api_error(exc):
                    raise
                return StepResult(StepOutcome.FAILED, None, self._describe(exc))
            log.info(
                "container_started",
                container=container[:12],
                image=spec.image,
                job_id=spec.job_id,
                step=spec.step,
            )
            result = await self._supervise(api, container, reader, spec, sink, cancel, deadline)
            if spec.copy_out and result.exit_code is not None and result.outcome in _RAN:
                return await self._copy_out(api, container, spec, result)
            return result
        finally:
            if reader is not None:
                reader.stop()
            if container is not None:
                await shielded(self._remove(api, container))
            if watchdog is not None:
                await shielded(watchdog.release())

    async def _create(
        self,
        api: Any,
        request: dict[str, Any],
        spec: StepSpec,
        sink: LineSink,
        cancel: asyncio.Event,
        deadline: float | None,
    ) -> str | StepResult:
        import docker.errors

        policy = self.config.pull
        if policy is PullPolicy.ALWAYS:
            pulled = await self._pull(api, spec, sink, cancel, deadline)
            if pulled is not None:
                return pulled
        kwargs = {**request, "host_config": api.create_host_config(**request["host_config"])}
        try:
            created = await self._threads.call(api.create_container, **kwargs)
        except docker.errors.ImageNotFound:
            if policy is not PullPolicy.MISSING:
                return StepResult(
                    StepOutcome.FAILED,
                    None,
                    f"image {spec.image!r} is not on the Docker engine and the pull policy is"
                    f" {policy.value} (HEADWATER_DOCKER_PULL)",
                )
            pulled = await self._pull(api, spec, sink, cancel, deadline)
            if pulled is not None:
                return pulled
            created = await self._threads.call(api.create_container, **kwargs)
        return str(created["Id"])

    async def _pull(
        self,
        api: Any,
        spec: StepSpec,
        sink: LineSink,
        cancel: asyncio.Event,
        deadline: float | None,
    ) -> StepResult | None:
        """Pull ``spec.image``; a result when the step must end instead."""
        await sink(LogStream.STDERR, f"headwater: pulling image {spec.image}", False)

        def pull() -> None:
            for event in api.pull(spec.image, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise _PullError(str(event["error"]))

        # Its own thread: a pull can take minutes, and the engine goes on with it anyway.
        pulling = asyncio.ensure_future(in_thread(pull, "headwater-docker-pull"))
        reason = await first_of(pulling, cancel, deadline)
        if reason is not Reason.EXIT:
            pulling.add_done_callback(lambda f: f.exception())  # nobody awaits it now
            return stopped_result(reason, spec, None, " while pulling the image")
        try:
            pulling.result()
        except Exception as exc:
            if not isinstance(exc, _PullError) and not _is_api_error(exc):
                raise
            detail = exc if isinstance(exc, _PullError) else self._describe(exc)
            message = f"cannot pull image {spec.image!r}: {detail}"
            return StepResult(StepOutcome.FAILED, None, message)
        return None

    async def _supervise(
        self,
        api: Any,
        container: str,
        reader: ThreadedReader[tuple[LogStream, bytes]],
        spec: StepSpec,
        sink: LineSink,
        cancel: asyncio.Event,
        deadline: float | None,
    ) -> StepResult:
        pump = asyncio.ensure_future(pump_lines(reader, sink, spec.max_line_bytes))
        try:
            reason = await first_of(pump, cancel, deadline)
            if reason is Reason.EXIT:
                pump.result()  # a sink error is the caller's: re-raise it
                # The output ended: the container exited (or the engine dropped the
                # stream, in which case this waits for the exit, still stoppable).
                waiting = asyncio.ensure_future(
                    in_thread(partial(api.wait, container, timeout=None), "headwater-docker-wait")
                )
                reason = await first_of(waiting, cancel, deadline)
                if reason is Reason.EXIT:
                    try:
                        status = waiting.result()
                    except Exception as exc:
                        if not _is_api_error(exc):
                            raise
                        return StepResult(StepOutcome.FAILED, None, self._describe(exc))
                    return await self._exit_result(api, container, int(status["StatusCode"]))
                waiting.add_done_callback(lambda f: f.exception())
            await self._stop(api, container, spec.kill_grace)
            await drain(pump, reader, self._eof_grace)
            pump.result()
            return stopped_result(reason, spec, await self._exit_code(api, container))
        except BaseException:
            pump.cancel()
            raise

    async def _copy_out(
        self, api: Any, container: str, spec: StepSpec, result: StepResult
    ) -> StepResult:
        """The step's output folders to their host folders (a failure fails the step)."""
        import docker.errors

        for path, host in spec.copy_out:
            try:
                stream, _ = await self._threads.call(api.get_archive, container, path)
                archive = await self._threads.call(read_limited, stream)
                await self._threads.call(unpack_folder, archive, host)
            except docker.errors.NotFound:
                continue  # the step removed it: nothing to keep
            except (CopyOutError, tarfile.TarError, OSError) as exc:
                reason = f"cannot copy {path} out of the container: {exc}"
                return StepResult(StepOutcome.FAILED, result.exit_code, reason)
            except Exception as exc:
                if not _is_api_error(exc):
                    raise
                reason = f"cannot copy {path} out of the container: {self._describe(exc)}"
                return StepResult(StepOutcome.FAILED, result.exit_code, reason)
        return result

    async def _exit_result(self, api: Any, container: str, code: int) -> StepResult:
        if code == 0:
            return StepResult(StepOutcome.SUCCEEDED, 0)
        error = f"exit code {code}"
        with contextlib.suppress(Exception):
            state = (await self._threads.call(api.inspect_container, container))["State"]
            if state.get("OOMKilled"):
                error += " (out of memory: the container reached its memory limit)"
        return StepResult(StepOutcome.FAILED, code, error)

    async def _stop(self, api: Any, container: str, grace: float) -> None:
        """``docker stop``: the stop signal, ``grace`` seconds, SIGKILL (done by the engine)."""
        import docker.errors

        try:
            await self._threads.call(api.stop, container, timeout=seconds(grace))
        except docker.errors.NotFound:
            return
        except Exception as exc:
            if not _is_api_error(exc):
                raise
            log.warning("container_stop_failed", container=container[:12], error=str(exc))
            with contextlib.suppress(Exception):
                await self._threads.call(api.kill, container)
        with contextlib.suppress(Exception):
            await self._threads.call(api.wait, container, timeout=_KILL_WAIT)

    async def _exit_code(self, api: Any, container: str) -> int | None:
        try:
            state = (await self._threads.call(api.inspect_container, container))["State"]
        except Exception:
            return None
        if state.get("Running"):
            return None
        code = state.get("ExitCode")
        return int(code) if isinstance(code, int) else None

    async def _remove(self, api: Any, container: str) -> None:
        import docker.errors

        try:
            await self._threads.call(api.remove_container, container, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:
            # The next start of a worker on this host removes it (sweep_orphans) once
            # this process is gone; until then `docker ps -a --filter label=headwater.managed`.
            log.error("container_remove_failed", container=container[:12], error=str(exc))

    # -- orphans -------------------------------------------------------------------------
    async def sweep_orphans(self) -> int:
        """Remove the containers that headwater processes of this host, now gone, left
        behind; returns how many."""
        api = await self.api()
        filters = {"label": [f"{MANAGED_LABEL}=true", f"{HOST_LABEL}={self.identity.host}"]}
        found = await self._threads.call(api.containers, all=True, filters=filters)
        removed = 0
        for item in found:
            owner = ProcessIdentity.parse(str((item.get("Labels") or {}).get(WORKER_LABEL, "")))
            if owner is None or not owner.is_gone(self.identity):
                continue
            await self._remove(api, str(item["Id"]))
            log.warning(
                "orphan_container_removed", container=str(item["Id"])[:12], owner=owner.token
            )
            removed += 1
        return removed

    def _describe(self, exc: BaseException) -> str:
        import docker.errors
        import requests

        if isinstance(exc, requests.exceptions.ConnectionError):
            return f"cannot reach the Docker engine at {self.config.where}: {_root_cause(exc)}"
        if isinstance(exc, docker.errors.APIError):
            return f"Docker engine: {exc.explanation or exc}"
        return f"Docker engine: {exc}"


def _start_watchdog(order: CleanupOrder) -> Watchdog:
    try:
        return Watchdog.start(order)
    except OSError as exc:  # out of processes or memory: the step must not run unguarded
        raise StartError(f"cannot start the watchdog of a long-running step: {exc}") from None


def _is_api_error(exc: BaseException) -> bool:
    import docker.errors
    import requests

    return isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException)


def _root_cause(exc: BaseException) -> str:
    """The operating system's reason under the SDK's and urllib3's wrappers, if any
    ("[Errno 111] Connection refused"), else the error itself."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and type(item).__module__ == "builtins":
            return str(item)
        todo.extend((item.__cause__, item.__context__, getattr(item, "reason", None), *item.args))
    return str(exc)


def _read_frames(sock: Any, feed: ThreadedReader[tuple[LogStream, bytes]]) -> None:
    """The attach stream's frames (an 8-byte header: stream id, size) as bounded chunks."""
    from docker.utils.socket import SocketError, read, read_exactly

    try:
        while True:
            try:
                header = read_exactly(sock, 8)
            except SocketError:
                return  # end of the stream
            stream_id, size = struct.unpack(">BxxxL", header)
            stream = LogStream.STDERR if stream_id == 2 else LogStream.STDOUT
            while size > 0:
                data = read(sock, min(size, CHUNK_SIZE))
                if data is None:
                    continue  # EINTR and friends
                if not data:
                    return
                size -= len(data)
                if not feed.put((stream, data)):
                    return
    finally:
        # This thread owns the connection: hang up (the engine sees the end of the
        # attach) and let the response go.
        _shutdown(sock)
        with contextlib.suppress(Exception):
            sock._response.close()


def _shutdown(sock: Any) -> None:
    """Wake a thread blocked reading ``sock`` (closing it from another thread would not)."""
    raw = getattr(sock, "_sock", sock)
    with contextlib.suppress(OSError, AttributeError):
        raw.shutdown(socket.SHUT_RDWR)
