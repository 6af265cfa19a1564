"""``headwater open`` against a real ``headwater up``: the URL it prints, the browser it
starts, and what it says with no display or no server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import HEADWATER, Up, free_port, run_cli
from tests.e2e.test_run_and_up import workspace

# One worker runs this module, so the module's `headwater up` starts once (spread over
# the xdist workers, each of them started its own).
pytestmark = pytest.mark.xdist_group("open_cli")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("open")
    server = Up(workspace(tmp), tmp)
    yield server
    server.stop()


def _run_headless(*args: str) -> subprocess.CompletedProcess[str]:
    """``headwater ARGS`` with no display and no BROWSER, as over ssh on a server."""
    unset = ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run([HEADWATER, *args], capture_output=True, text=True, timeout=60, env=env)


def test_open_prints_the_docs_url_and_starts_the_browser(up: Up, tmp_path: Path) -> None:
    seen = tmp_path / "browser-was-given"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {seen}\n')
    browser.chmod(0o755)

    result = run_cli("open", "--server", up.url, BROWSER=f"{browser} %s")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{up.url}/docs\n"
    assert "opened in your browser" in result.stderr
    assert seen.read_text() == f"{up.url}/docs"
    assert httpx.get(f"{up.url}/docs").status_code == 200  # the page is there


def test_open_without_a_display_prints_the_url_and_says_why(up: Up) -> None:
    result = _run_headless("open", "--server", up.url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{up.url}/docs\n"
    assert "no display here" in result.stderr


def test_open_print_starts_no_browser(up: Up) -> None:
    result = run_cli("open", "--print", "--server", f"{up.url}/", BROWSER="false %s")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{up.url}/docs\n"
    assert result.stderr == ""


def test_open_without_a_server_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("open", "--server", url, BROWSER="false %s")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: no headwater server answers at {url} "
        "(start one with 'headwater up PATH', or pass --server)\n"
    )
