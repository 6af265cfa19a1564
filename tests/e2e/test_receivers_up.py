"""The redis_stream example as a user runs it: up, publish, jobs, dead letters, replay."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.e2e.procs import REPO, Up, eventually, run_cli, up_jobs, up_triggers

EXAMPLE = REPO / "examples" / "receivers" / "redis_stream.yaml"

# With the redis_stream contract tests, whose broker cuts would hit this receiver too.
pytestmark = pytest.mark.xdist_group("broker-redis_stream")


def test_redis_stream_example_makes_jobs_and_replays_a_dead_letter(tmp_path: Path) -> None:
    require_service("redis")
    import redis

    # The example as shipped, on a stream of its own (Redis is shared with other test runs).
    stream = f"shop:orders:{uuid.uuid4().hex[:10]}"
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "stream: shop:orders\n" in text
    workspace = tmp_path / "redis_stream.yaml"
    workspace.write_text(text.replace("stream: shop:orders\n", f"stream: {stream}\n"))
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    up = Up(workspace, tmp_path)
    try:
        eventually(
            lambda: up_triggers(up)["orders"]["state"]["state"] == "running",
            what="the receiver to run",
        )
        for order in (1, 2, 3):
            r.xadd(stream, {"payload": json.dumps({"order_id": order, "total": 9.5})})
        r.xadd(stream, {"payload": "not an order"})  # a string: the task wants an object

        def three_done() -> list[dict[str, Any]] | None:
            jobs = up_jobs(up, source_type="redis_stream")
            done = [j for j in jobs if j["status"] == "completed"]
            return jobs if len(done) == 3 else None

        jobs = eventually(three_done, what="3 completed jobs")
        assert len(jobs) == 3
        logs = run_cli("logs", jobs[0]["id"], "--server", up.url)
        assert "order " in logs.stdout and "from stream entry" in logs.stdout

        listed = run_cli("dlq", "list", "--json", "--server", up.url)
        assert listed.returncode == 0, listed.stderr
        (dead,) = json.loads(listed.stdout)
        assert dead["source_id"] == "default/orders" or dead["source_id"].endswith("/orders")
        assert "payload" in dead["reason"]

        fixed = json.dumps({"payload": {"order_id": 4}, "metadata": {"replayed": True}})
        replay = run_cli("dlq", "replay", str(dead["id"]), "--input", fixed, "--server", up.url)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "created" in replay.stdout
        again = run_cli("dlq", "replay", str(dead["id"]), "--server", up.url)
        assert again.returncode == 0 and "already_replayed" in again.stdout
        eventually(lambda: len(up_jobs(up, source_type="redis_stream")) == 4, what="4 jobs")
        assert json.loads(run_cli("dlq", "list", "--json", "--server", up.url).stdout) == []

        metrics = up.client.get("/metrics").text
        assert 'headwater_trigger_events_accepted{trigger="orders",type="redis_stream"} 4.0' in (
            metrics
        )
        assert 'headwater_trigger_lag_events{trigger="orders",type="redis_stream"} 0.0' in metrics
    finally:
        up.stop()
        r.delete(stream)
        r.close()
