"""Which headwater process started a container or pod, and whether that process is gone.

Containers and pods carry the identity of the worker process that started them (a
label or annotation ``headwater.worker``): ``host:pid:boot/start``, where ``boot`` is
the kernel's boot id and ``start`` the process's start time in clock ticks since boot.
Together they name one process for ever: a pid reused after a restart (or a reboot)
has another start time (or boot id).

A worker can only judge processes of its own host, so the orphan sweep at start
removes what was started on this host by a process that no longer exists, and leaves
everything else alone. Workers that share a Docker engine or a namespace therefore
need distinct hostnames (the default for hosts, Docker containers and pods).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessIdentity", "pid_alive"]

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    host: str
    pid: int
    started: str  # "<boot id>/<start ticks>"; "" where /proc is not available

    @classmethod
    def current(cls) -> ProcessIdentity:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _started(pid))

    @property
    def token(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    @classmethod
    def parse(cls, token: str) -> ProcessIdentity | None:
        host, sep, rest = token.rpartition(":")  # the host part may not contain ':'
        host, sep2, pid = host.rpartition(":")
        if not sep or not sep2 or not pid.isdigit() or not host:
            return None
        return cls(host, int(pid), rest)

    def is_gone(self, observer: ProcessIdentity) -> bool:
        """True only when ``observer`` (a process on the same host) can tell for sure
        that this process no longer exists."""
        if self.host != observer.host:
            return False  # another host's process: not ours to judge
        if self == observer:
            return False
        if self.started:
            now = _started(self.pid)
            if not now:
                # No such pid now, or no /proc: fall back to a signal-0 probe.
                return not pid_alive(self.pid)
            return now != self.started
        return not pid_alive(self.pid)


def _started(pid: int) -> str:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat.rpartition(")")[2].split()
    return f"{boot}/{fields[19]}" if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
