"""The README's set-up, followed literally on a fresh clone: its "Start in two commands"
block runs as written (a new virtualenv, ``pip install -e .``, ``headwater up
examples/orders``) and the main example makes jobs that complete; its test command is
the very line CI runs.

The block is run by bash exactly as a person pastes it. What the environment adds: a free
port (``HEADWATER_PORT``, so that 8080 may be taken), pip's constraints file
(``PIP_CONSTRAINT``: the versions CI tests, and less resolving), and no PYTHONPATH (the
clone's own install is what runs).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.procs import REPO, free_port

SETUP_SECTION = "## Start in two commands"
TEST_SECTION = "## Run the tests"
DEADLINE = 420.0  # seconds for pip to install and the example to run its first jobs

pytestmark = [
    pytest.mark.slow,
    # One at a time: a pip install and a whole server are heavy on a shared machine.
    pytest.mark.xdist_group("readme_fresh_clone"),
    pytest.mark.timeout(DEADLINE + 120),
]


def first_bash_block(readme: str, section: str) -> list[str]:
    """The lines of the first ```bash block after the heading ``section``."""
    after = readme.split(f"\n{section}\n", 1)[1]
    match = re.search(r"^```bash\n(.*?)^```$", after, re.S | re.M)
    assert match, f"no ```bash block under {section!r}"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_readme_blocks_are_found() -> None:
    readme = (REPO / "README.md").read_text()
    setup = first_bash_block(readme, SETUP_SECTION)
    assert any("headwater up examples/orders" in line for line in setup), setup
    assert any(line.startswith("pip install") for line in setup), setup


def test_the_readme_test_command_is_the_line_ci_runs() -> None:
    (command,) = first_bash_block((REPO / "README.md").read_text(), TEST_SECTION)
    ci = (REPO / ".ci" / "run").read_text()
    match = re.search(r'^TEST_COMMAND="(.*)"$', ci, re.M)
    assert match, ".ci/run defines no TEST_COMMAND"
    assert command == match.group(1)
    assert 'eval "$TEST_COMMAND"' in ci


def _jobs(url: str) -> list[dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{url}/api/jobs?task=process-order", timeout=5) as resp:
            jobs: list[dict[str, object]] = json.load(resp)["jobs"]
            return jobs
    except OSError:
        return []


def test_the_readme_setup_runs_the_main_example_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "headwater"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    setup = first_bash_block((clone / "README.md").read_text(), SETUP_SECTION)
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HEADWATER_PORT", "HEADWATER_SERVER")
    }
    env |= {
        "HEADWATER_PORT": str(port),
        "PIP_CONSTRAINT": str(clone / "constraints.txt"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "NO_COLOR": "1",
    }
    log = tmp_path / "setup.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", "\n".join(setup)],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its process group: bash, pip, then headwater up
        )
    url = f"http://127.0.0.1:{port}"
    completed: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and proc.poll() is None:
            completed = [j for j in _jobs(url) if j["status"] == "completed"]
            if completed:
                break
            time.sleep(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the person would
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = log.read_text()
    assert completed, f"no process-order job completed; the block printed:\n{output[-4000:]}"
    assert (clone / ".venv" / "bin" / "headwater").exists()  # the block's own virtualenv
    assert completed[0]["source_type"] == "event_source"  # from the example's consumer
