"""A cursor-aware consumer through kill -9s of itself and of ``headwater up``: every
event becomes exactly one job, without a trigger ``dedup_key`` (tests/e2e/cursor_chaos.py;
the long run is bench/cursor_chaos.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cursor_chaos import run_chaos

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.xdist_group("restart"),
]  # one kill -9 test of `headwater up` at a time (tests/conftest.py FIRST_GROUPS)


def test_a_cursor_consumer_loses_and_duplicates_nothing_through_kill_9s(tmp_path: Path) -> None:
    plan = ["consumer", "headwater", "consumer", "consumer", "headwater", "consumer"]
    report = run_chaos(tmp_path, events=3000, plan=plan, step=300, timeout=120)
    print(report.summary())
    assert report.kills == {"consumer": 4, "headwater": 2}, report.summary()
    assert (report.lost, report.duplicated) == (0, 0), report.summary()
    assert report.jobs == 3000
    assert report.cursor == report.cli_cursor == "3000"  # API and `headwater triggers`
    assert report.keyed_by_cursor
    # Each kill made a new consumer run, which resumed from the stored cursor (the log
    # lines of runs killed together with headwater may be lost with it).
    assert report.runs >= 4 and report.resumed_in_order, report.summary()
