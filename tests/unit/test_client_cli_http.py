"""HeadwaterClient against a fake transport: error mapping and follow resumption."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from headwater.cli import http_client
from headwater.cli.http_client import (
    ApiError,
    ClientError,
    ConnectFailed,
    HeadwaterClient,
    Request,
    Response,
    ServerUnreachable,
)

Handler = Callable[[Request], Response]


def client(handler: Handler, token: str | None = None) -> HeadwaterClient:
    return HeadwaterClient("http://hw:8080", token, transport=handler)


def reply(status: int, data: object) -> Response:
    return Response(status, json.dumps(data).encode())


def ndjson(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_client.time, "sleep", lambda _s: None)


def test_token_is_sent_as_bearer() -> None:
    seen: list[str | None] = []

    def handler(request: Request) -> Response:
        seen.append(request.headers.get("Authorization"))
        return reply(200, {"jobs": [], "next_before": None})

    client(handler, token="k1").list_jobs()
    client(handler).list_jobs()

    assert seen == ["Bearer k1", None]


def test_path_segments_are_quoted() -> None:
    paths: list[str] = []

    def handler(request: Request) -> Response:
        paths.append(request.target)
        return reply(200, {})

    client(handler).get_job("../tasks?x=1")

    assert paths == ["/api/jobs/..%2Ftasks%3Fx%3D1"]


def test_api_error_carries_the_api_message() -> None:
    def handler(request: Request) -> Response:
        body = {"error": {"type": "conflict", "message": "already final", "details": {"a": 1}}}
        return reply(409, body)

    with pytest.raises(ApiError) as info:
        client(handler).cancel_job("j")

    assert info.value.status == 409
    assert info.value.type == "conflict"
    assert str(info.value) == "already final"
    assert info.value.details == {"a": 1}


def test_non_json_error_body() -> None:
    def handler(request: Request) -> Response:
        return Response(502, b"<html>Bad Gateway</html>\n<body/>")

    with pytest.raises(ApiError, match=r"^HTTP 502 Bad Gateway: <html>Bad Gateway</html>$"):
        client(handler).get_job("j")


def test_success_that_is_not_json() -> None:
    def handler(request: Request) -> Response:
        return Response(200, b"hello from nginx")

    with pytest.raises(ClientError, match="is it a headwater server"):
        client(handler).get_job("j")


def test_connect_error_and_timeout_messages() -> None:
    def refuse(request: Request) -> Response:
        raise ConnectFailed("refused")

    def slow(request: Request) -> Response:
        raise TimeoutError("slow")

    with pytest.raises(ServerUnreachable, match="no headwater server answers at http://hw:8080"):
        client(refuse).list_jobs()
    with pytest.raises(ClientError, match="did not answer within 10s"):
        client(slow).list_jobs()


def test_run_task_sends_input_and_idempotency_key() -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return reply(201, {"job_id": "j", "created": True, "job": {}})

    client(handler).run_task("hello", {"name": "x"}, idempotency_key="k")

    assert json.loads(seen[0].body or b"") == {"input": {"name": "x"}}
    assert seen[0].headers["Idempotency-Key"] == "k"


def test_follow_resumes_after_a_stream_that_ended_early() -> None:
    calls: list[str | None] = []

    def handler(request: Request) -> Response:
        after = request.params.get("after")
        calls.append(after)
        if len(calls) == 1:  # the server restarted mid-job: no end event
            return Response(200, ndjson({"seq": 1, "line": "a"}))
        if len(calls) == 2:  # it could not read the store for a moment
            return Response(200, ndjson({"event": "error", "message": "x"}))
        return Response(
            200,
            ndjson({"seq": 2, "line": "b"}, {"event": "end", "status": "completed"}),
        )

    records = list(client(handler).follow_logs("j"))

    assert [r.get("line") for r in records] == ["a", "b", None]
    assert records[-1] == {"event": "end", "status": "completed"}
    assert calls == ["0", "1", "1"]  # each retry resumes after the last line received


def test_follow_gives_up_after_repeated_early_ends() -> None:
    def handler(request: Request) -> Response:
        return Response(200)

    with pytest.raises(ClientError, match="keeps ending before the job does"):
        list(client(handler).follow_logs("j", reconnects=2))


def test_follow_of_unknown_job_raises_the_api_error() -> None:
    def handler(request: Request) -> Response:
        return reply(404, {"error": {"type": "not_found", "message": "no job"}})

    with pytest.raises(ApiError, match="no job"):
        list(client(handler).follow_logs("j"))
