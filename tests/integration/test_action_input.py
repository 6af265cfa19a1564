"""An action's ``input:`` schema completes the step's input, as Strøm does."""

from __future__ import annotations

from pathlib import Path

from headwater.store.base import JobStatus
from tests.integration.test_engine import start_node

WORKSPACE = """
secrets:
  token: s3cr3t
actions:
  greet:
    type: script
    input:
      name: { type: string, default: world }
      greeting: { type: string, default: hello }
      auth: { type: string, default: "{{ secret.token }}" }
      target: { type: object, default: { host: "{{ secret.token }}-host", port: 5432 } }
      region: { type: string }
    language: python
    script: |
      import json
      print("OUTPUT: " + json.dumps({
          "text": "{{ input.greeting }} {{ input.name }}",
          "auth": "{{ input.auth }}",
          "host": "{{ input.target.host }}",
          "port": {{ input.target.port }},
          "region": "{{ input.region | default(value='none') }}",
      }))
tasks:
  hello:
    input:
      region: { type: string, default: eu-north-1 }
    flow:
      plain: { action: greet }
      given: { action: greet, input: { name: ada, greeting: hi } }
"""


async def test_action_defaults_and_job_input_fill_what_the_step_left_out(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    try:
        job = await node.run_one("hello", {})
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output is not None
        # No step input at all: defaults (templates rendered) and the job's own field.
        # The secret reached the step; outputs are masked before they are stored.
        assert job.output["plain"] == {
            "text": "hello world",
            "auth": "••••••",
            "host": "••••••-host",
            "port": 5432,
            "region": "eu-north-1",
        }
        # What the step gives wins over both.
        assert job.output["given"]["text"] == "hi ada"
        assert job.output["given"]["auth"] == "••••••"
    finally:
        await node.close()
