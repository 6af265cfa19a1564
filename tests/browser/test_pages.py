"""The Jobs, Job and Tasks pages in a real Chromium against a running ``headwater up``:
real data, live updates, the Run form, cancel and retry from the page, and no secret in
any page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import SECRET, run_job, screenshot
from tests.e2e.procs import Up, eventually

pytestmark = pytest.mark.xdist_group("browser")

NAV = ("Overview", "Jobs", "Tasks", "Triggers", "Dead letters", "Workers")


def _status(page: Any) -> str:
    status: str = page.locator("#job-status").get_attribute("data-status")
    return status


def _wait_status(page: Any, status: str) -> None:
    page.wait_for_selector(f'#job-status[data-status="{status}"]')


def _other_job(url: str, job_id: str) -> bool:
    return re.search(r"/jobs/[0-9a-f-]{36}$", url) is not None and not url.endswith(job_id)


def test_the_navigation_reaches_every_page(up: Up, page: Any) -> None:
    page.goto(up.url + "/")
    for label in NAV:
        page.get_by_role("link", name=label, exact=True).first.click()
        page.wait_for_load_state()
        assert page.locator("h1").first.inner_text() == label


def test_a_job_run_from_the_form_completes_and_its_logs_stream_in(up: Up, page: Any) -> None:
    page.goto(up.url + "/tasks/slow")
    assert page.locator("svg.dag g.node").count() == 4
    page.get_by_label("count").fill("5")
    page.get_by_label("pause").fill("0.6")
    page.get_by_role("button", name="Run slow").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    # A line arrives while the job still runs: the log is streamed, not loaded at the end.
    page.locator("#logs .line", has_text="tick 2").wait_for()
    assert _status(page) == "running"
    screenshot(page, "job")
    _wait_status(page, "completed")
    page.locator("#logs .line", has_text="tick 5").wait_for()
    assert page.locator("svg.dag g.node.s-completed").count() == 4
    assert page.locator("table.timeline svg.bar").count() == 4
    assert page.locator("#log-state").inner_text().startswith("finished")
    download = page.locator("a[download]").get_attribute("href")
    text = up.client.get(download).text
    assert "tick 5" in text


def test_the_run_form_checks_its_input_and_masks_secrets(up: Up, page: Any) -> None:
    page.goto(up.url + "/tasks/hello")
    assert page.get_by_label("name").input_value() == "world"  # the default, filled in
    page.get_by_label("times").fill("1.5")
    page.get_by_role("button", name="Run hello").click()
    assert page.locator('.field-error[data-for="note"]').inner_text() == "required"
    assert "whole number" in page.locator('.field-error[data-for="times"]').inner_text()
    assert "/tasks/hello" in page.url  # nothing was submitted
    page.get_by_label("times").fill("2")
    page.get_by_label("note").fill("ui test")
    page.get_by_role("button", name="Run hello").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    _wait_status(page, "completed")
    page.locator("#logs .line", has_text="the token is").wait_for()
    assert "••••••" in page.locator("#logs").inner_text()
    assert "Hello, world!" in page.locator("#output").inner_text()
    assert SECRET not in page.content()


def test_the_jobs_list_is_live_and_filters(up: Up, page: Any) -> None:
    page.goto(up.url + "/jobs")
    page.wait_for_selector("#live.on")
    job_id = run_job(up, "hello", note="live list")
    row = page.locator(f"#job-{job_id}")
    row.wait_for()  # appeared without a reload
    page.wait_for_selector(f'#job-{job_id}[data-status="completed"]')
    page.goto(up.url + "/jobs?task=hello&status=completed")
    assert page.locator(f"#job-{job_id}").count() == 1
    assert all(t == "hello" for t in page.locator("tr.job-row td:nth-child(3)").all_inner_texts())
    page.goto(up.url + "/jobs?id=" + job_id[-10:])
    assert page.locator("tr.job-row").count() == 1
    assert page.locator(f"#job-{job_id}").count() == 1


def test_bulk_retry_and_cancel_from_the_list(up: Up, page: Any) -> None:
    failed = run_job(up, "flaky")
    assert up.wait_job(failed)["status"] == "failed"
    running = run_job(up, "slow", count=60, pause=0.5)
    page.goto(up.url + "/jobs")
    page.wait_for_selector("#live.on")
    page.locator(f"#job-{failed} input.pick").check()
    page.locator("#bulk-retry").click()
    page.wait_for_selector("#bulk-result:has-text('1 retried')")
    retry = eventually(
        lambda: up.client.get(f"/api/jobs/{failed}").json()["retry_job_id"], 20, "the retry"
    )
    page.locator(f"#job-{retry}").wait_for()  # the retry job appears in the live list
    page.locator(f"#job-{running} input.pick").check()
    page.locator("#bulk-cancel").click()
    page.wait_for_selector("#bulk-result:has-text('1 cancelled')")
    page.wait_for_selector(f'#job-{running}[data-status="cancelled"]')


def test_cancel_retry_and_retry_from_a_step_on_the_job_page(up: Up, page: Any) -> None:
    job_id = run_job(up, "slow", count=60, pause=0.5)
    page.goto(up.url + f"/jobs/{job_id}")
    page.locator("#logs .line", has_text="tick 1").first.wait_for()
    page.locator("#cancel").click()
    _wait_status(page, "cancelled")
    assert up.client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
    page.locator("#retry").click()
    page.wait_for_url(lambda url: _other_job(url, job_id))
    retry_id = page.url.rsplit("/", 1)[1]
    assert up.client.get(f"/api/jobs/{retry_id}").json()["source_id"] == job_id
    up.client.post(f"/api/jobs/{retry_id}/cancel")
    _wait_status(page, "cancelled")

    failed = run_job(up, "flaky")
    up.wait_job(failed)
    page.goto(up.url + f"/jobs/{failed}")
    assert page.locator("svg.dag g.node.s-failed").count() == 1
    page.locator("#from-step").select_option("first")
    page.locator("#retry-from").click()
    page.wait_for_url(lambda url: _other_job(url, failed))
    _wait_status(page, "failed")  # the step fails again: it was run again
    page.locator("#logs .line", has_text="about to fail").wait_for()


@pytest.mark.parametrize(("button", "outcome"), [("Approve", "completed"), ("Reject", "failed")])
def test_an_approval_step_is_decided_on_the_job_page(
    up: Up, page: Any, button: str, outcome: str
) -> None:
    job_id = run_job(up, "release")
    page.goto(up.url + f"/jobs/{job_id}")
    page.get_by_role("button", name=button).click()  # appears once the step waits
    _wait_status(page, outcome)
    gate = page.locator('svg.dag g.node[data-step="gate"]').get_attribute("class")
    assert f"s-{outcome}" in gate.split()  # the gate itself completed or failed


def test_no_page_shows_a_secret(up: Up, page: Any) -> None:
    job_id = run_job(up, "hello", note="secrets")
    up.wait_job(job_id)
    for path in ("/", "/jobs", f"/jobs/{job_id}", "/tasks", "/tasks/hello", "/triggers",
                 "/dead-letters", "/workers", f"/jobs/{job_id}/logs.txt"):  # fmt: skip
        assert SECRET not in up.client.get(path).text, path
    page.goto(up.url + f"/jobs/{job_id}")
    _wait_status(page, "completed")
    page.locator("#logs .line", has_text="the token is").wait_for()
    assert SECRET not in page.content()
    # The README's screenshots, with the jobs of the tests before this one on show.
    for path, name in (("/jobs", "jobs"), ("/tasks", "tasks"), ("/tasks/slow", "task")):
        page.goto(up.url + path)
        assert SECRET not in page.content()
        screenshot(page, name)
