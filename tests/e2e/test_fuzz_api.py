"""Schemathesis over the server's OpenAPI spec, against ``headwater up`` on SQLite.

Every generated request (valid and invalid: wrong types, huge numbers, odd strings,
missing fields) must get an answer below 500, and no answer may contain a configured
secret value, even though a job's input and output hold one. Sized for CI (a few
examples per operation); ``bench/fuzz.py`` runs the same test long
(``HEADWATER_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.e2e.procs import Up

SECRET = "fuzz-s3cret-value-7f3a"
EXAMPLES = int(os.environ.get("HEADWATER_FUZZ_EXAMPLES", "6"))

WORKSPACE = """
secrets:
  token: "fuzz-s3cret-value-7f3a"
actions:
  echo:
    type: script
    script: |
      echo 'OUTPUT: {"said": "{{ input.word }}", "token": "{{ secret.token }}"}'
tasks:
  say:
    input:
      word: { type: string, required: true }
      times: { type: integer, default: 1 }
    flow:
      echo: { action: echo, input: { word: "{{ input.word }}" } }
triggers:
  hook:
    type: webhook
    task: say
    secret: "{{ secret.token }}"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    up = Up(path, folder)
    try:
        # A job whose input and output hold the secret, for the listings to show.
        resp = up.client.post("/api/tasks/say/run", json={"input": {"word": SECRET}})
        assert resp.status_code == 201, resp.text
        up.wait_job(resp.json()["job_id"])
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def api_schema(server: Up) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_no_request_gets_a_5xx_or_a_secret(api_schema: schemathesis.BaseSchema) -> None:
    """(Driven by hand: schemathesis' pytest plugin does not run on this pytest.)"""
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            # A long poll (``?wait=``, ``follow=``) would only spend the time budget.
            if case.query:
                case.query.pop("follow", None)
                case.query.pop("wait", None)
            response = case.call(timeout=30)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            assert SECRET not in response.text, f"{where} leaked a secret: {response.text}"

        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0][:500])
    assert operations >= 10  # the spec was read
    assert not failures, "\n".join(failures)
