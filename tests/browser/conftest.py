"""The browser tests' harness: one real ``headwater up`` and one Chromium per module.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``), driven by
Playwright; Playwright never downloads a browser. Without it the tests skip locally and
fail under HEADWATER_REQUIRE_SERVICES=1. Every test of this folder runs in one xdist
group: they share the machine's cores with one browser at a time.

Screenshots for the README: ``HEADWATER_UI_SCREENSHOTS=docs/screenshots pytest
tests/browser`` (CI leaves the variable unset, so it never rewrites them).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import services_required
from tests.e2e.procs import Up

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = "ui-secret-9f2c41d7"  # the workspace's secret: no page may ever show it
API_KEY = "ui-test-key-5b0e3a"  # the key of the API-key-configured server

WORKSPACE = """
secrets:
  token: "%s"
actions:
  greet:
    type: script
    env:
      NAME: "{{ input.name }}"
      TOKEN: "{{ secret.token }}"
    script: |
      echo "Hello, $NAME!"
      echo "the token is $TOKEN" >&2
      echo "OUTPUT: {\\"greeting\\": \\"Hello, $NAME!\\", \\"token\\": \\"$TOKEN\\"}"
  tick:
    type: script
    env:
      COUNT: "{{ input.count }}"
      PAUSE: "{{ input.pause }}"
    script: |
      for i in $(seq 1 "$COUNT"); do echo "tick $i"; sleep "$PAUSE"; done
  fail:
    type: script
    script: |
      echo "about to fail"
      exit 3
tasks:
  hello:
    description: Greets someone.
    input:
      name: { type: string, default: world }
      times: { type: integer, default: 1 }
      loud: { type: boolean, default: false }
      mood: { type: string, options: [calm, cheerful], default: calm }
      note: { type: string, required: true }
    flow:
      greet:
        action: greet
        input: { name: "{{ input.name }}" }
  slow:
    description: Prints a line every pause seconds.
    input:
      count: { type: integer, default: 6 }
      pause: { type: number, default: 0.5 }
    flow:
      prepare:
        action: tick
        input: { count: 1, pause: 0 }
      run:
        action: tick
        depends_on: [prepare]
        input: { count: "{{ input.count }}", pause: "{{ input.pause }}" }
      report:
        action: tick
        depends_on: [prepare]
        input: { count: 1, pause: 0 }
      finish:
        action: tick
        depends_on: [run, report]
        input: { count: 1, pause: 0 }
  flaky:
    flow:
      first:
        action: fail
  release:
    flow:
      gate:
        type: approval
        message: "Ship it?"
        timeout: 1h
      ship:
        action: tick
        depends_on: [gate]
        input: { count: 1, pause: 0 }
"""


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (Debian's chromium package: apt-get install chromium)"
    if services_required():
        pytest.fail(reason + " and HEADWATER_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def write_workspace(folder: Path) -> Path:
    ws = folder / "ws.yaml"
    ws.write_text(textwrap.dedent(WORKSPACE % SECRET))
    return ws


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (Playwright's sync API)."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``headwater up`` on the test workspace, open on loopback (no API key)."""
    _require_chromium()  # before the server: no process started only to be skipped
    folder = tmp_path_factory.mktemp("ui")
    server = Up(write_workspace(folder), folder)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page per test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Any, name: str) -> None:
    """Save ``name.png`` for the README when HEADWATER_UI_SCREENSHOTS names a folder."""
    folder = os.environ.get("HEADWATER_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)


def run_job(up: Up, task: str, **input: Any) -> str:
    resp = up.client.post(f"/api/tasks/{task}/run", json={"input": input})
    assert resp.status_code == 201, resp.text
    job_id: str = resp.json()["job_id"]
    return job_id
