"""Strøm's webhook input: the whole request, ``{body, headers, method, query}``.

Used when a webhook trigger sets ``input_shape: request`` (headwater's default,
``body``, makes the JSON object body's fields the input). As in Strøm: ``body`` is the
parsed JSON when the request says ``Content-Type: application/json`` (the raw text if
it does not parse), the text otherwise, ``null`` for a GET or an empty body; header
names are lower case; ``query`` leaves out ``secret``. Unlike Strøm, the headers that
carry credentials (Authorization, Cookie, signatures) are left out: a job's input is
stored and shown, and they would leak the hook's secret.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

__all__ = ["CREDENTIAL_HEADERS", "request_input"]

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-headwater-signature-256",
    }
)


def request_input(request: Request, body: bytes) -> dict[str, Any]:
    return {
        "body": _body(request, body),
        "headers": {
            k.lower(): v for k, v in request.headers.items() if k.lower() not in CREDENTIAL_HEADERS
        },
        "method": request.method,
        "query": {k: v for k, v in request.query_params.items() if k != "secret"},
    }


def _body(request: Request, body: bytes) -> Any:
    if request.method == "GET" or not body:
        return None
    text = body.decode("utf-8", errors="replace")
    if "application/json" in request.headers.get("content-type", ""):
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return text
    return text
