"""The server's API keys come from HEADWATER_API_KEY (the name its start-up error gives)
or HEADWATER_API_KEYS, one key or a comma-separated list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import headwater.app.server as distributed_server
import headwater.cli.cluster_cmds  # noqa: F401  (registers server)
import headwater.cli.run_cmds as run_cmds
import headwater.logging_setup as logging_setup
from headwater.cli import _register, app

ENV = {"HEADWATER_API_KEY": None, "HEADWATER_API_KEYS": None, "COLUMNS": "200"}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws.yaml"
    path.write_text(
        "tasks:\n  t:\n    flow:\n      s: {action: a}\nactions:\n  a:\n"
        "    type: script\n    script: 'true'\n"
    )
    return path


@pytest.mark.parametrize(
    ("env", "keys"),
    [
        ({"HEADWATER_API_KEY": "k-1"}, ["k-1"]),
        ({"HEADWATER_API_KEY": "k-1,k-2"}, ["k-1", "k-2"]),
        ({"HEADWATER_API_KEYS": "k-1,k-2"}, ["k-1", "k-2"]),
    ],
)
def test_up_and_server_read_either_variable(
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    keys: list[str],
) -> None:
    seen: list[Any] = []

    async def fake_up(*args: Any) -> None:
        seen.append(list(args[5]))

    async def fake_server(settings: Any, err: Any) -> None:
        seen.append(list(settings.api_keys))

    # Logging set up on the runner's stderr would outlive it (closed) in later tests.
    monkeypatch.setattr(logging_setup, "configure_logging", lambda *args: None)
    monkeypatch.setattr(run_cmds, "_up", fake_up)
    monkeypatch.setattr(distributed_server, "run_server", fake_server)
    _register()
    runner = CliRunner()
    for command in ("up", "server"):
        result = runner.invoke(
            app,
            [command, str(workspace), "--host", "0.0.0.0", "--port", "0"],
            env={**ENV, **env},
        )
        assert result.exit_code == 0, result.output
    assert seen == [keys, keys]
