"""Crash-loop protection as a state machine: the seed's defaults (5 crashes in 60 s,
healthy-run reset after 60 s), sticky until released, driven by a monotonic clock."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from headwater.sdk.consumers.crashloop import CrashLoopGuard, Verdict


def test_five_fast_crashes_in_a_minute_quarantine_with_the_seed_defaults() -> None:
    guard = CrashLoopGuard()
    now = 100.0
    for _ in range(4):
        guard.started("c", now)
        now += 1
        assert guard.crashed("c", now) is Verdict.RESTART
    guard.started("c", now)
    assert guard.crashed("c", now + 1) is Verdict.QUARANTINE
    assert not guard.may_start("c")
    assert guard.crashed("c", now + 2) is Verdict.QUARANTINED  # sticky, no cooldown
    assert guard.release("c") and guard.may_start("c")
    guard.started("c", now + 3)
    assert guard.crashed("c", now + 4) is Verdict.RESTART  # history forgotten


def test_a_healthy_run_resets_the_history_and_old_crashes_leave_the_window() -> None:
    guard = CrashLoopGuard()
    for t in (0.0, 1.0, 2.0, 3.0):
        guard.started("c", t)
        guard.crashed("c", t + 0.5)
    guard.started("c", 10.0)
    assert guard.crashed("c", 75.0) is Verdict.RESTART  # lived 65 s: a fresh incident
    assert guard.crash_count("c") == 1
    spaced = CrashLoopGuard()
    for t in range(0, 300, 20):  # one fast crash every 20 s: never 5 within 60 s
        spaced.started("c", float(t))
        assert spaced.crashed("c", t + 1.0) is Verdict.RESTART


class GuardMachine(RuleBasedStateMachine):
    """The guard against a plain model of the rules, with random crash timings."""

    def __init__(self) -> None:
        super().__init__()
        self.guard = CrashLoopGuard(max_crashes=3, window=10.0, healthy_run=5.0)
        self.now = 0.0
        self.started: float | None = None
        self.crashes: list[float] = []
        self.quarantined = False

    @rule(wait=st.floats(min_value=0.0, max_value=8.0))
    def start(self, wait: float) -> None:
        self.now += wait
        if not self.quarantined:
            self.guard.started("c", self.now)
            self.started = self.now

    @precondition(lambda self: self.started is not None or self.quarantined)
    @rule(uptime=st.floats(min_value=0.0, max_value=8.0))
    def crash(self, uptime: float) -> None:
        self.now += uptime
        verdict = self.guard.crashed("c", self.now)
        if self.quarantined:
            assert verdict is Verdict.QUARANTINED
            return
        assert self.started is not None
        if self.now - self.started >= 5.0:
            self.crashes = []
        self.started = None
        self.crashes = [t for t in [*self.crashes, self.now] if self.now - t <= 10.0]
        expected = Verdict.QUARANTINE if len(self.crashes) >= 3 else Verdict.RESTART
        assert verdict is expected, (self.crashes, verdict)
        self.quarantined = expected is Verdict.QUARANTINE

    @rule()
    def release(self) -> None:
        assert self.guard.release("c") == self.quarantined
        self.quarantined = False
        self.crashes = []
        self.started = None

    @invariant()
    def quarantine_matches(self) -> None:
        assert self.guard.is_quarantined("c") == self.quarantined
        assert self.guard.may_start("c") == (not self.quarantined)


TestGuardMachine = GuardMachine.TestCase


def test_settings_that_could_never_quarantine_or_reset_are_refused() -> None:
    import pytest

    for bad in ({"max_crashes": 0}, {"window": 0.0}, {"healthy_run": 0.0}):
        with pytest.raises(ValueError, match="max_crashes >= 1"):
            CrashLoopGuard(**bad)  # type: ignore[arg-type]
    CrashLoopGuard(max_crashes=1, window=0.1, healthy_run=0.1)  # the smallest allowed


def test_the_seed_defaults_are_60_s_for_the_window_and_the_healthy_run() -> None:
    guard = CrashLoopGuard()
    assert guard.crash_count("never-seen") == 0
    guard.started("c", 0.0)
    guard.crashed("c", 10.0)
    guard.started("c", 10.0)
    guard.crashed("c", 70.0)  # ran exactly 60 s: healthy, the history is forgotten
    assert guard.crash_count("c") == 1
    for t in (71.0, 72.0, 73.0):
        guard.started("c", t)
        guard.crashed("c", t + 0.5)
    guard.started("c", 130.0)
    # The crash at 70 s is exactly 60 s old: still within the window, the fifth crash.
    assert guard.crashed("c", 130.0) is Verdict.QUARANTINE
    late = CrashLoopGuard()
    for t in (0.0, 1.0, 2.0, 3.0):
        late.started("c", t)
        late.crashed("c", t + 0.5)
    late.started("c", 60.0)
    assert late.crashed("c", 61.0) is Verdict.RESTART  # the first is 60.5 s old: gone
