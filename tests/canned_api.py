"""A canned headwater API (one job, one log line, one trigger) on a local port, for the
command-line client's tests and ``bench/cli.py``: the client commands run against a
server that answers without a store behind it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

JOB_ID = "01a24ed6-6dd4-735b-9d7e-00000000abcd"
CANNED: dict[str, object] = {
    "/api/jobs": {
        "jobs": [
            {
                "id": JOB_ID,
                "task": "hello",
                "status": "completed",
                "source_type": "api",
                "source_id": None,
                "created_at": "2026-12-07T04:00:00Z",
                "started_at": "2026-12-07T04:00:01Z",
                "finished_at": "2026-12-07T04:00:02Z",
            }
        ],
        "next_before": None,
    },
    f"/api/jobs/{JOB_ID}/logs": {
        "logs": [{"seq": 1, "step": "greet", "stream": "stdout", "line": "hi there"}],
        "last_seq": 1,
        "job_status": "completed",
    },
    "/api/triggers": [
        {"name": "nightly", "type": "scheduler", "task": "hello", "cron": "0 3 * * *"}
    ],
}


class _Canned(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = CANNED.get(self.path.split("?", 1)[0])
        data = json.dumps(body).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_canned() -> Iterator[str]:
    """The canned API's base URL while the block runs."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
