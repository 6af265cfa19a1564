"""The operations pages (Triggers, Dead letters, Workers, Overview) in a real Chromium
against one ``headwater up`` whose workspace has a trigger of each kind: an event source
that crash-loops into quarantine, one that emits events (one of them invalid) under
``max_in_flight``, a webhook and a cron trigger."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import _require_chromium, screenshot
from tests.e2e.procs import Up, eventually

pytestmark = pytest.mark.xdist_group("browser")

SECRET = "ops-secret-4c19e2"  # printed by the crashing consumer: its last error holds it
HOOK_SECRET = "ops-hook-secret-77"

WORKSPACE = """
secrets:
  token: "%(secret)s"
  hook: "%(hook)s"
actions:
  crash:
    type: script
    env:
      TOKEN: "{{ secret.token }}"
    script: |
      echo run >> "%(marks)s"
      echo "cannot reach the broker as $TOKEN" >&2
      exit 2
  emit:
    type: script
    script: |
      for i in 1 2 3 4 5 6; do echo "OUTPUT: {\\"n\\": $i}"; done
      echo 'OUTPUT: {"n": "seven"}'
      exec sleep 600
  work:
    type: script
    script: |
      echo "working on {{ input.n }}"
      sleep 0.2
tasks:
  crasher:
    flow:
      run: { action: crash }
  consumer:
    flow:
      run: { action: emit }
  work:
    input:
      n: { type: integer, required: true }
    flow:
      run: { action: work, input: { n: "{{ input.n }}" } }
triggers:
  crashy:
    type: event_source
    task: crasher
    target_task: work
    restart_policy: always
    backoff_secs: 0
    max_crashes: 3
    crash_window_secs: 600
  feed:
    type: event_source
    task: consumer
    target_task: work
    max_in_flight: 3
  orders:
    type: webhook
    task: work
    secret: "{{ secret.hook }}"
  nightly:
    type: scheduler
    cron: "0 3 * * *"
    task: work
    input: { n: 1 }
"""


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, Path]]:
    """The server and the file the crashing consumer appends a line to per run."""
    _require_chromium()
    folder = tmp_path_factory.mktemp("ui-ops")
    marks = folder / "marks"
    ws = folder / "ws.yaml"
    text = WORKSPACE % {"secret": SECRET, "hook": HOOK_SECRET, "marks": marks}
    ws.write_text(textwrap.dedent(text))
    server = Up(ws, folder)
    try:
        yield server, marks
    finally:
        server.stop()


def _state(up: Up, name: str) -> dict[str, Any]:
    (trigger,) = [t for t in up.client.get("/api/triggers").json() if t["name"] == name]
    state: dict[str, Any] = trigger["state"] or {}
    return state


def _runs(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


def _quarantined(up: Up) -> dict[str, Any]:
    return eventually(
        lambda: s if (s := _state(up, "crashy"))["state"] == "quarantined" else None,
        30,
        "the crash loop's quarantine",
    )


def _row(page: Any, name: str) -> Any:
    return page.locator(f"#trigger-{name}")


def test_triggers_show_their_state_and_a_quarantined_one_is_released(
    ops: tuple[Up, Path], page: Any
) -> None:
    up, marks = ops
    _quarantined(up)
    eventually(lambda: _state(up, "feed").get("events_rejected") == 1, 30, "feed's events")
    runs = _runs(marks)
    page.goto(up.url + "/triggers")
    page.wait_for_selector("#live.on")
    states = {
        name: _row(page, name).get_attribute("data-state")
        for name in ("crashy", "feed", "orders", "nightly")
    }
    assert states == {
        "crashy": "quarantined",
        "feed": "running",
        "orders": "listening",
        "nightly": "scheduled",
    }
    crashy = _row(page, "crashy").inner_text()
    assert "crash loop" in crashy and "cannot reach the broker as ••••••" in crashy
    feed = _row(page, "feed").locator("td")
    assert feed.nth(6).inner_text() == "6" and feed.nth(7).inner_text() == "1"  # accepted, rejected
    assert re.fullmatch(r"\d / 3", feed.nth(8).inner_text().strip())  # max_in_flight use
    assert "next 20" in _row(page, "nightly").inner_text()  # the next tick
    assert _row(page, "feed").get_by_role("button", name="Release").count() == 0
    screenshot(page, "triggers")

    _row(page, "crashy").get_by_role("button", name="Release").click()
    page.wait_for_selector("#action-result:has-text('crashy released')")
    eventually(lambda: _runs(marks) > runs, 30, "a run after the release")

    # Disable (pause) and enable again; the live table follows.
    _row(page, "feed").get_by_role("button", name="Disable").click()
    page.wait_for_selector('#trigger-feed[data-state="paused"]')
    _row(page, "feed").get_by_role("button", name="Enable").click()
    page.wait_for_selector('#trigger-feed:not([data-state="paused"])')
    assert not any(p["name"] == "feed" for p in up.client.get("/api/paused").json())


def test_a_dead_letter_is_inspected_corrected_and_replayed(ops: tuple[Up, Path], page: Any) -> None:
    up, _ = ops
    hook = up.client.post(
        "/hooks/orders",
        json={"order": "A-17"},
        headers={"Authorization": f"Bearer {HOOK_SECRET}"},
    )
    assert hook.status_code == 422, hook.text  # no ``n``: the event became a dead letter
    letters = eventually(
        lambda: d if len(d := up.client.get("/api/dead-letters").json()) >= 2 else None,
        30,
        "two dead letters",
    )
    by_source = {d["source_type"]: d for d in letters}
    webhook, emitted = by_source["webhook"], by_source["event_source"]
    page.goto(up.url + "/dead-letters")
    row = page.locator(f"#dl-{webhook['id']}")
    assert "`n`" in row.locator("td.reason").inner_text()
    detail = page.locator(f'tr.dl-detail[data-for="{webhook["id"]}"]')
    detail.locator("summary").click()
    payload = detail.locator("textarea.payload")
    assert json.loads(payload.input_value()) == {"order": "A-17"}
    screenshot(page, "dead-letters")

    # Replayed unchanged, it is still invalid: the page says why.
    page.locator(f"#dl-{emitted['id']} input.pick").check()
    page.locator("#replay-selected").click()
    page.wait_for_selector("#replay-result:has-text('still invalid')")
    assert "must be an integer" in page.locator("#replay-result").inner_text()

    # Corrected in the page, it becomes a job.
    payload.fill(json.dumps({"order": "A-17", "n": 5}))
    detail.get_by_role("button", name="Replay this one").click()
    detail.locator(".replay-one-result:has-text('1 replayed')").wait_for()
    link = row.locator("td.replay a")
    job_id = link.get_attribute("href").rsplit("/", 1)[1]
    job = up.wait_job(job_id)
    assert job["status"] == "completed" and job["input"] == {"order": "A-17", "n": 5}
    page.goto(up.url + "/dead-letters")  # replayed ones leave the default list
    assert page.locator(f"#dl-{webhook['id']}").count() == 0
    assert page.locator(f"#dl-{emitted['id']}").count() == 1


def test_workers_show_the_live_worker_and_its_current_jobs(ops: tuple[Up, Path], page: Any) -> None:
    up, _ = ops
    consumer = _state(up, "feed")["consumer_job_id"]
    assert consumer
    page.goto(up.url + "/workers")
    page.wait_for_selector("#live.on")
    (worker,) = page.locator("tr.worker-row[data-live=yes]").all()
    cells = worker.locator("td")
    assert "script" in cells.nth(2).inner_text()
    assert "local" in cells.nth(3).inner_text()
    assert worker.locator(f'a[href="/jobs/{consumer}"]').count() == 1  # the feed's consumer
    assert "consumer" in cells.nth(4).inner_text()
    assert cells.nth(5).inner_text().endswith("ago")
    screenshot(page, "workers")


def test_the_overview_charts_throughput_failures_and_slowest_tasks(
    ops: tuple[Up, Path], page: Any
) -> None:
    up, _ = ops
    _quarantined(up)  # the crashing consumer's runs are failed jobs
    eventually(
        lambda: len(up.client.get("/api/jobs", params={"task": "work"}).json()["jobs"]) >= 6,
        30,
        "the emitted events' jobs",
    )
    page.goto(up.url + "/")
    page.wait_for_selector("#live.on")
    page.locator("svg.throughput rect.bar.s-completed").first.wait_for()
    assert page.locator("svg.throughput rect.bar.s-failed").count() >= 1
    assert page.locator("#legend").inner_text().count("failed") == 1
    slowest = page.locator("#slowest svg g.hrow")
    assert "work" in [g.get_attribute("data-name") for g in slowest.all()]
    assert "No trigger reports a lag" in page.locator("#lag").inner_text()
    hour = page.locator("#ov-state").inner_text()
    page.locator("#window").select_option("15m")
    page.wait_for_url(re.compile(r"window=15m"))
    page.wait_for_function("t => document.getElementById('ov-state').textContent !== t", arg=hour)
    assert page.locator("svg.throughput rect.bar.s-completed").count() >= 1
    screenshot(page, "overview")


def test_no_operations_page_shows_a_secret(ops: tuple[Up, Path], page: Any) -> None:
    up, _ = ops
    _quarantined(up)
    for path in ("/", "/triggers", "/dead-letters?show=all", "/workers"):
        body = up.client.get(path).text
        assert SECRET not in body and HOOK_SECRET not in body, path
    with up.client.stream("GET", "/ui/stream/triggers") as stream:
        first = next(stream.iter_text())
    assert "cannot reach the broker as" in first and SECRET not in first
    for path in ("/triggers", "/", "/dead-letters?show=all"):
        page.goto(up.url + path)
        if path != "/dead-letters?show=all":  # the live pages: once their data arrived
            page.wait_for_selector("#live.on")
        assert SECRET not in page.content() and HOOK_SECRET not in page.content(), path
