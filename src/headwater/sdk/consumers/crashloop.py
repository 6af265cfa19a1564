"""Crash-loop protection (the seed's ``BaseSupervisor`` guard), as a pure state machine.

- Rolling window: each crash is timestamped; ``max_crashes`` within ``window`` seconds
  quarantines the consumer.
- Sticky: a quarantined consumer is not spawned again until released (an operator's
  ``headwater quarantine release NAME``); there is no cooldown, because recovering on
  its own would re-enter the loop on an unfixed bug.
- Healthy-run reset: a worker that lived ``healthy_run`` seconds clears its history, so
  a crash after a stable run starts a fresh count.
- Time is ``time.monotonic()`` passed in by the caller: wall-clock jumps change nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["CrashLoopGuard", "Verdict"]


class Verdict(StrEnum):
    RESTART = "restart"
    QUARANTINE = "quarantine"  # it just tipped into quarantine
    QUARANTINED = "quarantined"  # it already was


@dataclass
class _History:
    started_at: float | None = None
    crashes: deque[float] = field(default_factory=deque)


class CrashLoopGuard:
    def __init__(self, max_crashes: int = 5, window: float = 60.0, healthy_run: float = 60.0):
        if max_crashes < 1 or window <= 0 or healthy_run <= 0:
            raise ValueError("need max_crashes >= 1, window > 0 and healthy_run > 0")
        self.max_crashes = max_crashes
        self.window = window
        self.healthy_run = healthy_run
        self._history: dict[str, _History] = {}
        self._quarantined: set[str] = set()

    def is_quarantined(self, name: str) -> bool:
        return name in self._quarantined

    @property
    def quarantined(self) -> frozenset[str]:
        return frozenset(self._quarantined)

    def crash_count(self, name: str) -> int:
        history = self._history.get(name)
        return len(history.crashes) if history is not None else 0

    def may_start(self, name: str) -> bool:
        return name not in self._quarantined

    def started(self, name: str, now: float) -> None:
        self._history.setdefault(name, _History()).started_at = now

    def crashed(self, name: str, now: float) -> Verdict:
        """The worker died (any exit the supervisor did not ask for)."""
        if name in self._quarantined:
            return Verdict.QUARANTINED
        history = self._history.setdefault(name, _History())
        if history.started_at is not None and now - history.started_at >= self.healthy_run:
            history.crashes.clear()  # a stable run: this crash is a fresh incident
        history.started_at = None
        history.crashes.append(now)
        while history.crashes and now - history.crashes[0] > self.window:
            history.crashes.popleft()
        if len(history.crashes) >= self.max_crashes:
            self._quarantined.add(name)
            return Verdict.QUARANTINE
        return Verdict.RESTART

    def quarantine(self, name: str) -> None:
        """Restored from the store at startup: a restart does not release it."""
        self._quarantined.add(name)

    def release(self, name: str) -> bool:
        """The operator released it: forget its crashes; True if it was quarantined."""
        self._history.pop(name, None)
        if name in self._quarantined:
            self._quarantined.discard(name)
            return True
        return False
