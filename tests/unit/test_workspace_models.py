"""Model rules: durations, retry and backoff, aliases, the seed's image spelling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from headwater.workspace.models import (
    Action,
    ActionType,
    EventSourceTrigger,
    FieldType,
    InputField,
    RetryPolicy,
    RunnerKind,
    Step,
    Workspace,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1d", 86400.0),
        ("1h 30m", 5400.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "m5", "1h-30m", -1, True, None, [1], "1.2.3s"])
def test_invalid_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(
    st.integers(0, 9),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
def test_duration_parts_add_up(d: int, h: int, m: int, s: int, ms: int) -> None:
    parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s"), (ms, "ms")]
    text = "".join(f"{n}{unit}" for n, unit in parts if n)
    expected = d * 86400 + h * 3600 + m * 60 + s + ms / 1000
    if text:
        assert parse_duration(text) == pytest.approx(expected)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_plain_numbers_are_seconds(value: float) -> None:
    assert parse_duration(value) == value
    text = f"{value:.3f}"
    assert parse_duration(text) == float(text)


def test_retry_shorthand_and_backoff() -> None:
    step = Step.model_validate({"action": "a", "retry": 3})
    assert step.retry == RetryPolicy(count=3)
    policy = RetryPolicy(count=5, backoff="2s", max_backoff="5s")
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]


def test_event_source_backoff_doubles_up_to_five_minutes() -> None:
    trigger = EventSourceTrigger(type="event_source", task="c", target_task="t", backoff_secs=10)
    assert [trigger.backoff_delay(n) for n in (1, 2, 3, 6)] == [10.0, 20.0, 40.0, 300.0]


def test_depends_on_accepts_a_single_name() -> None:
    assert Step.model_validate({"action": "a", "depends_on": "b"}).depends_on == ["b"]


@pytest.mark.parametrize(
    ("alias", "kind"),
    [("bool", FieldType.BOOLEAN), ("int", FieldType.INTEGER), ("json", FieldType.JSON)],
)
def test_input_type_aliases(alias: str, kind: FieldType) -> None:
    assert InputField.model_validate({"type": alias}).type is kind


def test_env_and_secret_scalars_become_strings() -> None:
    action = Action.model_validate(
        {"type": "script", "script": "x", "env": {"N": 5, "F": False, "S": "s"}}
    )
    assert action.env == {"N": "5", "F": "false", "S": "s"}
    assert Workspace.model_validate({"secrets": {"port": 5432}}).secrets == {"port": "5432"}


@pytest.mark.parametrize("runner", ["docker", "pod"])
def test_the_seeds_image_spelling_means_type_docker_or_pod(runner: str) -> None:
    action = Action.model_validate({"type": "script", "runner": runner, "image": "img:1"})
    assert action.type is ActionType(runner)
    assert action.effective_runner is RunnerKind(runner)
    assert action.required_tags == {runner}


def test_a_script_in_an_image_stays_a_script() -> None:
    action = Action.model_validate(
        {"type": "script", "runner": "docker", "image": "python:3", "script": "echo"}
    )
    assert action.type is ActionType.SCRIPT
    assert action.effective_runner is RunnerKind.DOCKER


def test_models_are_frozen_and_strict_about_keys() -> None:
    with pytest.raises(ValidationError):
        Action.model_validate({"type": "script", "scirpt": "x"})
    action = Action(type=ActionType.SCRIPT, script="x")
    with pytest.raises(ValidationError):
        action.script = "y"  # type: ignore[misc]
