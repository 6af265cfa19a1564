"""The root of the command line: version and the list of commands."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import headwater
from headwater.cli import COMMAND_MODULES, _register, app
from tests.canned_api import JOB_ID, serve_canned


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


# Modules the CLI must not load for its help, its version and the everyday client
# commands: each costs tens to hundreds of ms on every call. A command loads what it
# needs inside its function; the client commands need only http.client and a few lines
# of printing (headwater.cli.plain).
HEAVY_MODULES = (
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "pydantic",
    "headwater.sdk",
    "headwater.store",
    "headwater.workspace",
    "headwater.server",
    "headwater.worker",
    "headwater.engine",
    "headwater.node",
    "aiosqlite",
    "asyncpg",
    "asyncio",
    "httpx",
    "rich",
    "structlog",
    "jinja2",
    "yaml",
)


def _run_importtime(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "headwater", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(headwater.__file__).parents[1])},
        timeout=120,
    )


def _modules(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _imported_by(*args: str) -> set[str]:
    """The modules ``python -X importtime -m headwater ARGS`` imported."""
    proc = _run_importtime(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _modules(proc.stderr)


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


# -- the everyday client commands, against a server that answers ------------------------


@pytest.fixture(scope="module")
def canned_server() -> Iterator[str]:
    with serve_canned() as url:
        yield url


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["jobs"], "0000abcd"),
        (["logs", JOB_ID], "[greet] hi there"),
        (["triggers"], "nightly"),
    ],
)
def test_client_commands_import_no_heavy_module(
    canned_server: str, args: list[str], shown: str
) -> None:
    proc = _run_importtime(*args, "--server", canned_server)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shown in proc.stdout  # the command did its work
    modules = _modules(proc.stderr)
    assert _heavy(modules) == []
    # Only the command's own module was loaded, not every command's.
    assert "headwater.cli.run_cmds" not in modules
    assert "headwater.cli.sdk_cmds" not in modules


def test_a_client_command_without_server_imports_no_heavy_module() -> None:
    proc = _run_importtime("jobs", "--server", "http://127.0.0.1:9")
    assert proc.returncode == 1
    assert "no headwater server answers" in proc.stderr
    assert _heavy(_modules(proc.stderr)) == []


def test_each_command_is_loaded_from_the_module_that_registers_it() -> None:
    _register()
    found: dict[str, str] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.lower().replace("_", "-")
        found[name] = command.callback.__module__
    for group in app.registered_groups:
        assert group.name is not None
        found[group.name] = next(
            module
            for module, loaded in sys.modules.items()
            if module.startswith("headwater.cli.")
            and any(value is group.typer_instance for value in vars(loaded).values())
        )
    assert found == {name: f"headwater.cli.{module}" for name, module in COMMAND_MODULES.items()}


@pytest.mark.parametrize("command", ["dlq", "worker-tokens", "consumer", "send-event"])
def test_a_command_alone_still_works(command: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", command, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(headwater.__file__).parents[1])},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
