"""Rendering: one Jinja2 environment per app, the filters the templates share, and the
guard every UI route depends on.

Autoescaping is on for every template; the pages carry a Content-Security-Policy that
allows only the package's own script and stylesheet (no inline script, no CDN), so even
a value that slipped past escaping could not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from headwater import __version__
from headwater.server.ui.sessions import UiSessions

__all__ = ["CSP", "NAV", "UiContext", "UiGuard", "html_page", "make_environment"]

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

# (path, label): the navigation of base.html, in order.
NAV: tuple[tuple[str, str], ...] = (
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/tasks", "Tasks"),
    ("/triggers", "Triggers"),
    ("/dead-letters", "Dead letters"),
    ("/workers", "Workers"),
)


def _when(value: str | None) -> str:
    """An API timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC): compact, sortable, exact."""
    if not value:
        return ""
    return value.replace("T", " ").replace("Z", "")[:19]


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from ``start`` to ``end`` (now when ``end`` is None); None without start."""
    began = _parse(start)
    if began is None:
        return None
    ended = _parse(end) or datetime.now(UTC)
    return max(0.0, (ended - began).total_seconds())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _short(job_id: str | None) -> str:
    """The last 8 characters, as the CLI's tables show a job id."""
    return job_id[-8:] if job_id else ""


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # package files: no stat() of every template on every page
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["short"] = _short
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    env.globals["elapsed"] = seconds_between
    env.globals["nav"] = NAV
    env.globals["version"] = __version__
    return env


@dataclass(frozen=True, slots=True)
class UiContext:
    """What every page module is handed: the templates and the sessions."""

    env: Environment
    sessions: UiSessions

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(login_required=self.sessions.required, **context)


def html_page(ui: UiContext, name: str, request: Request, **context: Any) -> HTMLResponse:
    """A full page (or fragment) with the UI's security headers."""
    body = ui.render(name, path=request.url.path, **context)
    return HTMLResponse(body, headers=_headers())


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def guard(request: Request) -> None:
    """Let the request through when the UI is open or its session cookie is live.

    A page load without one is sent to the login form (303 with the page to come back
    to); a stream or fragment request (``Accept`` without HTML) gets 401."""
    sessions: UiSessions = request.app.state.ui_sessions
    if sessions.allows(request.headers):
        return
    if "text/html" not in request.headers.get("accept", ""):
        raise HTTPException(401, "log in first: this server requires an API key")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(303, "log in first", headers={"Location": "/login?next=" + quote(target)})


UiGuard = Annotated[None, Depends(guard)]
