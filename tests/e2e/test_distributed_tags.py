"""Distributed mode end to end on PostgreSQL: one `headwater server` serving two
workspaces, two `headwater worker` processes with different tags, and one job whose
steps need both workers (x86 → arm → x86), one of them another workspace's action."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx

from tests.conftest import require_service
from tests.e2e.cluster import HEADWATER, Proc, Server, create_token, wait_for

BUILD = """
actions:
  compile:
    type: script
    tags: [x86]
    script: |
      echo 'OUTPUT: {"built": "x86"}'
tasks:
  build:
    flow:
      compile: { action: compile }
      port:
        action: tools.cross-compile     # the tools workspace's action, on an arm worker
        depends_on: [compile]
        tags: [arm]
        input: { what: "{{ compile.output.built }}" }
      package: { action: compile, depends_on: [port] }
"""

TOOLS = """
secrets:
  signing_key: "tools-key"
actions:
  cross-compile:
    type: script
    source: cross.sh
    env:
      WHAT: "{{ input.what }}"
      KEY: "{{ secret.signing_key }}"
"""

CROSS = """\
test "$KEY" = "tools-key" || exit 3
echo "OUTPUT: {\\"ported\\": \\"$WHAT->arm\\"}"
"""


def write(tmp_path: Path) -> Path:
    root = tmp_path / "workspaces"
    (root / "main").mkdir(parents=True)
    (root / "main" / "build.yaml").write_text(textwrap.dedent(BUILD))
    (root / "tools").mkdir()
    (root / "tools" / "tools.yaml").write_text(textwrap.dedent(TOOLS))
    (root / "tools" / "cross.sh").write_text(CROSS)
    config = root / "server-config.yaml"
    config.write_text(
        "workspaces:\n"
        "  main: { type: folder, path: ./main }\n"
        "  tools: { type: folder, path: ./tools }\n"
    )
    return config


def worker(name: str, url: str, token: str, tags: str, cwd: Path) -> Proc:
    config = cwd / f"{name}.yaml"
    config.write_text(
        f"worker_token: {token}\nname: {name}\nheartbeat_interval: 0.3\n"
        f"cache_dir: {cwd / (name + '-cache')}\n"
    )
    args = [HEADWATER, "worker", "--config", str(config), "--server", url, "--tags", tags]
    return Proc(name, [*args, "--log-level", "warning"], cwd)


def test_one_job_crosses_two_workers_by_step_tags(tmp_path: Path, pg_url: str) -> None:
    require_service("postgres")
    config = write(tmp_path)
    server = Server("server", config, pg_url, tmp_path)
    token = create_token(pg_url, "e2e")
    workers = [
        worker("intel", server.url, token, "script,x86", tmp_path),
        worker("arm", server.url, token, "script,arm", tmp_path),
    ]
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            created = client.post("/api/tasks/build/run", json={"input": {}})
            assert created.status_code == 201, created.text
            job_id = created.json()["job_id"]

            def finished() -> dict | None:  # type: ignore[type-arg]
                job = client.get(f"/api/jobs/{job_id}").json()
                return job if job["status"] in ("completed", "failed") else None

            job = wait_for(finished, 90, "the job to finish")
            assert job["status"] == "completed", job
            assert job["output"]["port"] == {"ported": "x86->arm"}
            assert {s["name"]: s["attempts"] for s in job["steps"]} == {
                "compile": 1,
                "port": 1,
                "package": 1,
            }
            logs = client.get(f"/api/jobs/{job_id}/logs").json()
            lines = [r["line"] for r in (logs["logs"] if isinstance(logs, dict) else logs)]
            assert [x for x in lines if x.startswith("waiting for a worker")] == [
                "waiting for a worker with the tags arm, script (step 'port')",
                "waiting for a worker with the tags script, x86 (step 'package')",
            ]
            names = {w["id"]: w["name"] for w in client.get("/api/workers").json()}
            assert names.get(job["worker_id"]) == "intel"
    finally:
        for w in workers:
            w.stop()
        server.stop()
