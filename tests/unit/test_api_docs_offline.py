"""/docs and /redoc work without internet access: every script, style sheet and icon
they load comes from the server itself (FastAPI's defaults load them from a CDN)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from headwater.server.app import create_app
from tests.fakes import FakeRuntime

BASE = "http://hw"
# Any absolute URL (src="https://...", url(//cdn...), fetch("http://...")) in the page.
ABSOLUTE = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+[^\s"'()<>]*""")
LOADED = re.compile(r"""(?:src|href|url)\s*[=:(]\s*['"]?([^'"\s)>]+)""")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # With an API key: the docs must stay reachable without one.
    app = create_app(FakeRuntime(), api_keys=("k1",))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_page_loads_nothing_from_outside_the_server(
    client: httpx.AsyncClient, page: str
) -> None:
    resp = await client.get(page)
    assert resp.status_code == 200
    html = resp.text
    outside = [u for u in ABSOLUTE.findall(html) if not u.startswith(BASE)]
    assert outside == [], outside
    assets = [u for u in LOADED.findall(html) if u.startswith("/")]
    assert any(a.endswith(".js") for a in assets), html  # the page does load a script
    for asset in assets:
        got = await client.get(asset)
        assert got.status_code == 200, asset
        assert len(got.content) > 1000 or asset.endswith(".json"), asset


async def test_swagger_ui_reads_the_servers_openapi_document(client: httpx.AsyncClient) -> None:
    html = (await client.get("/docs")).text
    assert "/openapi.json" in html
    assert '"validatorUrl": null' in html  # no badge fetched from swagger.io
    assert (await client.get("/openapi.json")).status_code == 200
