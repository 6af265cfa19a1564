"""The mysql_cdc trigger's checks at `validate`, its install line when the client library
is missing, and the position arithmetic its checkpoint relies on (no server needed)."""

from __future__ import annotations

import datetime as dt
import decimal
import sys
from pathlib import Path

import pytest

from headwater.errors import MissingClientError
from headwater.triggers.receivers import create_receiver
from headwater.triggers.receivers.mysql_cdc.position import (
    BinlogFile,
    Position,
    bytes_behind,
    gtid_advance,
    jsonable,
)
from headwater.workspace.loader import check_workspace
from headwater.workspace.receiver_triggers import MysqlCdcTrigger

WORKSPACE = """\
actions:
  show: { type: script, script: "true" }
tasks:
  sync:
    input:
      payload: { type: object, required: true }
    flow:
      show: { action: show }
triggers:
  orders:
    type: mysql_cdc
    url: "{{ secret.mysql_url }}"
    tables: [shop.orders]
    target_task: sync
"""
INSTALL = "pip install 'headwater[mysql-cdc]'"


def _check(tmp_path: Path, text: str) -> list[tuple[str, int | None]]:
    path = tmp_path / "ws.yaml"
    path.write_text(text)
    report = check_workspace(path, environ={})
    return [(p.message, p.line) for p in report.errors]


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_example_trigger_validates(tmp_path: Path) -> None:
    assert _check(tmp_path, WORKSPACE) == []


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("tables: [shop.orders]", "tables: [orders]", "the schema is required"),
        ("tables: [shop.orders]", "tables: []", "at least 1 item"),
        ('url: "{{ secret.mysql_url }}"', "url: http://db:3306", "mysql:// or mariadb://"),
        ("target_task: sync", "target_task: sync\n    start: yesterday", "'FILE:POSITION'"),
        ("target_task: sync", "target_task: sync\n    operations: [upsert]", "valid: insert,"),
        ("target_task: sync", "target_task: sync\n    if_purged: skip", "valid: fail, oldest"),
        ("target_task: sync", "target_task: sync\n    server_id: 0", "greater than or equal"),
    ],
)
def test_a_bad_setting_is_a_validate_error_on_its_line(
    tmp_path: Path, old: str, new: str, words: str
) -> None:
    text = WORKSPACE.replace(old, new)
    errors = _check(tmp_path, text)
    assert len(errors) == 1, errors
    message, line = errors[0]
    assert words in message
    key = new.splitlines()[-1].strip().split(":")[0]
    assert line == _line(text, f"{key}:")


def test_a_missing_client_library_fails_validate_and_start_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pymysqlreplication", None)  # not installed
    errors = _check(tmp_path, WORKSPACE)
    assert len(errors) == 1 and INSTALL in errors[0][0], errors
    assert errors[0][1] == _line(WORKSPACE, "type: mysql_cdc")
    trigger = MysqlCdcTrigger.model_validate(
        {"type": "mysql_cdc", "url": "mysql://db", "tables": "shop.orders", "target_task": "t"}
    )
    with pytest.raises(MissingClientError, match=r"pip install 'headwater\[mysql-cdc\]'"):
        create_receiver(trigger, lambda v, where: v, None)  # type: ignore[arg-type]


def test_the_sdk_argument_takes_one_table_or_several() -> None:
    trigger = MysqlCdcTrigger.model_validate(
        {"type": "mysql_cdc", "url": "mysql://db", "tables": "a.x, b.*", "target_task": "t"}
    )
    assert trigger.tables == ["a.x", "b.*"]


def test_the_gtid_position_keeps_the_last_gtid_of_each_domain() -> None:
    assert gtid_advance(None, "0-1-5") == "0-1-5"
    assert gtid_advance("0-1-5", "0-1-6") == "0-1-6"
    assert gtid_advance("0-1-6,2-3-9", "1-1-1") == "0-1-6,1-1-1,2-3-9"


def test_bytes_behind_the_end_count_the_later_files_and_a_purged_file_is_unknown() -> None:
    logs = [BinlogFile("b.1", 1000), BinlogFile("b.2", 500), BinlogFile("b.3", 200)]
    assert bytes_behind(Position("b.3", 200), logs) == 0
    assert bytes_behind(Position("b.2", 100), logs) == 400 + 200
    assert bytes_behind(Position("b.0", 4), logs) is None


def test_a_checkpoint_survives_its_json_form() -> None:
    position = Position("mysql-bin.000007", 1234, (1500, 3), "0-1-42")
    assert Position.from_json(position.to_json()) == position
    assert Position.from_json({"file": "f", "pos": 4}) == Position("f", 4)


def test_column_values_become_json_values() -> None:
    assert jsonable(decimal.Decimal("12.50")) == "12.50"  # exact, not a float
    assert jsonable(dt.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05"
    assert jsonable(dt.timedelta(hours=25)) == "1 day, 1:00:00"
    assert jsonable(b"text") == "text"
    assert jsonable(b"\xff\x00") == "/wA="  # binary: base64
    assert jsonable({"b", "a"}) == ["a", "b"]  # SET columns
    assert jsonable({b"k": [1, float("nan")]}) == {"k": [1, None]}
