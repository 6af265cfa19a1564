"""Start a child in its own process group and supervise it, without asyncio's child watchers.

Why not ``asyncio.create_subprocess_exec``: on Python 3.11 it reports exits through the
event-loop *policy's* child watcher, a process-wide singleton. The default
(``ThreadedChildWatcher``) starts a thread per child; the faster ``PidfdChildWatcher``
must be installed on the policy, which is global state shared by every event loop in
the process (and the watcher API is deprecated in 3.12 and gone in 3.14). Instead we do
what both watchers do, per child and per loop: ``subprocess.Popen`` (asyncio calls it
too, in the loop thread), ``connect_read_pipe`` for the pipes, and either a pidfd
registered with *this* loop (Linux ≥ 5.3) or one waiter thread for the exit.

The leader's exit is observed without reaping it (pidfd readiness, or
``waitid(WNOWAIT)``): while the leader is an unreaped zombie its pid — which is also the
group id — cannot be reused, so signalling the group after the leader died can never hit
an unrelated process. ``reap`` collects the status at the very end.

POSIX only (process groups, ``killpg``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import structlog

__all__ = ["ChildProcess", "Reaper", "die_with_parent_hook", "pidfd_available", "spawn"]

_log = structlog.get_logger(__name__)

# StreamReader pauses the pipe transport above 2 × limit, so at most that (plus one
# 256 KiB transport read) sits in our memory per stream when the sink is slow.
STREAM_LIMIT = 65_536


class Reaper(StrEnum):
    """How a child's exit is noticed."""

    AUTO = "auto"  # pidfd when the kernel supports it, else a thread
    PIDFD = "pidfd"  # a pidfd registered as a reader with the running loop
    THREAD = "thread"  # a daemon thread blocked in waitid (what ThreadedChildWatcher does)


def pidfd_available() -> bool:
    """Whether ``pidfd_open`` works here (Linux ≥ 5.3 and Python built with it)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


def resolve_reaper(reaper: Reaper) -> Reaper:
    if reaper is Reaper.AUTO:
        return Reaper.PIDFD if pidfd_available() else Reaper.THREAD
    if reaper is Reaper.PIDFD and not pidfd_available():
        raise ValueError("pidfd_open is not available on this system; use Reaper.THREAD")
    return reaper


class ChildProcess:
    """A running child that leads its own process group.

    ``exited`` completes when the leader has exited; the leader stays unreaped (see the
    module docstring) until ``reap``. ``close`` makes sure the child is reaped however
    the supervision ended, so no zombie is left behind.
    """

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self._loop = loop
        self.pid = popen.pid
        self.exited: asyncio.Future[None] = loop.create_future()
        self.returncode: int | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._pipes: list[tuple[asyncio.StreamReader, asyncio.ReadTransport]] = []
        self._pidfd = -1
        self._reap_on_exit = False

    # -- exit watching -------------------------------------------------------------

    def _watch_pidfd(self) -> None:
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_pidfd_ready)

    def _on_pidfd_ready(self) -> None:
        self._close_pidfd()
        self._on_exit()

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _watch_thread(self) -> None:
        loop, pid = self._loop, self.pid

        def wait() -> None:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            try:
                loop.call_soon_threadsafe(self._on_exit)
            except RuntimeError:
                # The loop is closed: nobody will reap the child but us.
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

        threading.Thread(target=wait, name=f"headwater-wait-{pid}", daemon=True).start()

    def _on_exit(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        if self._reap_on_exit:
            self.reap()

    # -- control -------------------------------------------------------------------

    @property
    def reaped(self) -> bool:
        return self.returncode is not None

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the whole group; False when there was nobody to signal."""
        if self.reaped:
            return False  # the group id may belong to someone else by now
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop_reading(self, reader: asyncio.StreamReader) -> None:
        """Close the pipe behind ``reader``: what is buffered is still read, then EOF."""
        for pipe_reader, transport in self._pipes:
            if pipe_reader is reader:
                transport.close()

    def reap(self) -> int:
        """Collect the exit status; only once the leader has exited. Returns the code
        in ``subprocess`` convention (negative: killed by that signal)."""
        if self.returncode is not None:
            return self.returncode
        if not self.exited.done():
            raise RuntimeError("reap() before the child exited would block the event loop")
        self._close_pidfd()
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            # Someone else (a process-wide waitpid(-1) watcher) reaped it first.
            _log.warning("child_already_reaped", pid=self.pid)
            code = 255
        self.returncode = code
        self._popen.returncode = code  # keeps Popen.__del__ from tracking it as alive
        if not self.exited.done():
            self.exited.set_result(None)
        return code

    def close(self) -> None:
        """Release everything; a leader still running is killed with its group and
        reaped when it exits."""
        for _, transport in self._pipes:
            transport.close()
        if self.reaped:
            return
        if self.exited.done():
            self.reap()
            return
        self.signal_group(signal.SIGKILL)
        self._reap_on_exit = True


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    env: Mapping[str, str],
    reaper: Reaper,
    merge_stderr: bool = False,
    die_with_parent: bool = False,
) -> ChildProcess:
    """Start ``argv`` in a new session with stdin from /dev/null and piped output.

    ``die_with_parent``: the child gets SIGKILL when this process dies (Linux), so a
    long-running step cannot outlive a ``kill -9`` of headwater and run next to the
    step that recovery starts again. It costs a fork instead of a vfork, so it is
    meant for long-running steps only.

    Raises ``OSError`` (missing executable, bad cwd) or ``ValueError`` (NUL byte in an
    argument) when the child could not start. ``reaper`` must be resolved (not AUTO).
    """
    loop = asyncio.get_running_loop()
    # Popen in the loop thread is what asyncio itself does: with vfork the parent
    # waits only until the child execs, well under a millisecond.
    popen = subprocess.Popen(  # noqa: ASYNC220
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
        bufsize=0,  # the transports read the fds directly; no Python buffer needed
        preexec_fn=die_with_parent_hook(os.getpid()) if die_with_parent else None,
    )
    child = ChildProcess(popen, loop)
    try:
        if reaper is Reaper.PIDFD:
            try:
                child._watch_pidfd()
            except OSError:  # e.g. out of file descriptors: a thread needs none
                child._watch_thread()
        else:
            child._watch_thread()
        child.stdout = await _connect(loop, child, popen.stdout)
        if not merge_stderr:
            child.stderr = await _connect(loop, child, popen.stderr)
    except BaseException:
        child.close()
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        raise
    return child


_PR_SET_PDEATHSIG = 1


def die_with_parent_hook(parent_pid: int) -> Callable[[], None] | None:
    """A preexec function asking the kernel to SIGKILL the child when we die."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # we already died before prctl took effect
            os._exit(1)

    return preexec


async def _connect(
    loop: asyncio.AbstractEventLoop, child: ChildProcess, pipe: object
) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
    # The protocol holds the reader weakly; ChildProcess keeps it alive with its pipe.
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    child._pipes.append((reader, transport))
    return reader
