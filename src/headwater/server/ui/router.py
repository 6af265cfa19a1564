"""The UI's router: static files, login and logout, and the page modules' routes.

``pages_jobs`` (Jobs, Job page), ``pages_tasks`` (Tasks, Run form) and ``pages_ops``
(Overview, Triggers, Dead letters, Workers) each add their routes to the router this
builds; every page route depends on ``render.guard``.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from headwater.server.auth import is_cross_site_write
from headwater.server.ui import pages_jobs, pages_ops, pages_tasks
from headwater.server.ui.render import STATIC, UiContext, guard, html_page, make_environment
from headwater.server.ui.sessions import COOKIE, SESSION_TTL, UiSessions, cookie_token

__all__ = ["STATIC_PREFIX", "ui_router"]

STATIC_PREFIX = "/ui/static"
_MAX_LOGIN_BODY = 4096


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of ``static/`` read once: name -> (bytes, media type). A closed set,
    so no request path can reach outside the folder."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in STATIC.iterdir():
        if path.is_file():
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files[path.name] = (path.read_bytes(), media)
    return files


def _safe_next(value: str | None) -> str:
    """Only a path of this site: ``//evil.example`` or a full URL would be an open
    redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def ui_router(sessions: UiSessions) -> APIRouter:
    ui = UiContext(env=make_environment(), sessions=sessions)
    router = APIRouter(include_in_schema=False)
    static = _static_files()

    @router.get(STATIC_PREFIX + "/{name}")
    async def static_file(name: str) -> Response:
        found = static.get(name)
        if found is None:
            raise HTTPException(404, f"no static file {name!r}")
        body, media = found
        return Response(body, media_type=media, headers={"Cache-Control": "public, max-age=300"})

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str | None = None) -> Response:
        if not sessions.required:
            return RedirectResponse(_safe_next(next), status_code=303)
        return html_page(ui, "login.html", request, next=_safe_next(next), error=None)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        if is_cross_site_write(request.scope, request.headers):
            raise HTTPException(403, "cross-site requests may not log in")
        body = await request.body()
        if len(body) > _MAX_LOGIN_BODY:
            raise HTTPException(413, "the login form is too large")
        form = parse_qs(body.decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0]
        target = _safe_next((form.get("next") or ["/"])[0])
        token = sessions.login(key)
        if token is None:
            page = html_page(ui, "login.html", request, next=target, error="That key is not valid.")
            page.status_code = 401
            return page
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(SESSION_TTL),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        if is_cross_site_write(request.scope, request.headers):
            raise HTTPException(403, "cross-site requests may not log out")
        sessions.logout(cookie_token(request.headers))
        response = RedirectResponse("/login" if sessions.required else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    pages = APIRouter(dependencies=[Depends(guard)])
    pages_jobs.add_routes(pages, ui)
    pages_tasks.add_routes(pages, ui)
    pages_ops.add_routes(pages, ui)
    router.include_router(pages)
    return router
