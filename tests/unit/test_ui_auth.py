"""The web UI's login: the API key traded for a session cookie that the pages and the
API accept, and what it refuses (wrong keys, forged or expired sessions, cross-site
writes, open redirects)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from headwater.server.app import create_app
from headwater.server.ui.sessions import COOKIE, UiSessions
from tests.fakes import FakeRuntime

KEY = "the-ui-key"
HTML = {"Accept": "text/html"}


@pytest.fixture
async def secured() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(FakeRuntime(), api_keys=(KEY, "another-key"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        yield client


async def _login(client: httpx.AsyncClient, key: str = KEY, next: str = "/jobs") -> httpx.Response:
    return await client.post("/login", data={"key": key, "next": next})


async def test_pages_send_the_browser_to_the_login_form(secured: httpx.AsyncClient) -> None:
    resp = await secured.get("/jobs?status=failed", headers=HTML)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?next=/jobs%3Fstatus%3Dfailed"
    assert (await secured.get("/ui/stream/jobs")).status_code == 401
    form = await secured.get("/login")
    assert form.status_code == 200 and 'name="key"' in form.text
    assert "script-src 'self'" in form.headers["content-security-policy"]


async def test_a_wrong_key_opens_nothing(secured: httpx.AsyncClient) -> None:
    resp = await _login(secured, "not-the-key")
    assert resp.status_code == 401 and "not valid" in resp.text
    assert COOKIE not in resp.headers.get("set-cookie", "")
    forged = await secured.get("/jobs", headers={**HTML, "Cookie": f"{COOKIE}=guess"})
    assert forged.status_code == 303


async def test_the_session_opens_the_pages_and_the_api_until_logout(
    secured: httpx.AsyncClient,
) -> None:
    resp = await _login(secured)
    assert resp.status_code == 303 and resp.headers["location"] == "/jobs"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and KEY not in cookie
    assert (await secured.get("/jobs", headers=HTML)).status_code == 200
    assert (await secured.get("/api/jobs")).status_code == 200
    # A write on the session alone needs the UI's header (a cross-site form cannot add it).
    bare = await secured.post("/api/jobs/01234567-89ab-7def-8123-456789abcdef/cancel")
    assert bare.status_code == 403
    ui = await secured.post(
        "/api/jobs/01234567-89ab-7def-8123-456789abcdef/cancel", headers={"X-Headwater-UI": "1"}
    )
    assert ui.status_code == 404  # authenticated: the job just does not exist
    out = await secured.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert (await secured.get("/jobs", headers=HTML)).status_code == 303
    assert (await secured.get("/api/jobs")).status_code == 401


async def test_login_refuses_cross_site_posts_and_foreign_redirects(
    secured: httpx.AsyncClient,
) -> None:
    cross = await secured.post(
        "/login", data={"key": KEY}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        resp = await _login(secured, next=target)
        assert resp.headers["location"] == "/"


async def test_without_a_key_the_ui_is_open() -> None:
    app = create_app(FakeRuntime())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        assert (await client.get("/jobs", headers=HTML)).status_code == 200
        assert (await client.get("/tasks", headers=HTML)).status_code == 200
        login = await client.get("/login?next=/tasks")
        assert login.status_code == 303 and login.headers["location"] == "/tasks"
        assert (await client.get("/ui/static/headwater.js")).status_code == 200
        assert (await client.get("/ui/static/..%2Fsessions.py")).status_code == 404


def test_sessions_expire_and_only_their_hash_is_kept() -> None:
    now = [0.0]
    sessions = UiSessions([KEY], ttl=60, clock=lambda: now[0])
    assert sessions.login("wrong") is None
    token = sessions.login(f"  {KEY} ")
    assert token is not None and sessions.valid(token)
    assert token not in repr(vars(sessions))
    now[0] = 61.0
    assert not sessions.valid(token)
    assert UiSessions([]).login(KEY) is None  # no keys: nothing to log in to
