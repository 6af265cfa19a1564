"""Debounce and batch without services: when a buffer is due, what `validate` says about
the keys (with file:line), and the SDK decorators accepting them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import headwater
from headwater.core.gather import GatherKind, GatherRule
from headwater.dispatch.gather import gather_plans
from headwater.errors import RegistrationError
from headwater.workspace.loader import check_workspace

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def secs(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_a_debounce_is_due_a_period_after_its_last_event_at_most_max_wait_after_its_first() -> None:
    rule = GatherRule(GatherKind.DEBOUNCE, wait=5, max_wait=60)
    assert rule.due(T0, T0, 1) == T0 + secs(5)
    assert rule.due(T0, T0 + secs(20), 9) == T0 + secs(25)  # each event moves it on
    assert rule.due(T0, T0 + secs(58), 40) == T0 + secs(60)  # ... up to max_wait
    unbounded = GatherRule(GatherKind.DEBOUNCE, wait=5)
    assert unbounded.due(T0, T0 + secs(3600), 2) == T0 + secs(3605)


def test_a_batch_is_due_when_full_or_a_window_after_its_first_event() -> None:
    rule = GatherRule(GatherKind.BATCH, wait=2, size=3)
    assert rule.due(T0, T0, 1) == T0 + secs(2)
    assert rule.due(T0, T0 + secs(1), 2) == T0 + secs(2)  # later events do not move it
    assert rule.due(T0, T0 + secs(1), 3) == T0 + secs(1)  # full: now
    assert rule.limit == 3


def write(tmp_path: Path, trigger: str) -> Path:
    path = tmp_path / "ws.yaml"
    path.write_text(
        "actions:\n  ok: {type: script, script: 'true'}\n"
        "tasks:\n  t:\n    flow:\n      a: {action: ok}\n"
        "triggers:\n  hook:\n    type: webhook\n    task: t\n" + trigger
    )
    return path


@pytest.mark.parametrize(
    ("trigger", "line", "words"),
    [
        ("    debounce: {period: 5s, max_wait: 1s}\n", 11, "max_wait (1s) is shorter than period"),
        ("    debounce: {period: 0s}\n", 11, "period must be longer than 0s"),
        ("    debounce: {period: soon}\n", 11, "'soon' is not a duration"),
        ("    debounce: {max_wait: 5s}\n", 11, "missing required key `period`"),
        ("    batch: {size: 0}\n", 11, "greater than or equal to 1"),
        ("    batch:\n      size: 10\n      window: -2s\n", 13, "window"),
        ("    batch: {size: 10, colour: red}\n", 11, "colour"),
        ("    batch:\n      size: 2\n      key: '{{ input.x '\n", 13, "not a valid template"),
        ("    batch:\n      size: 2\n      key: '{{ secret.x }}'\n", 13, "may only read `input`"),
        ("    mode: sync\n    batch: {size: 2}\n", 11, "use `mode: async`"),
        ("    batch: {size: 2}\n    debounce: {period: 1s}\n", 11, "not both"),
    ],
)
def test_validate_points_at_the_bad_key(
    trigger: str, line: int, words: str, tmp_path: Path
) -> None:
    report = check_workspace(write(tmp_path, trigger), check_secrets=False)
    found = [p for p in report.problems if words in p.message]
    assert found, [p.message for p in report.problems]
    assert found[0].line == line and found[0].file.endswith("ws.yaml")


def test_a_valid_flow_is_quiet_and_becomes_a_plan(tmp_path: Path) -> None:
    report = check_workspace(
        write(tmp_path, "    batch: {size: 500, window: 2s, key: '{{ input.customer }}'}\n")
    )
    assert report.valid and not report.problems, report.problems
    assert report.workspace is not None
    (plan,) = gather_plans(report.workspace).values()
    assert plan.rule == GatherRule(GatherKind.BATCH, 2.0, None, 500)
    assert plan.key == "{{ input.customer }}"


class Toy(headwater.EventReceiver):
    """A custom receiver (never started here)."""

    async def start(self, ctx: Any) -> None: ...

    async def stop(self) -> None: ...

    async def wait(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        return {}


def test_the_sdk_decorators_take_debounce_and_batch() -> None:
    reg = headwater.Registry(app="shop")

    @reg.on_redis_stream(
        "orders", name="orders", url="redis://h", batch={"size": 100, "window": "1s"}
    )
    def handle(events: list[dict[str, Any]], key: str) -> None: ...

    @reg.on_receiver(Toy, name="toy", debounce={"period": "5s", "key": "{{ input.x }}"})
    def toy(events: list[dict[str, Any]]) -> None: ...

    ws = reg.workspace()
    assert ws.triggers["orders"].batch is not None and ws.triggers["orders"].batch.size == 100
    assert ws.tasks["orders"].flow["handler"].input == {
        "events": "{{ input.events }}",
        "key": "{{ input.key }}",
    }
    assert ws.triggers["toy"].debounce is not None
    assert ws.tasks["toy"].flow["handler"].input == {"events": "{{ input.events }}"}


def test_the_sdk_refuses_a_bad_flow_at_import() -> None:
    reg = headwater.Registry(app="shop")
    with pytest.raises(RegistrationError, match=r"batch\.size"):
        reg.on_kafka("t", name="k", bootstrap_servers="b:9092", batch={"size": 0})
    with pytest.raises(RegistrationError, match=r"def handle\(events, key\)"):
        reg.on_kafka("t", name="k2", bootstrap_servers="b:9092", batch={"size": 5})(
            lambda payload: None
        )
