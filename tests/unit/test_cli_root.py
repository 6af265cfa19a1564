"""The root of the command line: version and the list of commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


# Modules the CLI must not load to print its help: each costs tens to hundreds of ms on
# every call. A command loads what it needs inside its function.
HEAVY_MODULES = (
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "headwater.sdk",
    "headwater.worker",
    "headwater.engine",
    "headwater.node",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "structlog",
    "jinja2",
)


def _imported_by(*args: str) -> set[str]:
    """The modules ``python -X importtime -m headwater ARGS`` imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "headwater", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(headwater.__file__).parents[1])},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY_MODULES))


def test_help_imports_no_heavy_module() -> None:
    modules = _imported_by("--help")
    assert "headwater.cli.client_cmds" in modules  # the commands were registered
    assert _heavy(modules) == []


def test_version_imports_no_heavy_module() -> None:
    modules = _imported_by("--version")
    assert _heavy(modules) == []
    assert "headwater.cli.client_cmds" not in modules  # answered before commands load


def test_python_dash_m_headwater_is_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(headwater.__file__).parents[1])},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"headwater {headwater.__version__}"
