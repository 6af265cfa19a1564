"""The CLI's tables at 80 columns, its option validation, its environment variables and
a port in use."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from headwater.cli import _register, app
from headwater.cli.client_cmds import jobs_table
from headwater.cli.run_cmds import check_port
from headwater.cli.submit_cmds import workers_table
from headwater.errors import HeadwaterError

WORKSPACE = """
actions:
  greet: { type: script, script: "echo hi" }
tasks:
  hello:
    flow:
      greet: { action: greet }
"""


def render(table: Any, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(table)
    return console.export_text().splitlines()


def a_job(n: int, task: str, source_id: str | None = None, status: str = "completed") -> dict:  # type: ignore[type-arg]
    return {
        "id": f"01a24ed6-6dd4-735b-9d7e-{n:012x}",
        "task": task,
        "status": status,
        "source_type": "webhook" if source_id else "api",
        "source_id": source_id,
        "created_at": "2026-12-07T04:00:00Z",
        "started_at": "2026-12-07T04:00:01Z",
        "finished_at": "2026-12-07T04:00:03.5Z",
    }


LONG_TASK = "process-incoming-orders"  # 23 characters


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_jobs_table_fits_the_width_and_keeps_the_task(width: int) -> None:
    found = [
        a_job(1, "hello"),
        a_job(2, "nightly-report-build", "github-push-events-from-main", "failed"),
        a_job(3, LONG_TASK, "a-rather-long-trigger-name", "running"),
    ]
    lines = jobs_table(found, width)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    header, *rows = lines
    assert "TASK" in header and "STATUS" in header and "ID" in header
    assert "hello" in rows[0]
    assert "nightly-report-build" in rows[1]  # 20 characters: never cut
    assert LONG_TASK[:19] in rows[2]  # longer ones keep at least 19 and an ellipsis
    assert rows[0].startswith("00000001")  # the short id: a job id's last 8 characters
    if width >= 120:
        assert "SOURCE" in header and "webhook:github-push-events-from-main" in rows[1]
        assert "2026-12-07" in rows[0] or "2026-12-06" in rows[0]  # local time, with date


def test_jobs_table_at_60_columns_still_fits_and_shows_the_task() -> None:
    lines = jobs_table([a_job(1, "nightly-report-build", "github")], 60)
    assert all(len(line) <= 60 for line in lines), "\n".join(lines)
    assert "TASK" in lines[0] and "SOURCE" not in lines[0]
    assert "nightly-repo" in lines[1]


def test_jobs_table_at_80_columns_keeps_source_for_short_task_names() -> None:
    lines = jobs_table([a_job(1, "hello", "github")], 80)
    assert "SOURCE" in lines[0]
    assert "webhook:github" in lines[1]


def test_workers_table_fits_80_columns() -> None:
    found = [
        {
            "id": "w1",
            "name": "builder-host-01.example.internal:4242",
            "tags": ["docker", "gpu", "script", "some-very-long-custom-tag"],
            "last_heartbeat": "2026-12-07T04:00:00Z",
            "live": True,
            "running_jobs": [f"01a24ed6-6dd4-735b-9d7e-{n:012x}" for n in range(5)],
        }
    ]
    lines = render(workers_table(found), 80)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert "NAME" in lines[0] and "HEARTBEAT" in lines[0]
    assert "00000004" in "\n".join(lines)  # running jobs by short id


# -- options -------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws.yaml"
    path.write_text(WORKSPACE)
    return path


def hw(*args: str, **env: str) -> Any:
    _register()
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1", **env})


@pytest.mark.parametrize("command", ["up", "server"])
@pytest.mark.parametrize(
    ("option", "value", "choices"),
    [("--log-level", "loud", "'debug', 'info'"), ("--log-format", "yaml", "'console', 'json'")],
)
def test_invalid_log_options_are_rejected(
    ws: Path, command: str, option: str, value: str, choices: str
) -> None:
    result = hw(command, str(ws), option, value)
    assert result.exit_code == 2
    assert f"'{value}' is not one of {choices}" in result.output


def test_invalid_values_from_the_environment_are_rejected(ws: Path) -> None:
    result = hw("up", str(ws), HEADWATER_LOG_LEVEL="loud")
    assert result.exit_code == 2
    assert "HEADWATER_LOG_LEVEL" in result.output and "'loud'" in result.output
    result = hw("up", str(ws), HEADWATER_PORT="eighty")
    assert result.exit_code == 2
    assert "HEADWATER_PORT" in result.output


def _params(name: str) -> list[Any]:
    _register()
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return [p for p in command.params if p.param_type_name == "option"]


@pytest.mark.parametrize("command", ["up", "server"])
def test_every_up_and_server_option_has_an_environment_variable(command: str) -> None:
    options = [p for p in _params(command) if p.name != "help"]
    assert options
    for option in options:
        names = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar or [])
        assert names, f"{command} {option.opts[0]} has no environment variable"
        assert all(n.startswith("HEADWATER_") for n in names)
    help_text = hw(command, "--help").output
    assert "HEADWATER_PORT" in help_text and "HEADWATER_LOG_LEVEL" in help_text


def test_options_are_read_from_the_environment(ws: Path, busy_port: int) -> None:
    # HEADWATER_PORT reaches the port check, which names the port it was given.
    result = hw("up", str(ws), HEADWATER_PORT=str(busy_port))
    assert result.exit_code == 1
    assert f"port {busy_port} is in use" in result.output


# -- a port in use --------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_check_port_names_a_port_in_use(busy_port: int) -> None:
    with pytest.raises(HeadwaterError, match=f"^port {busy_port} is in use; choose --port$"):
        check_port("127.0.0.1", busy_port)


def test_check_port_accepts_a_free_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    check_port("127.0.0.1", port)


@pytest.mark.parametrize("command", ["up", "server"])
def test_a_port_in_use_is_one_line_before_any_banner(
    ws: Path, busy_port: int, command: str
) -> None:
    result = hw(command, str(ws), "--port", str(busy_port))
    assert result.exit_code == 1
    assert result.output == f"error: port {busy_port} is in use; choose --port\n"


def test_shell_completion_is_offered() -> None:
    result = hw("--help")
    assert "--install-completion" in result.output


def test_the_db_option_says_where_each_command_keeps_its_jobs() -> None:
    # `run` keeps its one job in a temporary database unless --db says otherwise; `up`
    # in .headwater/headwater.db. The help must not tell one for the other.
    assert "a temporary database" in hw("run", "--help").output
    assert ".headwater/headwater.db" not in hw("run", "--help").output
    assert ".headwater/headwater.db" in hw("up", "--help").output
