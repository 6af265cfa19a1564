"""The UI's shell in a real browser: every page of the navigation answers, with real data
from a running ``headwater up``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import SECRET, run_job, screenshot
from tests.e2e.procs import Up

pytestmark = pytest.mark.xdist_group("browser")


def test_the_navigation_reaches_every_page(up: Up, page: Any) -> None:
    job_id = run_job(up, "hello", note="from the shell test")
    up.wait_job(job_id)
    page.goto(up.url + "/jobs")
    for label in ("Overview", "Jobs", "Tasks", "Triggers", "Dead letters", "Workers"):
        page.get_by_role("link", name=label, exact=True).first.click()
        page.wait_for_load_state()
        assert page.locator("h1").first.inner_text() == label
        assert SECRET not in page.content()
    page.goto(up.url + "/jobs")
    assert page.locator(f"#job-{job_id}").is_visible()
    screenshot(page, "jobs")
