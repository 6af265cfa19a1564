"""``--retention`` / ``--log-retention`` parsing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.errors import ConfigError
from headwater.store.base import JobStatus
from headwater.store.retention import parse_age, parse_retention


def test_one_age_covers_every_final_status_and_rejected_events() -> None:
    policy = parse_retention("30d")
    assert policy.jobs == {
        JobStatus.COMPLETED: timedelta(days=30),
        JobStatus.FAILED: timedelta(days=30),
        JobStatus.CANCELLED: timedelta(days=30),
    }
    assert policy.rejected == timedelta(days=30)
    assert policy.logs is None


def test_per_status_ages_and_a_default_for_the_rest() -> None:
    policy = parse_retention("completed=7d, failed=30d", "12h")
    assert policy.jobs == {JobStatus.COMPLETED: timedelta(days=7), JobStatus.FAILED: timedelta(30)}
    assert policy.rejected is None and policy.logs == timedelta(hours=12)
    mixed = parse_retention("90d,completed=1w")
    assert mixed.jobs[JobStatus.COMPLETED] == timedelta(weeks=1)
    assert mixed.jobs[JobStatus.CANCELLED] == timedelta(days=90)
    assert mixed.describe() == "completed=1w,failed=90d,cancelled=90d,rejected=90d"


def test_nothing_given_keeps_everything() -> None:
    assert parse_retention(None).empty
    assert parse_retention("").empty


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("pending=1d", "never deleted"),
        ("running=1d", "never deleted"),
        ("done=1d", "choose completed"),
        ("30", "number and a unit"),
        ("completed=soon", "number and a unit"),
        ("-1d", "number and a unit"),
    ],
)
def test_mistakes_are_explained(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_retention(text)


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from("smhdw"))
def test_ages_round_trip(n: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_age(f"{n}{unit}") == timedelta(seconds=n * seconds)
    assert parse_age(f" {n} {unit} ") == timedelta(seconds=n * seconds)
