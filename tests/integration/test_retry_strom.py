"""Strøm's retry syntax at step and action level; the step's own retry wins."""

from __future__ import annotations

from pathlib import Path

from headwater.store.base import JobStatus
from tests.integration.test_engine import start_node


async def test_action_retry_applies_unless_the_step_sets_its_own(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          flaky:
            type: script
            input:
              name: {{ type: string }}
            script: |
              f={tmp_path}/{{{{ input.name }}}}
              n=$(cat $f 2>/dev/null || echo 0); n=$((n+1)); echo $n > $f
              [ "$n" -ge 3 ] || exit 1
            retry: {{ max_attempts: 5, delay: 0s }}
        tasks:
          t:
            flow:
              inherits: {{ action: flaky, input: {{ name: a }} }}
              overrides:
                action: flaky
                input: {{ name: b }}
                retry: {{ max_attempts: 1, delay: 0s, backoff: exponential, jitter: true }}
        """,
    )
    try:
        job = await node.run_one("t", {})
        steps = {s.name: s for s in job.steps}
        assert steps["inherits"].attempts == 3  # the action's retry: 2 retries needed, 5 allowed
        assert steps["inherits"].status.value == "completed"
        assert steps["overrides"].attempts == 2  # the step's own: one retry, then it fails
        assert steps["overrides"].status.value == "failed"
        assert job.status is JobStatus.FAILED
    finally:
        await node.close()
