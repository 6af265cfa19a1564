"""Triggers through the real CLI: ``headwater up`` in a subprocess, HTTP and ``headwater
triggers``. Event sources, webhooks and the scheduler keep the seed's promises end to end:
jobs with the right source, reload on file change, recovery after ``kill -9``, operator
restart/release, and ``max_in_flight`` backpressure.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import REPO, Up, eventually, run_cli, up_jobs, up_triggers

CONSUMER = "event_source_consumer"


def write_workspace(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@contextlib.contextmanager
def headwater_up(workspace: Path, cwd: Path) -> Iterator[Up]:
    up = Up(workspace, cwd)
    try:
        yield up
    finally:
        up.stop()


def kill_recorded_pids(pid_dir: Path) -> None:
    """Consumers write their pid here; make sure none outlives the test."""
    for pid_file in pid_dir.glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def alive_pids(pid_dir: Path) -> list[int]:
    alive = []
    for pid_file in pid_dir.glob("*.pid"):
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            alive.append(pid)
    return alive


def event_source_state(up: Up, name: str) -> dict[str, Any]:
    state: dict[str, Any] = up_triggers(up)[name]["state"]
    assert state is not None, f"trigger {name} has no live state"
    return state


# -- the main example ---------------------------------------------------------------------


def test_orders_example_creates_jobs_from_events_and_from_its_webhook(tmp_path: Path) -> None:
    with headwater_up(REPO / "examples" / "orders", tmp_path) as up:

        def twenty_done() -> list[dict[str, Any]] | None:
            jobs = up_jobs(up, task="process-order", source_type="event_source")
            done = [j for j in jobs if j["status"] in ("completed", "failed", "cancelled")]
            return jobs if len(jobs) >= 20 and len(done) == len(jobs) else None

        jobs = eventually(twenty_done, 25, "the 20 demo orders as finished process-order jobs")
        assert len(jobs) == 20
        assert all(j["source_id"] == "orders/order-events" for j in jobs), jobs[0]
        assert all(j["status"] == "completed" for j in jobs), [j["status"] for j in jobs]
        order_ids = sorted(j["input"]["orderId"] for j in jobs)
        assert order_ids == [f"ord-{n:04d}" for n in range(1, 21)]
        assert len({j["dedup_key"] for j in jobs}) == 20

        listed = run_cli("triggers", "--json", "--server", up.url)
        assert listed.returncode == 0, listed.stderr
        rows = {row["name"]: row for row in json.loads(listed.stdout)}
        state = rows["order-events"]["state"]
        assert state["events_accepted"] == 20
        assert state["events_rejected"] == 0
        assert state["max_in_flight"] == 10
        assert 0 <= state["in_flight"] <= 10
        # The demo consumer exits 0 under restart_policy on_failure: idle (or still
        # finishing its last lines).
        assert state["state"] in ("running", "idle"), state
        assert rows["run-report"]["state"]["state"] == "scheduled"
        assert rows["run-report"]["state"]["next_fire_at"]

        resp = up.client.post("/hooks/orders", json={"orderId": "web-1", "amount": 12.5})
        assert resp.status_code == 202, resp.text
        hook_job = up.wait_job(resp.json()["job_id"], timeout=20)
        assert hook_job["status"] == "completed", hook_job
        assert hook_job["task"] == "accept-order"
        assert hook_job["source_type"] == "webhook"
        assert hook_job["source_id"] == "orders/orders"
        children = up_jobs(up, task="process-order", source_type="task")
        assert [c["input"]["orderId"] for c in children] == ["web-1"]
        assert children[0]["status"] == "completed"
        assert children[0]["output"]["charge"]["receipt"] == "rcpt-web-1"


# -- webhook ------------------------------------------------------------------------------

WEBHOOK_WS = """
secrets:
  hook_secret: "s3cret-hook-value"
actions:
  greet:
    type: script
    script: |
      echo 'OUTPUT: {"greeting": "hello {{ input.name }}"}'
tasks:
  greet:
    input:
      name: { type: string, required: true }
    flow:
      greet: { action: greet, input: { name: "{{ input.name }}" } }
triggers:
  hello:
    type: webhook
    task: greet
    secret: "{{ secret.hook_secret }}"
"""

SECRET = "s3cret-hook-value"


def test_webhook_authenticates_deduplicates_and_waits(tmp_path: Path) -> None:
    import hashlib
    import hmac

    ws = write_workspace(tmp_path, WEBHOOK_WS)
    with headwater_up(ws, tmp_path) as up:
        body = json.dumps({"name": "signed"}).encode()
        good_sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        bad_sig = "sha256=" + hmac.new(b"wrong", body, hashlib.sha256).hexdigest()
        json_ct = {"content-type": "application/json"}

        def post(headers: dict[str, str], params: dict[str, str] | None = None) -> httpx.Response:
            return up.client.post(
                "/hooks/hello", content=body, headers={**json_ct, **headers}, params=params
            )

        assert post({}).status_code == 401
        assert post({"authorization": "Bearer wrong"}).status_code == 401
        assert post({"x-hub-signature-256": bad_sig}).status_code == 401
        # A signature of another body does not authenticate this one.
        other = hmac.new(SECRET.encode(), b"{}", hashlib.sha256).hexdigest()
        assert post({"x-hub-signature-256": f"sha256={other}"}).status_code == 401
        assert SECRET not in post({}).text
        assert up_jobs(up, source_type="webhook") == []

        bearer = post({"authorization": f"Bearer {SECRET}"})
        assert bearer.status_code == 202, bearer.text
        signed = post({"x-hub-signature-256": good_sig})
        assert signed.status_code == 202, signed.text
        assert bearer.json()["job_id"] != signed.json()["job_id"]

        auth = {"authorization": f"Bearer {SECRET}"}
        first = post({**auth, "idempotency-key": "delivery-1"})
        again = post({**auth, "idempotency-key": "delivery-1"})
        assert first.status_code == 202 and first.json()["created"] is True, first.text
        assert again.status_code == 200 and again.json()["created"] is False, again.text
        assert again.json()["job_id"] == first.json()["job_id"]

        waited = post(auth, params={"wait": "true"})
        assert waited.status_code == 200, waited.text
        assert waited.json()["status"] == "completed"
        assert waited.json()["output"] == {"greet": {"greeting": "hello signed"}}

        jobs = up_jobs(up, source_type="webhook")
        assert len(jobs) == 4  # bearer, signed, one for the idempotent pair, waited
        assert all(j["source_id"].endswith("/hello") for j in jobs)
        assert all(j["input"] == {"name": "signed"} for j in jobs)


# -- scheduler ----------------------------------------------------------------------------

SCHEDULER_WS = """
actions:
  tick:
    type: script
    script: "echo tick"
tasks:
  tick:
    input:
      at: { type: string }
    flow:
      tick: { action: tick }
triggers:
  every-second:
    type: scheduler
    cron: "*/1 * * * * *"
    task: tick
    input:
      at: "{{ schedule.time }}"
"""


def test_six_field_cron_fires_once_per_second(tmp_path: Path) -> None:
    ws = write_workspace(tmp_path, SCHEDULER_WS)
    with headwater_up(ws, tmp_path) as up:
        jobs = eventually(
            lambda: j if len(j := up_jobs(up, source_type="scheduler")) >= 4 else None,
            15,
            "four scheduled jobs",
        )
        state = up_triggers(up)["every-second"]["state"]
        assert state["state"] == "scheduled"
    assert all(j["source_id"].endswith("/every-second") for j in jobs)
    ticks = sorted(datetime.fromisoformat(j["input"]["at"].replace("Z", "+00:00")) for j in jobs)
    assert len(set(ticks)) == len(ticks), "two jobs for one tick"
    assert len({j["dedup_key"] for j in jobs}) == len(jobs)
    for a, b in itertools.pairwise(ticks):
        assert b - a == timedelta(seconds=1), ticks  # one per tick, none skipped
    assert all(t.microsecond == 0 for t in ticks)


# -- event sources ------------------------------------------------------------------------

LONG_CONSUMER_WS = """
actions:
  consume:
    type: script
    language: python
    script: |
      import os, pathlib, signal, sys, time
      run_dir = pathlib.Path(os.environ["RUN_DIR"])
      (run_dir / f"{{os.getpid()}}.pid").write_text(str(os.getpid()))
      def on_term(*_):
          (run_dir / f"{{os.getpid()}}.term").write_text("SIGTERM")
          sys.exit(0)
      signal.signal(signal.SIGTERM, on_term)
      while True:
          print("consumer alive", flush=True)  # dies of a broken pipe if orphaned
          time.sleep(0.2)
  noop:
    type: script
    script: "true"
tasks:
  consumer:
    flow:
      consume: {{ action: consume }}
  target:
    flow:
      run: {{ action: noop }}
triggers:
  src:
    type: event_source
    task: consumer
    target_task: target
    enabled: {enabled}
    restart_policy: always
    backoff_secs: 0.5
    env:
      RUN_DIR: "{run_dir}"
"""


def long_consumer_ws(tmp_path: Path, enabled: bool = True) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    text = LONG_CONSUMER_WS.format(enabled=str(enabled).lower(), run_dir=run_dir)
    return write_workspace(tmp_path, text)


def running_consumers(up: Up) -> list[dict[str, Any]]:
    return up_jobs(up, source_type=CONSUMER, status="running")


def test_disabling_an_event_source_in_the_file_stops_its_consumer(tmp_path: Path) -> None:
    ws = long_consumer_ws(tmp_path)
    run_dir = tmp_path / "run"
    try:
        with headwater_up(ws, tmp_path) as up:
            first = eventually(
                lambda: s if (s := event_source_state(up, "src"))["state"] == "running" else None,
                15,
                "the consumer running",
            )["consumer_job_id"]
            up.wait_job(first, statuses=("running",), timeout=10)
            eventually(lambda: list(run_dir.glob("*.pid")), 10, "the consumer process")

            long_consumer_ws(tmp_path, enabled=False)  # rewrite the file: watchfiles reloads
            eventually(
                lambda: event_source_state(up, "src")["state"] == "disabled",
                15,
                "the trigger disabled",
            )
            assert up.wait_job(first, timeout=10)["status"] == "cancelled"
            assert [p.read_text() for p in run_dir.glob("*.term")] == ["SIGTERM"]
            assert running_consumers(up) == []
            assert event_source_state(up, "src")["consumer_job_id"] is None

            long_consumer_ws(tmp_path, enabled=True)
            state = eventually(
                lambda: (
                    s
                    if (s := event_source_state(up, "src"))["state"] == "running"
                    and s["consumer_job_id"] not in (None, first)
                    else None
                ),
                15,
                "the trigger running again with a new consumer",
            )
            second = state["consumer_job_id"]
            up.wait_job(second, statuses=("running",), timeout=10)
            assert [j["id"] for j in running_consumers(up)] == [second]
    finally:
        kill_recorded_pids(run_dir)


def test_a_consumer_killed_with_headwater_comes_back_exactly_once(tmp_path: Path) -> None:
    ws = long_consumer_ws(tmp_path)
    run_dir = tmp_path / "run"
    try:
        up = Up(ws, tmp_path)
        try:
            old = eventually(lambda: running_consumers(up), 15, "a running consumer")
            assert len(old) == 1
        finally:
            up.proc.send_signal(signal.SIGKILL)
            up.proc.wait(10)
            up.kill()

        with headwater_up(ws, tmp_path) as again:
            seen: list[int] = []
            deadline = time.monotonic() + 15
            settled = 0
            while time.monotonic() < deadline and settled < 20:
                running = running_consumers(again)
                seen.append(len(running))
                assert len(running) <= 1, f"two consumers running at once: {running}"
                settled = settled + 1 if len(running) == 1 else 0
                time.sleep(0.1)
            assert settled >= 20, f"never exactly one running consumer for 2s: {seen[-30:]}"
            (current,) = running_consumers(again)
            state = event_source_state(again, "src")
            assert state["state"] == "running"
            assert state["consumer_job_id"] == current["id"]
            others = [
                j
                for j in up_jobs(again, source_type=CONSUMER)
                if j["id"] != current["id"] and j["status"] in ("pending", "running")
            ]
            assert others == [], "the old consumer job is neither recovered nor finished"
            # At the process level too: the orphaned consumer of the killed headwater
            # dies (of a broken pipe, as it writes), leaving one consumer process.
            eventually(lambda: len(alive_pids(run_dir)) == 1, 10, "exactly one consumer process")
    finally:
        kill_recorded_pids(run_dir)


def test_a_silent_consumer_does_not_outlive_a_killed_headwater(tmp_path: Path) -> None:
    ws = long_consumer_ws(tmp_path)
    # A consumer blocked on its queue writes nothing, so no broken pipe ends it.
    ws.write_text(ws.read_text().replace('print("consumer alive", flush=True)', "pass"))
    run_dir = tmp_path / "run"
    try:
        up = Up(ws, tmp_path)
        try:
            eventually(lambda: running_consumers(up), 15, "a running consumer")
            old = eventually(lambda: alive_pids(run_dir), 10, "the consumer process")
        finally:
            up.proc.send_signal(signal.SIGKILL)
            up.proc.wait(10)
            up.kill()
        with headwater_up(ws, tmp_path) as again:
            eventually(lambda: len(running_consumers(again)) == 1, 15, "the consumer back")
            eventually(lambda: set(alive_pids(run_dir)) - set(old), 15, "the new consumer process")
            eventually(lambda: len(alive_pids(run_dir)) == 1, 10, "exactly one consumer process")
    finally:
        kill_recorded_pids(run_dir)


ONESHOT_WS = """
actions:
  emit-one:
    type: script
    script: |
      echo 'OUTPUT: {"n": 1}'
      exit 0
  noop:
    type: script
    script: "true"
tasks:
  consumer:
    flow:
      consume: { action: emit-one }
  target:
    input:
      n: { type: integer }
    flow:
      run: { action: noop }
triggers:
  once:
    type: event_source
    task: consumer
    target_task: target
    restart_policy: never
"""


def test_restart_runs_an_idle_trigger_again_and_release_refuses_one_not_quarantined(
    tmp_path: Path,
) -> None:
    ws = write_workspace(tmp_path, ONESHOT_WS)
    with headwater_up(ws, tmp_path) as up:
        state = eventually(
            lambda: s if (s := event_source_state(up, "once"))["state"] == "idle" else None,
            15,
            "the trigger idle after its consumer exited",
        )
        assert "never" in (state["idle_reason"] or ""), state
        eventually(lambda: state_accepted(up) == 1, 10, "one event accepted")
        assert len(up_jobs(up, source_type=CONSUMER)) == 1

        released = run_cli("triggers", "release", "once", "--server", up.url)
        assert released.returncode == 1, released.stdout + released.stderr
        assert "not quarantined" in released.stderr, released.stderr
        assert "Traceback" not in released.stderr
        assert event_source_state(up, "once")["state"] == "idle"

        restarted = run_cli("triggers", "restart", "once", "--server", up.url)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "once" in restarted.stdout
        eventually(
            lambda: len(up_jobs(up, source_type=CONSUMER)) == 2,
            10,
            "a second consumer job",
        )
        state = eventually(
            lambda: (
                s
                if (s := event_source_state(up, "once"))["state"] == "idle"
                and s["events_accepted"] == 2
                else None
            ),
            15,
            "the second run to finish with its event",
        )
        assert state["restarts"] == 1, state
        consumers = up_jobs(up, source_type=CONSUMER)
        assert {j["status"] for j in consumers} == {"completed"}
        targets = up_jobs(up, task="target", source_type="event_source")
        assert len(targets) == 2
        assert len({j["dedup_key"] for j in targets}) == 2

        unknown = run_cli("triggers", "restart", "no-such-trigger", "--server", up.url)
        assert unknown.returncode == 1
        assert "no-such-trigger" in unknown.stderr


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def state_accepted(up: Up) -> int:
    return int(event_source_state(up, "once")["events_accepted"])


FAST_WS = """
actions:
  flood:
    type: script
    language: python
    script: |
      import json
      for n in range(200):
          print("OUTPUT: " + json.dumps({"n": n}), flush=True)
  nap:
    type: script
    script: "sleep 0.05"
tasks:
  consumer:
    flow:
      consume: { action: flood }
  target:
    input:
      n: { type: integer, required: true }
    flow:
      run: { action: nap }
triggers:
  flood:
    type: event_source
    task: consumer
    target_task: target
    restart_policy: never
    max_in_flight: 5
"""


def test_max_in_flight_bounds_pending_and_running_jobs_end_to_end(tmp_path: Path) -> None:
    ws = write_workspace(tmp_path, FAST_WS)
    with headwater_up(ws, tmp_path) as up:
        samples: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def sample() -> None:
            with httpx.Client(base_url=up.url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        rows = client.get("/api/triggers").json()
                        (row,) = [r for r in rows if r["name"] == "flood"]
                        samples.append(int(row["state"]["in_flight"]))
                    except Exception as exc:
                        errors.append(exc)
                        return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:

            def all_done() -> list[dict[str, Any]] | None:
                jobs = up_jobs(up, task="target")
                done = [j for j in jobs if j["status"] == "completed"]
                return jobs if len(done) >= 200 else None

            jobs = eventually(all_done, 40, "the 200 target jobs completed")
        finally:
            stop.set()
            sampler.join(10)
        assert not errors, errors
        assert samples, "the sampler saw nothing"
        assert max(samples) <= 5, f"in flight went past max_in_flight 5: {max(samples)}"
        assert max(samples) >= 1  # it did observe jobs in flight
        assert len(jobs) == 200
        assert sorted(j["input"]["n"] for j in jobs) == list(range(200))
        assert len({j["dedup_key"] for j in jobs}) == 200
        # After the fact, from the jobs' own timestamps: when each job was created, the
        # jobs created before it and not yet finished (it included) were at most 5.
        spans = sorted((ts(j["created_at"]), ts(j["finished_at"])) for j in jobs)
        for created, _ in spans:
            alive = sum(1 for c, f in spans if c <= created < f)
            assert alive <= 5, f"{alive} jobs in flight at {created}"
        state = event_source_state(up, "flood")
        assert state["events_accepted"] == 200
        assert state["in_flight"] == 0
