"""``headwater open``: the running server's page in a browser (the API's interactive docs
until the web UI exists; ``headwater.defaults.BROWSER_PAGE`` says which)."""

from __future__ import annotations

import contextlib
import os
import sys
from enum import StrEnum
from typing import Annotated

import typer

from headwater.cli import app
from headwater.cli.client_cmds import ServerOpt, TokenOpt, _client
from headwater.defaults import BROWSER_PAGE, DEFAULT_SERVER

__all__ = ["Opened", "open_in_browser", "page_url"]


class Opened(StrEnum):
    BROWSER = "browser"
    HEADLESS = "headless"  # no display: a terminal browser would take over this terminal
    NO_BROWSER = "no_browser"  # webbrowser found none it could start


def page_url(server: str) -> str:
    return server.rstrip("/") + BROWSER_PAGE


def _headless() -> bool:
    if "BROWSER" in os.environ or sys.platform in ("darwin", "win32"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_in_browser(url: str) -> Opened:
    if _headless():
        return Opened.HEADLESS
    import webbrowser

    try:
        return Opened.BROWSER if webbrowser.open(url) else Opened.NO_BROWSER
    except webbrowser.Error:
        return Opened.NO_BROWSER


_SAYS = {
    Opened.BROWSER: "opened in your browser",
    Opened.HEADLESS: "no display here (DISPLAY is not set): open the URL above in a browser",
    Opened.NO_BROWSER: "no browser could be started here: open the URL above in a browser",
}


@app.command("open", rich_help_panel="Server")
def open_cmd(
    print_only: Annotated[
        bool, typer.Option("--print", help="Only print the URL; start no browser.")
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Open the server's page in a browser (today its API docs) and print its URL."""
    from headwater.cli.http_client import ApiError

    # A URL that leads nowhere is no help: say so now. A server that answers with an
    # error (unhealthy, say) is there: its page shows what it can.
    with _client(server, token) as client, contextlib.suppress(ApiError):
        client.health()
    url = page_url(server)
    typer.echo(url)
    if not print_only:
        typer.echo(_SAYS[open_in_browser(url)], err=True)
