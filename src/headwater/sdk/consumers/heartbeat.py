"""Heartbeat files: how a worker tells its supervisor it is alive, and how it is doing.

The worker rewrites its file (atomically: write, then rename) from its event loop
between events, so a handler that hangs stops the heartbeat and the supervisor kills
the worker after ``--heartbeat-timeout``. The content (state, lag, counts) is what the
supervisor exports as metrics.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Heartbeat", "HeartbeatReport", "read_heartbeat"]


@dataclass
class HeartbeatReport:
    pid: int = field(default_factory=os.getpid)
    state: str = "starting"  # starting | waiting_lease | consuming | backoff | stopping
    lag_ms: float | None = None
    processed: int = 0  # by this process
    failures: int = 0
    last_id: str | None = None
    lease_token: int | None = None
    ts: float = 0.0


class Heartbeat:
    """Writes ``report`` to ``path`` at most every ``interval`` seconds (None: nowhere)."""

    def __init__(self, path: Path | None, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self.report = HeartbeatReport()
        self._last = 0.0

    def beat(self, force: bool = False, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.report, key, value)
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.report.ts = time.time()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(self.report)))
            os.replace(tmp, self.path)
        except OSError:  # a full disk must not stop the consumer; the supervisor will see
            pass


def read_heartbeat(path: Path) -> tuple[float, dict[str, Any]] | None:
    """(age in seconds from the file's mtime, content) or None when there is none."""
    try:
        stat = path.stat()
        content = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    return max(0.0, time.time() - stat.st_mtime), content if isinstance(content, dict) else {}
