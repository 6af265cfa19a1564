"""``headwater pause``/``resume``, ``retry --from`` and bulk ``retry``/``cancel`` with
``--dry-run`` against a real ``headwater up``."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Up, run_cli

WORKSPACE = """
actions:
  first:
    type: script
    script: |
      echo run >> {tmp}/first_runs
      echo 'OUTPUT: {{"v": 1}}'
  second:
    type: script
    script: '[ -f {tmp}/ok ] || exit 3'
  quick:
    type: script
    script: "true"
tasks:
  pipe:
    flow:
      a: {{ action: first }}
      b: {{ action: second, depends_on: [a] }}
  held:
    input:
      n: {{ type: integer }}
    flow:
      s: {{ action: quick }}
triggers:
  hook:
    type: webhook
    task: held
"""


# One worker runs this module, so the module's `headwater up` starts once (spread over
# the xdist workers, each of them started its own).
pytestmark = pytest.mark.xdist_group("cli_flow")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("cli-flow")
    path = tmp / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE.format(tmp=tmp)))
    server = Up(path, tmp)
    server.tmp = tmp  # type: ignore[attr-defined]
    yield server
    server.stop()


def hw(up: Up, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, HEADWATER_SERVER=up.url)
    return result.returncode, result.stdout, result.stderr


def submit(up: Up, task: str, job_input: dict[str, object]) -> str:
    # Over HTTP: a CLI process per job would only add start-up time.
    made = up.client.post(f"/api/tasks/{task}/run", json={"input": job_input})
    assert made.status_code == 201, made.text
    return str(made.json()["job_id"])


def test_retry_from_a_step_keeps_the_steps_before_it(up: Up) -> None:
    tmp: Path = up.tmp  # type: ignore[attr-defined]
    failed = submit(up, "pipe", {})
    assert up.wait_job(failed)["status"] == "failed"
    (tmp / "ok").touch()
    code, _out, err = hw(up, "retry", failed[-8:], "--from", "b", "--wait")
    assert code == 0, err
    assert "from step b; kept a" in err
    assert (tmp / "first_runs").read_text() == "run\n"  # a was not run again

    code, _out, err = hw(up, "retry", failed, "--from", "nope")
    assert code == 1
    assert "no step 'nope'" in err


def test_pause_bulk_cancel_and_retry_with_dry_run(up: Up) -> None:
    code, out, err = hw(up, "pause", "task", "held")
    assert code == 0, err
    assert out.strip() == "task held paused"
    code, out, err = hw(up, "tasks", "--json")
    assert {t["name"]: t["paused"] for t in json.loads(out)} == {"pipe": False, "held": True}

    jobs = [submit(up, "held", {"n": n}) for n in range(3)]
    code, out, err = hw(up, "cancel", "--task", "held", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == "3 jobs would be cancelled:"
    assert {line.split()[0] for line in out.splitlines()[1:]} == set(jobs)
    assert {up.client.get(f"/api/jobs/{j}").json()["status"] for j in jobs} == {"pending"}

    code, out, err = hw(up, "cancel", "--task", "held", "--json")
    assert code == 0, err
    assert sorted(j["id"] for j in json.loads(out)["jobs"]) == sorted(jobs)
    assert {up.client.get(f"/api/jobs/{j}").json()["status"] for j in jobs} == {"cancelled"}

    code, out, err = hw(up, "retry", "--task", "held", "--status", "cancelled", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == "3 jobs would be retried:"
    code, out, err = hw(up, "retry", "--task", "held", "--status", "cancelled", "--since", "1h")
    assert code == 0, err
    assert out.splitlines()[0] == "3 jobs retried:"
    retries = [
        j["id"] for j in up.client.get("/api/jobs", params={"source_type": "retry"}).json()["jobs"]
    ]
    code, out, err = hw(up, "resume", "task", "held")
    assert code == 0, err
    for job_id in retries:
        assert up.wait_job(job_id)["status"] in ("completed", "failed")

    code, out, err = hw(up, "cancel")
    assert code == 2
    assert "which job?" in err


def test_pause_a_trigger_shows_in_triggers_and_refuses_its_webhook(up: Up) -> None:
    code, out, err = hw(up, "pause", "trigger", "hook", "--json")
    assert code == 0, err
    assert json.loads(out)["paused"] is True
    code, out, err = hw(up, "triggers", "--json")
    assert {t["name"]: t["paused"] for t in json.loads(out)} == {"hook": True}
    code, out, err = hw(up, "triggers")
    assert "paused" in out
    refused = up.client.post("/hooks/hook", json={"n": 1})
    assert refused.status_code == 503
    assert "Retry-After" in refused.headers
    code, out, err = hw(up, "resume", "trigger", "hook")
    assert code == 0, err
    assert up.client.post("/hooks/hook", json={"n": 1}).status_code in (200, 201, 202)
    code, out, err = hw(up, "pause", "trigger", "nope")
    assert code == 1
    assert "nope" in err
