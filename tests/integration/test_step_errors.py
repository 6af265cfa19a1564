"""A failed step's error says why: its last stderr lines, not only its exit code."""

from __future__ import annotations

from pathlib import Path

from headwater.store.base import JobStatus, StepStatus
from tests.integration.test_engine import start_node

WORKSPACE = """
actions:
  lookup:
    type: script
    language: python
    script: |
      import sys
      print("looking up", flush=True)
      for i in range(30):
          print(f"noise {i}", file=sys.stderr)
      config = {}
      print(config["database_url"])
  quiet: { type: script, script: "exit 2" }
tasks:
  t:
    flow:
      lookup: { action: lookup }
  q:
    flow:
      quiet: { action: quiet }
"""


async def test_a_python_traceback_ends_up_in_the_step_error(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    try:
        job = await node.run_one("t", {})
        assert job.status is JobStatus.FAILED
        (step,) = job.steps
        assert step.status is StepStatus.FAILED
        error = step.error or ""
        assert error.startswith("exit code 1")
        assert "KeyError: 'database_url'" in error
        assert "noise 29" in error and "noise 0\n" not in error  # only the last lines
        assert "looking up" not in error  # stdout is not the cause
        assert "KeyError: 'database_url'" in (job.error or "")

        job = await node.run_one("q", {})
        assert job.steps[0].error == "exit code 2"  # nothing on stderr: nothing added
    finally:
        await node.close()
