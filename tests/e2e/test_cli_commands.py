"""``submit``, ``retry``, ``workers`` and short job ids against a real ``headwater up``."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import HEADWATER, Up, run_cli
from tests.e2e.test_run_and_up import workspace

# One worker runs this module, so the module's `headwater up` starts once (spread over
# the xdist workers, each of them started its own).
pytestmark = pytest.mark.xdist_group("cli_commands")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("cli-commands")
    server = Up(workspace(tmp), tmp)
    yield server
    server.stop()


def hw(up: Up, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, HEADWATER_SERVER=up.url)
    return result.returncode, result.stdout, result.stderr


def common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def submit_id(up: Up, task: str, job_input: dict[str, object]) -> str:
    code, out, err = hw(up, "submit", task, "--input", json.dumps(job_input), "--json")
    assert code == 0, err
    return str(json.loads(out)["id"])


def test_submit_wait_exits_0_when_completed_and_1_when_failed(up: Up) -> None:
    code, out, err = hw(up, "submit", "hello", "--input", '{"name": "cli"}', "--wait")
    assert code == 0, err
    assert "completed" in err

    code, out, err = hw(up, "submit", "broken", "--wait")
    assert code == 1
    assert "failed" in err

    code, out, err = hw(up, "submit", "hello", "-i", '{"name": "f"}', "--follow")
    assert code == 0, err
    assert "[greet] Hello f" in out  # the job's logs, each with a timestamp first


def test_submit_json_and_its_errors(up: Up) -> None:
    code, out, err = hw(up, "submit", "hello", "--input", '{"name": "j"}', "--wait", "--json")
    assert code == 0, err
    job = json.loads(out)
    assert job["status"] == "completed"
    assert job["output"] == {"greet": {"greeting": "Hello j"}}

    code, out, err = hw(up, "submit", "hello", "--input", "[1]")
    assert code == 2
    assert "JSON object" in err
    code, out, err = hw(up, "submit", "hello")  # required input missing: the API's 422
    assert code == 1
    assert "name" in err
    code, out, err = hw(up, "submit", "nope")
    assert code == 1
    assert "nope" in err


def test_retry_makes_a_new_job_with_the_same_input(up: Up) -> None:
    first = submit_id(up, "hello", {"name": "again"})
    up.wait_job(first)

    code, out, err = hw(up, "retry", first[-8:], "--wait", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["id"] != first
    assert again["task"] == "hello"
    assert again["input"] == {"name": "again"}
    assert (again["source_type"], again["source_id"]) == ("retry", first)
    assert again["status"] == "completed"


def test_retry_refuses_a_job_that_is_not_final(up: Up) -> None:
    running = submit_id(up, "slow", {"seconds": 60})
    try:
        code, _, err = hw(up, "retry", running)
        assert code == 1
        assert "only a final job can be retried" in err
    finally:
        assert hw(up, "cancel", running)[0] == 0
    up.wait_job(running)


def test_workers_lists_the_embedded_worker(up: Up) -> None:
    code, out, err = hw(up, "workers", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert len(found) >= 1
    worker = found[0]
    assert {"id", "name", "tags", "last_heartbeat", "live", "running_jobs"} <= worker.keys()
    assert worker["live"] is True
    assert not any("token" in key or "hash" in key for key in worker)

    code, out, err = hw(up, "workers")
    assert code == 0, err
    assert "NAME" in out and "HEARTBEAT" in out
    assert worker["name"][:8] in out


def test_short_ids_unique_ambiguous_and_unknown(up: Up) -> None:
    # Two jobs created together share their leading (time) characters.
    # Eight hex characters of time span 65 seconds: a pair that straddles a boundary (or, on
    # a loaded machine, takes long to submit) is submitted again, both of its jobs.
    for _ in range(3):
        a = submit_id(up, "hello", {"name": "a"})
        b = submit_id(up, "hello", {"name": "b"})
        common = common_prefix(a, b)
        if len(common) >= 8:
            break
    assert len(common) >= 8, (a, b)
    up.wait_job(a)
    up.wait_job(b)

    # A unique suffix (what the tables show) and a unique prefix both resolve. The prefix
    # reaches into the id's random bits: the fixture's server holds other tests' jobs
    # too, and one created in the same millisecond range may share a shorter prefix.
    for short in (a[-8:], a[: max(len(common) + 1, 20)]):
        code, out, err = hw(up, "job", short, "--json")
        assert code == 0, err
        assert json.loads(out)["id"] == a
    code, out, err = hw(up, "logs", b[-8:])
    assert code == 0, err
    assert "Hello b" in out

    # Ambiguous: the error names the candidates.
    code, out, err = hw(up, "job", common[:8])
    assert code == 1
    assert "ambiguous" in err and a in err and b in err

    # Unknown, and too short.
    code, out, err = hw(up, "cancel", "ffffffffffff")
    assert code == 1
    assert "not found" in err
    code, out, err = hw(up, "job", a[-5:])
    assert code == 1
    assert "at least 8 characters" in err


def test_ctrl_c_on_run_cancels_the_job_and_says_so(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/run.db"
    proc = subprocess.Popen(
        [HEADWATER, "run", str(workspace(tmp_path)), "slow", "-i", '{"seconds": 60}', "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert proc.stdout is not None
        assert "started" in proc.stdout.readline()  # the step runs
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    match = re.search(r"interrupted: job (\S+) cancelled", err)
    assert match, err
    # The job is final in the database, not left running.
    with sqlite3.connect(tmp_path / "run.db") as conn:
        (status,) = conn.execute("SELECT status FROM jobs WHERE id = ?", (match[1],)).fetchone()
    assert status == "cancelled"
