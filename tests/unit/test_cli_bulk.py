"""The bulk filters of ``headwater retry``/``cancel``: ages and times for --since/--until,
and when a command is a bulk one at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer

from headwater.cli.bulk_cmds import selection_of, when

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_an_age_is_that_long_before_now() -> None:
    assert when("30m", "--since", NOW) == "2026-12-07T11:30:00Z"
    assert when("2h", "--since", NOW) == "2026-12-07T10:00:00Z"
    assert when("1d", "--since", NOW) == "2026-12-06T12:00:00Z"


def test_a_time_is_taken_as_utc_when_it_has_no_offset() -> None:
    assert when("2026-12-01T08:00:00", "--until") == "2026-12-01T08:00:00Z"
    assert when("2026-12-01T08:00:00+02:00", "--until") == "2026-12-01T06:00:00Z"
    assert when("2026-12-01T08:00:00Z", "--until") == "2026-12-01T08:00:00Z"


def test_anything_else_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exc:
        when("yesterday-ish", "--since")
    assert exc.value.exit_code == 2
    assert "--since 'yesterday-ish'" in capsys.readouterr().err


def test_no_filter_means_a_single_job_command() -> None:
    empty = dict(task=None, status=None, source_type=None, source_id=None, since=None, until=None)
    assert selection_of(**empty, limit=10, dry_run=True) is None
    picked = selection_of(**{**empty, "task": "t", "status": "failed"}, limit=5, dry_run=True)
    assert picked == {"task": "t", "status": "failed", "limit": 5, "dry_run": True}
