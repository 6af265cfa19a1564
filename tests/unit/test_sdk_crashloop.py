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
