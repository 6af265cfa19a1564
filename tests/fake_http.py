"""A small threaded HTTP/1.1 server for recorded-API fakes (Docker Engine, Kubernetes).

Each fake subclasses ``FakeApi`` and implements ``handle(request, reply)``. Every
request is recorded (method, path without the API version prefix, query, JSON body)
so tests can assert the exact calls a runner made. Replies support plain JSON, chunked
streams, and hijacked connections (Docker's attach).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.query or ''}"


class Reply:
    """How a handler answers; wraps the BaseHTTPRequestHandler."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._h = handler

    def json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self._h.send_response(status)
        self._h.send_header("Content-Type", "application/json")
        self._h.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self._h.send_header(key, value)
        self._h.end_headers()
        if data:
            self._h.wfile.write(data)

    def empty(self, status: int) -> None:
        self._h.send_response(status)
        self._h.send_header("Content-Length", "0")
        self._h.end_headers()

    def text(self, status: int, body: str) -> None:
        data = body.encode()
        self._h.send_response(status)
        self._h.send_header("Content-Type", "text/plain")
        self._h.send_header("Content-Length", str(len(data)))
        self._h.end_headers()
        self._h.wfile.write(data)

    def stream(self, status: int, content_type: str, chunks: Iterator[bytes]) -> None:
        """A chunked body; each item is flushed as one chunk as soon as it is produced."""
        self._h.send_response(status)
        self._h.send_header("Content-Type", content_type)
        self._h.send_header("Transfer-Encoding", "chunked")
        # The connection closes after the stream: said in the headers, so that the client
        # does not put it back in its pool and send the next request down a closed socket
        # (RemoteDisconnected, seen under load in the docker step-files test).
        self._h.send_header("Connection", "close")
        self._h.end_headers()
        self._h.wfile.flush()
        try:
            for chunk in chunks:
                if chunk:
                    self._h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self._h.wfile.flush()
            self._h.wfile.write(b"0\r\n\r\n")
            self._h.wfile.flush()
        except OSError:
            pass
        self._h.close_connection = True

    def hijack(self, status: int, headers: dict[str, str]) -> socket.socket:
        """Send the status line and headers, then hand over the raw connection."""
        self._h.send_response(status)
        for key, value in headers.items():
            self._h.send_header(key, value)
        self._h.end_headers()
        self._h.wfile.flush()
        self._h.close_connection = True
        return self._h.connection


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up on streams (that is how a runner stops reading): not an error.
        pass


class FakeApi:
    version_prefix: str | None = None  # a regex-free prefix test: "/v" for Docker

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as Go's net/http: no 40 ms delayed-ACK stalls

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _any

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def strip_prefix(self, path: str) -> str:
        return path

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        request = Request(
            handler.command, self.strip_prefix(parts.path), query, body, dict(handler.headers)
        )
        with self._lock:
            self.requests.append(request)
        self.handle(request, Reply(handler))

    def handle(self, request: Request, reply: Reply) -> None:
        raise NotImplementedError

    def calls(self, predicate: Callable[[Request], bool] | None = None) -> list[Request]:
        with self._lock:
            found = list(self.requests)
        return [r for r in found if predicate is None or predicate(r)]

    def summary(self) -> list[str]:
        """``METHOD path`` of every request, for asserting the sequence of calls."""
        return [f"{r.method} {r.path}" for r in self.calls()]
