"""The UI behind an API key: pages send the browser to a login form, the key opens a
session (an HttpOnly, SameSite=Strict cookie) that the pages and the API's routes accept,
and logging out closes it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import API_KEY, _require_chromium, run_job, write_workspace
from tests.e2e.procs import Up

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    _require_chromium()
    folder = tmp_path_factory.mktemp("ui-keyed")
    server = Up(write_workspace(folder), folder, None, "--api-key", API_KEY)
    server.client.headers["Authorization"] = f"Bearer {API_KEY}"
    try:
        yield server
    finally:
        server.stop()


def test_without_the_key_nothing_is_shown(keyed: Up) -> None:
    job_id = run_job(keyed, "hello", note="hidden")
    with httpx.Client(base_url=keyed.url, timeout=10) as anonymous:
        page = anonymous.get("/jobs", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert job_id not in page.text
        assert anonymous.get(f"/ui/stream/jobs/{job_id}").status_code == 401
        assert anonymous.get(f"/api/jobs/{job_id}").status_code == 401
        forged = anonymous.get("/jobs", headers={"Cookie": "headwater_session=guessed"})
        assert forged.status_code in (303, 401) and job_id not in forged.text
        wrong = anonymous.post("/login", data={"key": "not-the-key", "next": "/jobs"})
        assert wrong.status_code == 401 and "headwater_session" not in wrong.headers.get(
            "set-cookie", ""
        )


def test_login_with_the_key_opens_the_ui_and_logout_closes_it(keyed: Up, page: Any) -> None:
    job_id = run_job(keyed, "hello", note="shown after login")
    page.goto(keyed.url + "/jobs")
    assert "/login" in page.url
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/jobs")
    assert page.locator(f"#job-{job_id}").is_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "headwater_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert API_KEY not in cookie["value"] and API_KEY not in page.content()
    # The session opens the API for the UI's own script (reads; writes need its header).
    status = page.evaluate(f"fetch('/api/jobs/{job_id}').then(r => r.status)")
    assert status == 200
    bare_write = page.evaluate(
        f"fetch('/api/jobs/{job_id}/retry', {{method: 'POST'}}).then(r => r.status)"
    )
    assert bare_write == 403
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.goto(keyed.url + "/jobs")
    assert "/login" in page.url
