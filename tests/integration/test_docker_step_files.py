"""A docker step's artifacts and task state through a real node (SQLite and PostgreSQL),
up to the Docker API calls (tests/fake_docker.py records them)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.artifacts import ArtifactStore
from headwater.node import Node, NodeSettings
from headwater.store.base import JobRecord, JobStatus
from tests.conftest import require_module
from tests.fake_docker import FakeDockerEngine, Script
from tests.integration.test_engine import write_workspace

require_module("docker", "runners")

IMAGE = "alpine:3.20"
WORKSPACE = f"""
actions:
  build:
    type: script
    runner: docker
    image: {IMAGE}
    script: |
      cat "$STATE_DIR/cache.txt" || true
      echo built > "$ARTIFACTS_DIR/build.log"
      echo warm > "$STATE_OUT_DIR/cache.txt"
      echo 'STATE: {{"builds": 1}}'
tasks:
  build:
    flow:
      build: {{ action: build }}
"""


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDockerEngine]:
    fake = FakeDockerEngine()
    fake.images.add(IMAGE)
    monkeypatch.setenv("DOCKER_HOST", fake.url)
    monkeypatch.setenv("HEADWATER_RUNNERS", "local,docker")
    yield fake
    fake.close()


async def test_a_docker_steps_folders_are_copied_in_and_kept(
    tmp_path: Path, db_url: str, engine: FakeDockerEngine
) -> None:
    # what the script above would write, written by the fake container
    engine.script = Script(
        output=[(1, b'STATE: {"builds": 1}\n')],
        writes={"/artifacts/build.log": b"built\n", "/state-out/cache.txt": b"warm\n"},
    )
    node = Node(
        write_workspace(tmp_path, WORKSPACE),
        NodeSettings(db_url=db_url, run_worker=False, artifacts_dir=tmp_path / "kept"),
    )
    await node.start()
    try:
        first = await node.run_one("build", {})
        assert first.status is JobStatus.COMPLETED, await _why(node, first)
        (created,) = [r.body for r in engine.calls(lambda r: r.path == "/containers/create")]
        env = dict(e.split("=", 1) for e in created["Env"])
        assert env["ARTIFACTS_DIR"] == "/artifacts" and env["STATE_DIR"] == "/state"
        kept = ArtifactStore(tmp_path / "kept").artifacts_of(first.id)
        assert [(a.name, a.size_bytes) for a in kept] == [("build.log", 6)]
        snapshot = await node.store.get_task_state(node.workspace().name, "build")
        assert snapshot is not None and snapshot.state == {"builds": 1}

        # the next run's container gets the saved file in /state
        engine.containers.clear()
        engine.requests.clear()
        second = await node.run_one("build", {})
        assert second.status is JobStatus.COMPLETED, await _why(node, second)
        (put,) = engine.calls(lambda r: r.method == "PUT" and r.path.endswith("/archive"))
        with tarfile.open(fileobj=io.BytesIO(put.body)) as tar:
            names = set(tar.getnames())
            handle = tar.extractfile("state/cache.txt")
            assert handle is not None and handle.read() == b"warm\n"
        assert {"artifacts", "state-out", "state/state.json"} <= names
    finally:
        await node.close()


async def _why(node: Node, job: JobRecord) -> str:
    """A failed job's step errors and log lines, for the assertion message."""
    lines = [f"{s.name}: {s.status.value}: {s.error}" for s in job.steps]
    lines += [f"log: {r.line}" for r in await node.store.get_logs(job.id)]
    return "\n".join(lines)
