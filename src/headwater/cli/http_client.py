"""A small synchronous client of the headwater HTTP API (what the client commands use).

Every failure surfaces as a ``ClientError`` whose message is one line a person can act
on: the server is not there, it answered with an API error (its message), it timed out.
The commands print that line; nobody sees a traceback.

It speaks HTTP/1.1 through the standard library (``http.client``), not httpx: importing
httpx and its dependencies took longer than the rest of ``headwater jobs`` together, and
a command line that answers in a blink is what the client commands are for. ``transport``
replaces the network in tests (a function from ``Request`` to ``Response``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from headwater.defaults import DEFAULT_SERVER
from headwater.errors import HeadwaterError

__all__ = [
    "DEFAULT_SERVER",
    "ApiError",
    "ClientError",
    "ConnectFailed",
    "HeadwaterClient",
    "Request",
    "Response",
    "ServerUnreachable",
    "Transport",
]

_API_PAGE = 1000  # the API's largest ``limit`` for jobs and its log page size


class ClientError(HeadwaterError):
    """Talking to the server failed; the message is meant for the user as-is."""


class ServerUnreachable(ClientError):
    def __init__(self, server: str) -> None:
        self.server = server
        super().__init__(
            f"no headwater server answers at {server} "
            "(start one with 'headwater up PATH', or pass --server)"
        )


class ApiError(ClientError):
    """The server answered with an error status; ``message`` is the API's message."""

    def __init__(self, status: int, type_: str, message: str, details: Any = None) -> None:
        self.status = status
        self.type = type_
        self.message = message
        self.details = details
        super().__init__(message)


class ConnectFailed(ConnectionError):
    """No connection to the server could be opened (refused, unknown host, timed out)."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str]
    body: bytes | None = None
    timeout: float | None = None  # for the answer; None: as long as it takes (a followed log)
    connect_timeout: float = 10.0

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))


@dataclass
class Response:
    """A response; ``lines`` (when given) yields the body as it arrives."""

    status: int
    body: bytes = b""
    reason: str = ""
    lines: Iterable[bytes] | None = None
    close: Callable[[], None] = field(default=lambda: None)

    def read(self) -> bytes:
        if self.lines is not None:
            self.body, self.lines = b"".join(self.lines), None
        return self.body

    def iter_lines(self) -> Iterator[bytes]:
        if self.lines is None:
            yield from self.body.splitlines()
        else:
            yield from self.lines

    @property
    def text(self) -> str:
        return self.read().decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.read())


Transport = Callable[[Request], Response]


def _http_transport(scheme: str, netloc: str) -> Transport:
    """One connection per request, like a person typing commands (no pool to keep)."""
    import http.client

    def send(request: Request) -> Response:
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = cls(netloc, timeout=request.connect_timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise ConnectFailed(str(exc)) from exc
        conn.sock.settimeout(request.timeout)
        try:
            conn.request(request.method, request.target, body=request.body, headers=request.headers)
            raw = conn.getresponse()
        except BaseException:
            conn.close()
            raise

        def lines() -> Iterator[bytes]:
            while line := raw.readline():
                yield line

        return Response(raw.status, reason=raw.reason, lines=lines(), close=conn.close)

    return send


class HeadwaterClient:
    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: Transport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "User-Agent": "headwater-cli"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        try:
            url = urlsplit(self.server)
            url.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError as exc:
            raise ClientError(f"--server {server!r} is not a valid URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ClientError(f"--server {server!r} is not an http:// or https:// URL")
        self._prefix = url.path.rstrip("/")
        self._send = transport or _http_transport(url.scheme, url.netloc)

    def close(self) -> None:
        """Nothing stays open between requests; kept for ``with``."""

    def __enter__(self) -> HeadwaterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- API -------------------------------------------------------------------------
    def list_jobs(
        self,
        *,
        task: str | None = None,
        status: str | None = None,
        source_type: str | None = None,
        source_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first; follows ``next_before`` when ``limit`` is above one page."""
        filters = {"task": task, "status": status, "source_type": source_type}
        filters["source_id"] = source_id
        jobs: list[dict[str, Any]] = []
        before: str | None = None
        while len(jobs) < limit:
            params = {k: v for k, v in filters.items() if v is not None}
            params["limit"] = str(min(_API_PAGE, limit - len(jobs)))
            if before:
                params["before"] = before
            page = self._request("GET", "/api/jobs", params=params)
            jobs.extend(page["jobs"])
            before = page.get("next_before")
            if not before:
                break
        return jobs

    def health(self) -> dict[str, Any]:
        """``/healthz``: raises like every call when no headwater server answers."""
        status: dict[str, Any] = self._request("GET", "/healthz")
        return status

    def get_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/api/jobs/{_seg(job_id)}")
        return job

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("POST", f"/api/jobs/{_seg(job_id)}/cancel")
        return job

    def decide_step(
        self, job_id: str, step: str, verb: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``verb``: approve or reject the waiting approval step ``step``."""
        path = f"/api/jobs/{_seg(job_id)}/steps/{_seg(step)}/{verb}"
        job: dict[str, Any] = self._request("POST", path, json=body)
        return job

    def retry_job(self, job_id: str, *, from_step: str | None = None) -> dict[str, Any]:
        """A new job of the same task with the same input (the job must be final);
        ``from_step``: it starts there, the completed steps before it kept."""
        body = {"from_step": from_step} if from_step is not None else None
        job: dict[str, Any] = self._request("POST", f"/api/jobs/{_seg(job_id)}/retry", json=body)
        return job

    def bulk_jobs(self, action: str, selection: Mapping[str, Any]) -> dict[str, Any]:
        """``retry`` or ``cancel`` the jobs ``selection`` (filters, limit, dry_run) picks."""
        result: dict[str, Any] = self._request("POST", f"/api/jobs/{_seg(action)}", json=selection)
        return result

    def set_paused(self, kind: str, name: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a ``task`` or ``trigger``."""
        verb = "pause" if paused else "resume"
        path = f"/api/{_seg(kind)}s/{_seg(name)}/{verb}"
        result: dict[str, Any] = self._request("POST", path)
        return result

    def list_tasks(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self._request("GET", "/api/tasks")
        return tasks

    def list_workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = self._request("GET", "/api/workers")
        return workers

    def run_task(
        self, task: str, input: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        result: dict[str, Any] = self._request(
            "POST", f"/api/tasks/{_seg(task)}/run", json={"input": dict(input)}, headers=headers
        )
        return result

    def list_triggers(self) -> list[dict[str, Any]]:
        triggers: list[dict[str, Any]] = self._request("GET", "/api/triggers")
        return triggers

    def trigger_action(self, name: str, action: str) -> dict[str, Any]:
        """``restart`` or ``release`` an event-source trigger."""
        result: dict[str, Any] = self._request("POST", f"/api/triggers/{_seg(name)}/{_seg(action)}")
        return result

    def list_dead_letters(
        self, *, source_id: str | None = None, pending: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "pending": pending}
        if source_id is not None:
            params["source_id"] = source_id
        found: list[dict[str, Any]] = self._request("GET", "/api/dead-letters", params=params)
        return found

    def replay_dead_letters(
        self, ids: list[int], job_input: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"ids": ids}
        if job_input is not None:
            body["input"] = job_input
        result: list[dict[str, Any]] = self._request("POST", "/api/dead-letters/replay", json=body)
        return result

    def reload_workspace(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/api/workspaces/reload")
        return result

    def get_logs(
        self, job_id: str, *, after: int = 0, limit: int = _API_PAGE, step: str | None = None
    ) -> dict[str, Any]:
        """One page: ``{"logs": [...], "last_seq": n, "job_status": "..."}``."""
        params: dict[str, str] = {"after": str(after), "limit": str(limit)}
        if step:
            params["step"] = step
        page: dict[str, Any] = self._request("GET", f"/api/jobs/{_seg(job_id)}/logs", params=params)
        return page

    def iter_logs(self, job_id: str, *, step: str | None = None) -> Iterator[dict[str, Any]]:
        """Every log record stored so far."""
        after = 0
        while True:
            page = self.get_logs(job_id, after=after, step=step)
            yield from page["logs"]
            after = page["last_seq"]
            if len(page["logs"]) < _API_PAGE:
                return

    def follow_logs(
        self,
        job_id: str,
        *,
        after: int = 0,
        step: str | None = None,
        reconnects: int = 5,
    ) -> Iterator[dict[str, Any]]:
        """Log records as they are written, then the ``{"event": "end", "status"}`` record.

        A stream that breaks or ends without the end event (the server restarted) is
        resumed after the last record received, up to ``reconnects`` times in a row.
        """
        path = f"/api/jobs/{_seg(job_id)}/logs"
        failures = 0
        connected = False
        while True:
            params: dict[str, str] = {"follow": "true", "after": str(after)}
            if step:
                params["step"] = step
            unreachable = False
            resp: Response | None = None
            try:
                # No read timeout: a quiet job may print nothing for hours.
                resp = self._send(self._request_for("GET", path, params, None, timeout=None))
                if resp.status >= 400:
                    raise _api_error(resp)
                connected = True
                for raw in resp.iter_lines():
                    if not raw.strip():
                        continue
                    record: dict[str, Any] = json.loads(raw)
                    event = record.get("event")
                    if event == "end":
                        yield record
                        return
                    if event is None:
                        after = max(after, int(record.get("seq", after)))
                        failures = 0
                        yield record
                    # {"event": "error"}: the server could not read the store; the
                    # stream ends and is resumed below like a broken one.
            except (ConnectFailed, ConnectionRefusedError):
                if not connected:
                    raise ServerUnreachable(self.server) from None
                unreachable = True  # the server is restarting: keep trying a while
            except ClientError:
                raise
            except (OSError, ValueError, _http_exception()):
                pass  # the stream broke (or was cut mid-line): resume after the last record
            finally:
                if resp is not None:
                    resp.close()
            failures += 1
            if failures > reconnects:
                if unreachable:
                    raise ServerUnreachable(self.server)
                raise ClientError(
                    f"the log stream from {self.server} keeps ending before the job does"
                )
            time.sleep(min(0.25 * 2**failures, 5.0))

    # -- plumbing --------------------------------------------------------------------
    def _request_for(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: bytes | None,
        *,
        timeout: float | None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        target = self._prefix + path
        if params:
            target += "?" + urlencode({k: _param(v) for k, v in params.items()})
        all_headers = dict(self._headers)
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        return Request(method, target, all_headers, body, timeout, self.timeout)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        body = None if json is None else _dumps(json)
        request = self._request_for(
            method, path, params, body, timeout=self.timeout, headers=headers
        )
        try:
            resp = self._send(request)
            try:
                resp.read()
            finally:
                resp.close()
        except Exception as exc:  # each becomes the one line the user reads
            raise _transport_error(self.server, self.timeout, exc) from None
        if resp.status >= 400:
            raise _api_error(resp)
        try:
            return resp.json()
        except ValueError:
            raise ClientError(
                f"{self.server} answered {path} with something that is not JSON; "
                "is it a headwater server?"
            ) from None


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


def _param(value: Any) -> str:
    if isinstance(value, bool):  # the API reads booleans as true/false
        return "true" if value else "false"
    return str(value)


def _http_exception() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def _seg(value: str) -> str:
    """A path segment: ids and task names must not smuggle ``/`` or ``?`` into the URL."""
    return quote(value, safe="")


def _transport_error(server: str, timeout: float, exc: Exception) -> ClientError:
    import socket

    if isinstance(exc, ConnectFailed | ConnectionRefusedError | socket.gaierror):
        return ServerUnreachable(server)
    if isinstance(exc, TimeoutError):
        return ClientError(f"the headwater server at {server} did not answer within {timeout:g}s")
    if isinstance(exc, ClientError):
        return exc
    return ClientError(f"talking to {server} failed: {exc or type(exc).__name__}")


def _api_error(resp: Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return ApiError(
            resp.status,
            str(err.get("type", "error")),
            str(err.get("message", "")) or f"HTTP {resp.status}",
            err.get("details"),
        )
    text = resp.text.strip()
    snippet = text.splitlines()[0][:200] if text else ""
    reason = resp.reason or _reason(resp.status)
    message = f"HTTP {resp.status} {reason}".rstrip() + (f": {snippet}" if snippet else "")
    return ApiError(resp.status, "http_error", message)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
