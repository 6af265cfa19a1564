"""The root of the command line: version and the list of commands."""

from __future__ import annotations

from typer.testing import CliRunner

import headwater
from headwater.cli import _register, app


def test_version_prints_the_package_version() -> None:
    _register()
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"headwater {headwater.__version__}"


def test_help_lists_the_commands_of_the_design() -> None:
    _register()
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("validate", "run", "up", "jobs", "logs", "triggers", "cancel", "tasks"):
        assert f" {command} " in result.output
