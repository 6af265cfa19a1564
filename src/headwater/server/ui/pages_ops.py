"""Overview, Triggers, Dead letters and Workers.

Placeholders for now: each page names the API route and CLI command that show the same
data until the page is built."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from headwater.server.ui.render import UiContext, html_page

__all__ = ["add_routes"]

_PLACEHOLDERS = (
    ("/", "overview", "Overview", "/api/jobs", "headwater jobs"),
    ("/triggers", "triggers", "Triggers", "/api/triggers", "headwater triggers"),
    (
        "/dead-letters",
        "dead-letters",
        "Dead letters",
        "/api/dead-letters",
        "headwater dead-letters",
    ),
    ("/workers", "workers", "Workers", "/api/workers", "headwater workers"),
)


def add_routes(router: APIRouter, ui: UiContext) -> None:
    for path, page, title, api, cli in _PLACEHOLDERS:
        _placeholder(router, ui, path, page, title, api, cli)


def _placeholder(
    router: APIRouter, ui: UiContext, path: str, page: str, title: str, api: str, cli: str
) -> None:
    async def show(request: Request) -> HTMLResponse:
        return html_page(ui, "placeholder.html", request, page=page, title=title, api=api, cli=cli)

    router.add_api_route(path, show, methods=["GET"], response_class=HTMLResponse, name=page)
