"""``headwater triggers`` (the table) stays readable at 80 columns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import headwater.cli.server_triggers as server_triggers

ERROR = (
    "the consumer exited with code 1: Traceback (most recent call last): File "
    '"/srv/consumer.py", line 12, in <module> ConnectionRefusedError: [Errno 111] '
    "Connection refused while connecting to the upstream feed at feed.example:9000"
)


class _Client:
    def list_triggers(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "orders-stream",
                "type": "event_source",
                "target_task": "handle-order",
                "state": {
                    "state": "backoff",
                    "in_flight": 0,
                    "max_in_flight": 100,
                    "events_accepted": 12345,
                    "events_rejected": 2,
                    "restarts": 4,
                    "last_error": ERROR + "\nsecond line of the error",
                },
            },
            {"name": "nightly", "type": "scheduler", "task": "report", "cron": "0 3 * * *"},
        ]


def test_a_long_error_is_cut_to_one_line_at_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @contextmanager
    def fake_client(server: str, token: str | None) -> Iterator[_Client]:
        yield _Client()

    monkeypatch.setattr(server_triggers, "_client", fake_client)
    monkeypatch.setenv("COLUMNS", "80")
    server_triggers.list_server_triggers("http://hw", None, as_json=False)
    lines = capsys.readouterr().out.rstrip("\n").splitlines()
    text = "\n".join(lines)
    # The header, a line per trigger, and at most a detail line per trigger.
    assert len(lines) <= 5, text
    assert all(len(line) <= 80 for line in lines), text
    row = next(line for line in lines if "orders-stream" in line)
    assert "handle-order" in row and "backoff" in row and "12345" in row, text
    (error,) = [line for line in lines if "last error" in line]
    assert "4 restarts; last error: the consumer exited with code 1" in error
    assert error.rstrip().endswith("…")
