"""Cron expressions (5 fields, or 6 with seconds first as in Strøm) and time zones."""

from __future__ import annotations

from datetime import datetime

import pytest

from headwater.workspace.cron import cron_problem, make_cron, timezone_problem


@pytest.mark.parametrize(
    "expression",
    ["* * * * *", "0 2 * * *", "0 0 2 * * *", "*/10 * * * * *", "@daily", " 0 * * * * "],
)
def test_valid_expressions(expression: str) -> None:
    assert cron_problem(expression) is None


@pytest.mark.parametrize(
    ("expression", "start"),
    [
        ("", "the cron expression is empty"),
        ("* * * *", "cron expression '* * * *' has 4 fields"),
        ("* * * * * * *", "cron expression '* * * * * * *' has 7 fields"),
        ("99 * * * *", "invalid cron expression"),
        ("@never", "unknown cron alias '@never'"),
    ],
)
def test_invalid_expressions(expression: str, start: str) -> None:
    problem = cron_problem(expression)
    assert problem is not None and problem.startswith(start)


def test_six_fields_put_seconds_first() -> None:
    start = datetime(2026, 1, 1, 0, 0, 0)
    every_ten_seconds = make_cron("*/10 * * * * *", start)
    assert every_ten_seconds.get_next(datetime) == datetime(2026, 1, 1, 0, 0, 10)
    two_am = make_cron("0 0 2 * * *", start)
    assert two_am.get_next(datetime) == datetime(2026, 1, 1, 2, 0, 0)
    minute = make_cron("* * * * *", start)
    assert minute.get_next(datetime) == datetime(2026, 1, 1, 0, 1, 0)


def test_time_zones() -> None:
    assert timezone_problem("UTC") is None
    assert timezone_problem("Europe/Copenhagen") is None
    assert timezone_problem("Europe/Copenhagn") == (
        "unknown timezone 'Europe/Copenhagn' (did you mean `Europe/Copenhagen`?)"
    )
    assert timezone_problem("../../etc/passwd") is not None
    assert timezone_problem("") is not None
