"""A small synchronous client of the headwater HTTP API (what the client commands use).

Every failure surfaces as a ``ClientError`` whose message is one line a person can act
on: the server is not there, it answered with an API error (its message), it timed out.
The commands print that line; nobody sees an httpx traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from headwater.defaults import DEFAULT_SERVER
from headwater.errors import HeadwaterError

__all__ = [
    "DEFAULT_SERVER",
    "ApiError",
    "ClientError",
    "HeadwaterClient",
    "ServerUnreachable",
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


class HeadwaterClient:
    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "headwater-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(
                base_url=self.server, headers=headers, timeout=timeout, transport=transport
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ClientError(f"--server {server!r} is not a valid URL ({exc})") from None

    def close(self) -> None:
        self._http.close()

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

    def get_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/api/jobs/{_seg(job_id)}")
        return job

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("POST", f"/api/jobs/{_seg(job_id)}/cancel")
        return job

    def retry_job(self, job_id: str) -> dict[str, Any]:
        """A new job of the same task with the same input (the job must be final)."""
        job: dict[str, Any] = self._request("POST", f"/api/jobs/{_seg(job_id)}/retry")
        return job

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
            try:
                # No read timeout: a quiet job may print nothing for hours.
                timeout = httpx.Timeout(self.timeout, read=None)
                with self._http.stream("GET", path, params=params, timeout=timeout) as resp:
                    if resp.status_code >= 400:
                        resp.read()
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
            except httpx.ConnectError:
                if not connected:
                    raise ServerUnreachable(self.server) from None
                unreachable = True  # the server is restarting: keep trying a while
            except (httpx.RemoteProtocolError, httpx.ReadError):
                pass
            except httpx.HTTPError as exc:
                raise _transport_error(self.server, self.timeout, exc) from None
            failures += 1
            if failures > reconnects:
                if unreachable:
                    raise ServerUnreachable(self.server)
                raise ClientError(
                    f"the log stream from {self.server} keeps ending before the job does"
                )
            time.sleep(min(0.25 * 2**failures, 5.0))

    # -- plumbing --------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _transport_error(self.server, self.timeout, exc) from None
        if resp.status_code >= 400:
            raise _api_error(resp)
        try:
            return resp.json()
        except ValueError:
            raise ClientError(
                f"{self.server} answered {path} with something that is not JSON; "
                "is it a headwater server?"
            ) from None


def _seg(value: str) -> str:
    """A path segment: ids and task names must not smuggle ``/`` or ``?`` into the URL."""
    from urllib.parse import quote

    return quote(value, safe="")


def _transport_error(server: str, timeout: float, exc: httpx.HTTPError) -> ClientError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachable(server)
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(f"the headwater server at {server} did not answer within {timeout:g}s")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ClientError(f"--server {server!r} is not an http:// or https:// URL")
    return ClientError(f"talking to {server} failed: {exc}")


def _api_error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return ApiError(
            resp.status_code,
            str(err.get("type", "error")),
            str(err.get("message", "")) or f"HTTP {resp.status_code}",
            err.get("details"),
        )
    snippet = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else ""
    message = f"HTTP {resp.status_code} {resp.reason_phrase}" + (f": {snippet}" if snippet else "")
    return ApiError(resp.status_code, "http_error", message)
