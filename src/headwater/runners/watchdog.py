"""A container or pod that must not outlive its worker process (``die_with_parent``).

An event-source consumer runs for days; if its worker dies (``kill -9``, OOM), recovery
starts the consumer again elsewhere, and the old container must not keep consuming
next to it. The local runner asks the kernel (``PR_SET_PDEATHSIG``); a container lives
in the engine, so headwater uses two layers:

1. **A watchdog process per long-running step.** ``Watchdog.start`` spawns
   ``python -m headwater.runners.watchdog`` in its own session, with a pipe on its
   stdin and a cleanup order (which container or pod, how to reach the engine; no
   secrets) as the first line. The worker holds the other end of the pipe. When the
   step ends the worker writes ``release`` and the watchdog exits; when the worker
   dies the kernel closes the pipe, the watchdog reads EOF and removes the container
   (or deletes the pod). SIGTERM makes it act at once too (a service manager stopping
   everything).
2. **An orphan sweep when a worker starts** (``DockerRunner.sweep_orphans``,
   ``PodRunner.sweep_orphans``): whatever this host's dead headwater processes left
   behind (also when the watchdog was killed with them, e.g. by a cgroup kill) is
   removed. See ``headwater.runners.identity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import IO, Any

__all__ = ["CleanupOrder", "Watchdog", "main"]

_RELEASE = b"release\n"


@dataclass(frozen=True, slots=True)
class CleanupOrder:
    kind: str  # "docker" or "pod"
    target: str  # container id, or pod name
    connection: Mapping[str, Any]  # DockerConfig.to_json() / KubeConfig.to_json()
    namespace: str | None = None
    grace: float = 5.0

    def to_line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> CleanupOrder:
        return cls(**json.loads(line))


class Watchdog:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    def start(cls, order: CleanupOrder) -> Watchdog:
        # Its own session: a Ctrl-C to the worker's process group must not take the
        # watchdog with it before it has done its job.
        process = subprocess.Popen(
            [sys.executable, "-m", "headwater.runners.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=None,
            start_new_session=True,
            close_fds=True,
        )
        assert process.stdin is not None
        try:
            process.stdin.write(order.to_line())
            process.stdin.flush()
        except OSError:
            process.kill()
            process.wait()
            raise
        return cls(process)

    async def release(self) -> None:
        """The step is over and cleaned up: let the watchdog go without acting."""
        stdin = self._process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                stdin.write(_RELEASE)
                stdin.close()
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wait() -> None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, done)

        threading.Thread(target=wait, name=f"headwater-watchdog-{self.pid}", daemon=True).start()
        await done


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _cleanup(order: CleanupOrder) -> None:
    from headwater.runners.containers import seconds

    if order.kind == "docker":
        from headwater.runners.config import DockerConfig

        client = DockerConfig.from_json(order.connection).client()
        with contextlib.suppress(Exception):
            client.api.stop(order.target, timeout=seconds(order.grace))
        client.api.remove_container(order.target, force=True, v=True)
    elif order.kind == "pod":
        from kubernetes.client import CoreV1Api

        from headwater.runners.config import KubeConfig

        config = KubeConfig.from_json(order.connection)
        core = CoreV1Api(config.api_client())
        core.delete_namespaced_pod(
            order.target,
            order.namespace or config.resolve_namespace(),
            grace_period_seconds=seconds(order.grace),
            _preload_content=False,
        )


def _act(order: CleanupOrder, why: str) -> int:
    try:
        _cleanup(order)
    except Exception as exc:
        status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
        if status == 404:
            return 0  # already gone
        _say(f"{why}; could not remove {order.kind} {order.target}: {exc}")
        return 1
    _say(f"{why}; removed {order.kind} {order.target}")
    return 0


def _say(text: str) -> None:
    # stderr is the worker's, which may be a pipe nobody reads any more.
    with contextlib.suppress(OSError, ValueError):
        print(f"headwater watchdog: {text}", file=sys.stderr, flush=True)


def main(stdin: IO[bytes] | None = None) -> int:
    stream = stdin if stdin is not None else sys.stdin.buffer
    first = stream.readline()
    if not first:
        return 0  # the worker died before giving an order: nothing to clean up
    order = CleanupOrder.from_line(first)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(_act(order, "stopped"))

    signal.signal(signal.SIGTERM, on_term)
    line = stream.readline()
    if line == _RELEASE:
        return 0
    return _act(order, "the worker process is gone")


if __name__ == "__main__":
    sys.exit(main())
