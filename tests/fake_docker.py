"""A fake Docker Engine (API v1.43) for the docker runner's tests.

It answers the calls the real SDK makes with the shapes of the Engine API reference
(https://docs.docker.com/engine/api/v1.43/): ``/version``, ``/containers/create``
(404 "No such image" for a missing image), ``/images/create`` (a chunked progress
stream), ``/containers/{id}/attach`` (101 UPGRADED, then the multiplexed raw stream:
8-byte headers, stream id 1 = stdout, 2 = stderr), ``start``, ``wait``, ``stop``,
``kill``, ``inspect``, ``DELETE`` and ``/containers/json`` with label filters.

A container follows a ``Script``: what it prints, its exit code, whether it runs until
stopped, whether it honours SIGTERM. Output is written to the attach socket with
blocking sends, so a client that does not read makes the "container" block — the
backpressure the runner relies on; ``sent`` counts the bytes that got out.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import struct
import tarfile
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fake_http import FakeApi, Reply, Request

API_VERSION = "1.43"
_VERSIONED = re.compile(r"^/v\d+\.\d+")


@dataclass
class Script:
    output: list[tuple[int, bytes]] = field(default_factory=list)  # (stream id, bytes)
    exit_code: int = 0
    run_until_stopped: bool = False
    honours_term: bool = True
    output_on_stop: list[tuple[int, bytes]] = field(default_factory=list)
    oom_killed: bool = False
    # Files the container writes while it runs: absolute path -> content.
    writes: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Container:
    id: str
    name: str
    body: dict[str, Any]
    script: Script
    status: str = "created"  # created | running | exited
    exit_code: int = 0
    started: threading.Event = field(default_factory=threading.Event)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    removed: bool = False
    attached: bool = False
    sent: int = 0
    files: dict[str, bytes] = field(default_factory=dict)  # its filesystem, as far as known
    folders: set[str] = field(default_factory=set)

    def exit(self, code: int) -> None:
        if not self.exited.is_set():
            self.status, self.exit_code = "exited", code
            self.exited.set()

    def inspect(self) -> dict[str, Any]:
        running = self.status == "running"
        return {
            "Id": self.id,
            "Name": f"/{self.name}",
            "Image": "sha256:" + "ab" * 32,
            "State": {
                "Status": self.status,
                "Running": running,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": self.script.oom_killed and self.status == "exited",
                "Dead": False,
                "Pid": 4242 if running else 0,
                "ExitCode": self.exit_code if self.status == "exited" else 0,
                "Error": "",
            },
            "Config": {
                "Tty": False,
                "Image": self.body.get("Image"),
                "Labels": self.body.get("Labels") or {},
            },
        }


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


class FakeDockerEngine(FakeApi):
    def __init__(self) -> None:
        self.images: set[str] = set()
        self.script = Script()  # the next containers' behaviour
        self.containers: dict[str, Container] = {}
        self.pull_error: str | None = None  # an error inside the pull progress stream
        self.pull_status: int = 200  # e.g. 404 for "pull access denied"
        self.extra_containers: list[dict[str, Any]] = []  # listed by /containers/json
        self.removed_ids: list[str] = []
        super().__init__()

    def strip_prefix(self, path: str) -> str:
        return _VERSIONED.sub("", path)

    # -- helpers for tests -------------------------------------------------------------
    def only(self) -> Container:
        (container,) = self.containers.values()
        return container

    def create_body(self) -> dict[str, Any]:
        (request,) = self.calls(lambda r: r.path == "/containers/create")
        assert isinstance(request.body, dict)
        return request.body

    # -- the API -------------------------------------------------------------------------
    def handle(self, request: Request, reply: Reply) -> None:
        method, path = request.method, request.path
        if path == "/version":
            reply.json(
                200,
                {
                    "Version": "24.0.7",
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": "1.12",
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": "6.1.0",
                },
            )
            return
        if path == "/_ping":
            reply.text(200, "OK")
            return
        if method == "POST" and path == "/containers/create":
            self._create(request, reply)
            return
        if method == "POST" and path == "/images/create":
            self._pull(request, reply)
            return
        if method == "GET" and path == "/containers/json":
            self._list(request, reply)
            return
        match = re.fullmatch(r"/containers/([^/]+)(?:/(\w+))?", path)
        if match is None:
            reply.json(404, {"message": f"page not found: {path}"})
            return
        ident, action = match.groups()
        container = self.containers.get(ident)
        if container is None or container.removed:
            if method == "DELETE":
                self.removed_ids.append(ident)
            reply.json(404, {"message": f"No such container: {ident}"})
            return
        getattr(self, f"_{action or method.lower()}")(container, request, reply)

    def _create(self, request: Request, reply: Reply) -> None:
        body = request.body
        image = body["Image"]
        if image not in self.images:
            reply.json(404, {"message": f"No such image: {image}"})
            return
        ident = secrets.token_hex(32)
        name = request.query.get("name", ident[:12])
        self.containers[ident] = Container(ident, name, body, self.script)
        reply.json(201, {"Id": ident, "Warnings": []})

    def _pull(self, request: Request, reply: Reply) -> None:
        repo, tag = request.query["fromImage"], request.query.get("tag", "latest")
        if self.pull_status != 200:
            reply.json(
                self.pull_status,
                {
                    "message": f"pull access denied for {repo}, repository does not exist or"
                    " may require 'docker login'"
                },
            )
            return

        def progress() -> Any:
            yield json.dumps({"status": f"Pulling from {repo}", "id": tag}).encode() + b"\r\n"
            if self.pull_error is not None:
                detail = {"errorDetail": {"message": self.pull_error}, "error": self.pull_error}
                yield json.dumps(detail).encode() + b"\r\n"
                return
            yield json.dumps({"status": "Digest: sha256:" + "cd" * 32}).encode() + b"\r\n"
            yield (
                json.dumps({"status": f"Status: Downloaded newer image for {repo}:{tag}"}).encode()
                + b"\r\n"
            )
            self.images.add(f"{repo}:{tag}" if ":" not in repo.rpartition("/")[2] else repo)

        reply.stream(200, "application/json", progress())

    def _list(self, request: Request, reply: Reply) -> None:
        filters = json.loads(request.query.get("filters", "{}"))
        wanted = filters.get("label", [])
        found = []
        for item in [
            *self.extra_containers,
            *(self._summary(c) for c in self.containers.values() if not c.removed),
        ]:
            labels = item.get("Labels") or {}
            if all(labels.get(k) == v for k, _, v in (w.partition("=") for w in wanted)):
                found.append(item)
        reply.json(200, found)

    def _summary(self, c: Container) -> dict[str, Any]:
        return {
            "Id": c.id,
            "Names": [f"/{c.name}"],
            "Image": c.body["Image"],
            "Labels": c.body.get("Labels") or {},
            "State": c.status,
            "Status": "Up 1 second" if c.status == "running" else "Exited (0)",
        }

    def _attach(self, c: Container, request: Request, reply: Reply) -> None:
        c.attached = True
        sock = reply.hijack(
            101,
            {
                "Content-Type": "application/vnd.docker.raw-stream",
                "Connection": "Upgrade",
                "Upgrade": "tcp",
            },
        )
        # dockerd sends nothing before the container starts; neither do we (a client
        # reading the upgrade response must not find stream bytes in its buffer).
        c.started.wait(30)
        try:
            self._run(c, sock)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(2)

    def _run(self, c: Container, sock: Any) -> None:
        try:
            for stream, data in c.script.output:
                sock.sendall(frame(stream, data))
                c.sent += len(data)
            if c.script.run_until_stopped:
                c.stop_requested.wait(60)
                for stream, data in c.script.output_on_stop:
                    sock.sendall(frame(stream, data))
                c.exit(143 if c.script.honours_term else 137)
            else:
                c.exit(c.script.exit_code)
        except OSError:
            c.exit(137)

    def _start(self, c: Container, request: Request, reply: Reply) -> None:
        if c.status == "running":
            reply.empty(304)
            return
        c.status = "running"
        c.started.set()
        if not c.attached:
            threading.Thread(target=self._run, args=(c, _NullSocket()), daemon=True).start()
        reply.empty(204)

    def _wait(self, c: Container, request: Request, reply: Reply) -> None:
        c.exited.wait(60)
        reply.json(200, {"StatusCode": c.exit_code, "Error": None})

    def _stop(self, c: Container, request: Request, reply: Reply) -> None:
        if c.status != "running":
            reply.empty(304)
            return
        c.stop_requested.set()
        grace = float(request.query.get("t", "10"))
        if not c.exited.wait(grace if c.script.honours_term else 0):
            c.exit(137)  # the engine's SIGKILL after the grace
        reply.empty(204)

    def _kill(self, c: Container, request: Request, reply: Reply) -> None:
        if c.status != "running":
            reply.json(409, {"message": f"Container {c.id} is not running"})
            return
        c.stop_requested.set()
        c.exit(137)
        reply.empty(204)

    def _archive(self, c: Container, request: Request, reply: Reply) -> None:
        """``PUT``: a tar extracted at ``path``; ``GET``: the tar of ``path`` (its entries
        under the folder's own name, as dockerd answers), 404 when it does not exist."""
        base = request.query.get("path", "/").rstrip("/")
        if request.method == "PUT":
            with tarfile.open(fileobj=io.BytesIO(request.body), mode="r:*") as tar:
                for member in tar.getmembers():
                    where = f"{base}/{member.name}"
                    if member.isdir():
                        c.folders.add(where)
                    elif member.isfile():
                        handle = tar.extractfile(member)
                        assert handle is not None
                        c.files[where] = handle.read()
            reply.empty(200)
            return
        files = {**c.files, **(c.script.writes if c.status == "exited" else {})}
        inside = {p: d for p, d in files.items() if p.startswith(base + "/")}
        if base not in c.folders and not inside:
            reply.json(404, {"message": f"Could not find the file {base} in container {c.id}"})
            return
        name = base.rsplit("/", 1)[-1]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            folder = tarfile.TarInfo(name)
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
            for path, data in sorted(inside.items()):
                info = tarfile.TarInfo(name + path[len(base) :])
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        reply.stream(200, "application/x-tar", iter([buffer.getvalue()]))

    def _json(self, c: Container, request: Request, reply: Reply) -> None:
        reply.json(200, c.inspect())

    def _delete(self, c: Container, request: Request, reply: Reply) -> None:
        if c.status == "running" and request.query.get("force") not in ("1", "true", "True"):
            reply.json(409, {"message": "cannot remove a running container: stop it first"})
            return
        c.stop_requested.set()
        c.exit(137)
        c.removed = True
        self.removed_ids.append(c.id)
        reply.empty(204)


class _NullSocket:
    def sendall(self, data: bytes) -> None:
        pass
