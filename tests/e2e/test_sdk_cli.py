"""The SDK's commands as a user runs them: consumers list, send-event, publisher run,
consumer run/status, dlq list/replay --db, quarantine list/release, up app.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.procs import HEADWATER, Up, eventually, free_port, run_cli

pytestmark = pytest.mark.timeout(150)

APP = str(Path(__file__).with_name("sdk_cli_app.py"))
REDIS = "redis://127.0.0.1:6379/0"


class Bg:
    """A headwater command in the background, logging to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [HEADWATER, *args], stdout=out, stderr=subprocess.STDOUT, env=env
            )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text()


# Each test runs on one store: the pipeline (publisher, consumers, dead letter, replay) on
# PostgreSQL, the quarantine and `up` on SQLite. What differs between the stores is below
# these commands and is tested on both: the consumers' exactly-once, dead letters, replay
# and lease in tests/integration/test_sdk_consumer.py, the state the quarantine is kept in
# by the store contract tests, and the whole pipeline through kill -9s on each store in
# tests/e2e/test_sdk_crash.py. (Every test on both stores cost CI three more runs of
# 45-55 s, each starting a dozen headwater processes.)
@pytest.fixture
def sqlite_env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    return _env(tmp_path, sqlite_url)


@pytest.fixture
def pg_env(tmp_path: Path, pg_url: str) -> dict[str, str]:
    return _env(tmp_path, pg_url)


def _env(tmp_path: Path, db_url: str) -> dict[str, str]:
    require_service("redis")
    flags = tmp_path / "flags"
    flags.mkdir()
    return {
        **os.environ,
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "HEADWATER_DATABASE_URL": db_url,
        "HEADWATER_REDIS_URL": REDIS,
        "SDK_E2E_STREAM": f"stream:e2e:{uuid.uuid4().hex[:10]}",
        "SDK_E2E_FLAGS": str(flags),
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HEADWATER, *args], capture_output=True, text=True, timeout=60, env=env)


def _series(body: str, name: str, consumer: str) -> list[float]:
    """The values of ``name`` for ``consumer`` in a Prometheus text page."""
    return [
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name + "{") and f'consumer_name="{consumer}"' in line
    ]


def status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What ``headwater consumer status --json`` prints, read in this process: the
    waits poll it many times, and a CLI process per poll took a core from the
    consumers under test. The pipeline test checks the command prints the same."""
    from headwater.sdk.status import read_status

    urls = env["HEADWATER_DATABASE_URL"], env["HEADWATER_REDIS_URL"]
    found = json.loads(json.dumps(asyncio.run(read_status(*urls, None))))
    return {c["name"]: c for c in found["consumers"]}


def in_quarantine(env: dict[str, str]) -> list[str]:
    """The quarantined consumers, read in this process: a ``headwater quarantine list``
    per poll took a core from the supervisor and the workers under test. The test then
    checks that the command lists the same."""
    from headwater.sdk.consumers.quarantine import list_quarantined
    from headwater.store.sql import open_store

    async def read() -> list[str]:
        store = await open_store(env["HEADWATER_DATABASE_URL"])
        try:
            return [record.key for record in await list_quarantined(store, None)]
        finally:
            await store.close()

    return asyncio.run(read())


def cli_status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = cli(env, "consumer", "status", "--json")
    assert result.returncode == 0, result.stderr
    return {c["name"]: c for c in json.loads(result.stdout)["consumers"]}


def test_consumers_list_shows_every_registration(tmp_path: Path) -> None:
    result = run_cli("consumers", "list", APP, "--json", SDK_E2E_REDIS=REDIS)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["app"] == "e2e"
    rows = {r["name"]: r for r in listed["registrations"]}
    assert rows["ledger"]["function"] == "sdk_cli_app:ledger"
    assert rows["ledger"]["guarantee"] == "exactly_once"
    assert rows["enrich"]["source"].startswith("redis_stream:")
    table = run_cli("consumers", "list", APP)
    assert "e2e.ledger" in table.stdout and "sdk_cli_app:picky" in table.stdout
    missing = run_cli("consumers", "list", "no_such_app_module")
    assert missing.returncode == 1
    assert "cannot import 'no_such_app_module'" in missing.stderr


def test_the_pipeline_end_to_end_with_a_dead_letter_replayed(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    env = pg_env
    stream = env["SDK_E2E_STREAM"]
    sent = cli(env, "send-event", "--stream", stream, "--event-type", "Credit",
               "--payload", '{"amount": 5}', "--count", "3")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert len(sent.stdout.split()) == 3
    bad = cli(env, "send-event", "--stream", stream, "--event-type", "Credit",
              "--payload", '{"amount": -1}')  # fmt: skip
    assert bad.returncode == 0, bad.stderr
    rejected = cli(env, "send-event", "--stream", stream, "--event-type", "Credit",
                   "--payload", "[1]")  # fmt: skip
    assert rejected.returncode == 2 and "must be a JSON object" in rejected.stderr
    publisher = Bg(["publisher", "run"], tmp_path / "pub.log", env)
    port = free_port()
    supervisor = Bg(["consumer", "run", APP, "--heartbeat-dir", str(tmp_path / "beats"),
                     "--poll-interval", "0.5", "--metrics-port", str(port)],
                    tmp_path / "sup.log", env)  # fmt: skip
    try:

        def settled() -> dict[str, Any] | None:
            found = status(env)
            ledger, picky = found.get("e2e.ledger"), found.get("e2e.picky")
            if ledger and picky and ledger["events_processed"] == 4 and picky["dead_letters"]:
                return found
            return None

        found = eventually(settled, timeout=60, what="4 events and a dead letter")

        def metrics() -> str | None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return None
            # Both are read on their own schedules: the count every 10 s, the age from the
            # worker's heartbeat file (written at most once per heartbeat interval), so
            # one can be exported before the other.
            caught_up = _series(body, "headwater_consumer_lag_events_count", "e2e.ledger")
            age = _series(body, "headwater_consumer_lag_ms", "e2e.ledger")
            return body if caught_up == [0.0] and age == [0.0] else None

        body = eventually(metrics, timeout=30, what="the lag on /metrics")
        assert _series(body, "headwater_consumer_lag_events_count", "e2e.ledger") == [0.0]
        assert _series(body, "headwater_consumer_lag_ms", "e2e.ledger") == [0.0]
        assert "headwater_supervisor_workers_quarantined 0.0" in body
        assert found["e2e.ledger"]["lease"]["held"] is True
        assert found["e2e.ledger"]["lag_events"] == 0
        assert found["e2e.picky"]["events_processed"] == 3

        listed = cli(env, "dlq", "list", "--db", env["HEADWATER_DATABASE_URL"], "--json")
        assert listed.returncode == 0, listed.stderr
        (letter,) = json.loads(listed.stdout)
        assert letter["source_type"] == "consumer" and letter["source_id"] == "e2e.picky"
        assert "ValueError: negative amounts" in letter["reason"]
        table = cli(env, "dlq", "list", "--db", env["HEADWATER_DATABASE_URL"])
        assert "Traceback" not in table.stdout  # the table shows the first line only

        (Path(env["SDK_E2E_FLAGS"]) / "fixed").touch()  # the fix is deployed
        replay = cli(env, "dlq", "replay", str(letter["id"]), "--db",
                     env["HEADWATER_DATABASE_URL"], "--json")  # fmt: skip
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert json.loads(replay.stdout)[0]["status"] == "created"
        eventually(
            lambda: status(env)["e2e.picky"]["events_processed"] == 4,
            timeout=30,
            what="the replayed event",
        )
        assert status(env)["e2e.ledger"]["events_processed"] == 4  # not applied twice
        # The command prints what the waits above read in-process.
        printed = cli_status(env)
        assert printed.keys() == status(env).keys() == {"e2e.ledger", "e2e.picky"}
        assert printed["e2e.picky"]["events_processed"] == 4
        assert printed["e2e.ledger"]["lease"]["held"] is True
    finally:
        assert supervisor.stop() == 0, supervisor.output()
        publisher.stop()
    after = cli_status(env)
    assert after["e2e.ledger"]["lease"]["held"] is False  # released on a graceful stop
    text = cli(env, "consumer", "status")
    assert "e2e.ledger" in text.stdout and "publisher: stopped" in text.stdout


def test_a_crash_loop_is_quarantined_across_restarts_until_released(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    env = sqlite_env
    flags = Path(env["SDK_E2E_FLAGS"])
    (flags / "crash").touch()
    args = ["consumer", "run", APP, "--only", "ledger", "--heartbeat-dir",
            str(tmp_path / "beats"), "--poll-interval", "0.5",
            # Five crashes within 10 minutes: each crash is a worker's start (it imports
            # the app, then dies), and at a load average of 19 five of them did not fit
            # in the default minute (the run timed out waiting for the quarantine).
            "--crash-window", "600"]  # fmt: skip
    supervisor = Bg(args, tmp_path / "sup1.log", env)
    try:
        eventually(lambda: in_quarantine(env), timeout=120, what="the quarantine")
        listed = cli(env, "quarantine", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (entry,) = json.loads(listed.stdout)
        assert entry["name"] == "e2e.ledger"
        assert entry["reason"] == "crash_loop" and entry["crash_count"] == 5
    finally:
        supervisor.stop()
    assert "supervisor_worker_quarantined" in supervisor.output()

    # A restart does not release it.
    supervisor = Bg(args, tmp_path / "sup2.log", env)
    try:
        eventually(lambda: "restored_quarantine_from_store" in supervisor.output(), what="restore")
        time.sleep(1.5)
        assert "supervisor_worker_started" not in supervisor.output()
        (flags / "crash").unlink()  # fixed; the operator releases it while it runs
        released = cli(env, "quarantine", "release", "ledger")
        assert released.returncode == 0, released.stderr
        assert "released e2e.ledger" in released.stdout
        eventually(lambda: "supervisor_worker_started" in supervisor.output(), what="the respawn")
        again = cli(env, "quarantine", "release", "ledger")
        assert again.returncode == 1 and "is not quarantined" in again.stderr
    finally:
        assert supervisor.stop() == 0


def test_up_runs_the_receiver_bound_functions_of_a_python_app(
    sqlite_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    env = sqlite_env
    db_url = env["HEADWATER_DATABASE_URL"]

    stream = f"{env['SDK_E2E_STREAM']}:in"
    client = redis.Redis.from_url(REDIS)
    client.xadd(stream, {"payload": '{"amount": 21}'})
    monkeypatch.setenv("SDK_E2E_REDIS", REDIS)  # `up` runs with this process's environment
    monkeypatch.setenv("SDK_E2E_STREAM", env["SDK_E2E_STREAM"])
    up = Up(Path(APP), tmp_path, db_url)
    try:

        def done() -> list[dict[str, Any]]:
            jobs = up.client.get("/api/jobs", params={"task": "enrich"}).json()["jobs"]
            return [j for j in jobs if j["status"] == "completed"]

        (job,) = eventually(done, timeout=30, what="the enrich job")
        assert job["output"] == {"handler": {"amount": 21, "doubled": 42}}
        assert job["source_id"] == "e2e/enrich"
        triggers = up.client.get("/api/triggers").json()
        assert any(t["name"] == "enrich" for t in triggers)
    finally:
        up.stop()
        client.delete(stream)
        client.close()
