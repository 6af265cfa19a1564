"""``headwater run`` (one job in the foreground) and ``headwater up`` (the embedded node)."""

from __future__ import annotations

import contextlib
import json
import signal
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from headwater.cli import app
from headwater.cli.keys import api_keys
from headwater.core.status import JobStatus, LogStream
from headwater.errors import HeadwaterError, WorkspaceError

if TYPE_CHECKING:  # the heavy modules are imported where used, so --help stays fast
    import asyncio

    from rich.console import Console

    from headwater.store.base import JobRecord, LogRecord, Store
    from headwater.store.retention import RetentionPolicy

DB_ENV = "HEADWATER_DATABASE_URL"

PathArg = Annotated[
    Path,
    typer.Argument(
        help="Workspace: a YAML file, a directory of *.yaml/*.yml files, or a config"
        " listing several (`workspaces:`); `up` also takes a Python app, app.py, whose"
        " @headwater.on_… functions it runs.",
        exists=True,
        resolve_path=True,
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=DB_ENV,
        help="Database URL: sqlite:///path.db or postgresql://user@host/db "
        "(default: .headwater/headwater.db in the current directory).",
    ),
]
RunDbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=DB_ENV,
        help="Database URL to keep the job in: sqlite:///path.db or "
        "postgresql://user@host/db (default: a temporary database, deleted when the job "
        "ends).",
    ),
]
ArtifactsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--artifacts-dir",
        envvar="HEADWATER_ARTIFACTS_DIR",
        help="Where the files steps write to $ARTIFACTS_DIR are kept, per job "
        "(`up`: .headwater/artifacts in the current directory; `run`: none).",
    ),
]
HostOpt = Annotated[
    str, typer.Option(envvar="HEADWATER_HOST", help="Address the HTTP API listens on.")
]
PortOpt = Annotated[
    int, typer.Option(envvar="HEADWATER_PORT", min=0, max=65535, help="Port of the HTTP API.")
]
ConcurrencyOpt = Annotated[
    int,
    typer.Option(envvar="HEADWATER_CONCURRENCY", min=1, help="Jobs the worker runs at once."),
]
ApiKeysOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--api-key",
        # One name across server and client; the plural for a list of keys.
        envvar=["HEADWATER_API_KEY", "HEADWATER_API_KEYS"],
        help="Bearer key(s) the API requires; mandatory when --host is not loopback "
        "(several: repeat the option, or separate them with commas).",
    ),
]


RetentionOpt = Annotated[
    str | None,
    typer.Option(
        "--retention",
        envvar="HEADWATER_RETENTION",
        help="Delete finished jobs (with steps and logs) and rejected events older than "
        "this: 30d, or per status: completed=7d,failed=30d,cancelled=7d,rejected=30d. "
        "Pending and running jobs are never deleted. Default: keep everything.",
    ),
]
LogRetentionOpt = Annotated[
    str | None,
    typer.Option(
        "--log-retention",
        envvar="HEADWATER_LOG_RETENTION",
        help="Delete log lines older than this (e.g. 7d), whatever their job's status.",
    ),
]


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


LogLevelOpt = Annotated[
    LogLevel,
    typer.Option(
        envvar="HEADWATER_LOG_LEVEL", case_sensitive=False, help="Log level of headwater itself."
    ),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        envvar="HEADWATER_LOG_FORMAT",
        case_sensitive=False,
        help="console: key=value lines for people; json: one object per line.",
    ),
]


def default_db_url() -> str:
    from headwater.store.urls import default_sqlite_url  # here: it loads SQLAlchemy

    return default_sqlite_url(Path.cwd())


def _print_problems(console: Console, exc: WorkspaceError) -> None:
    for problem in exc.problems:
        console.print(problem.format(), markup=False, highlight=False)


@app.command()
def run(
    path: PathArg,
    task: Annotated[str, typer.Argument(help="The task to run.")],
    input_json: Annotated[
        str, typer.Option("--input", "-i", help="The job input as a JSON object.")
    ] = "{}",
    db: RunDbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final job as JSON.")] = False,
    log_level: Annotated[
        LogLevel,
        typer.Option(case_sensitive=False, help="Log level of headwater itself."),
    ] = LogLevel.WARNING,
    artifacts_dir: ArtifactsDirOpt = None,
) -> None:
    """Run one job of TASK in the foreground, streaming its logs; exit 0 if it completed."""
    import asyncio

    from rich.console import Console

    from headwater.logging_setup import configure_logging

    configure_logging(log_level)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        job_input = json.loads(input_json)
    except ValueError as exc:
        err.print(
            f'error: --input is not valid JSON ({exc}); write e.g. --input \'{{"name": "x"}}\''
        )
        raise typer.Exit(2) from None
    if not isinstance(job_input, dict):
        err.print('error: --input must be a JSON object, e.g. --input \'{"name": "x"}\'')
        raise typer.Exit(2)
    interrupted: list[str] = []
    try:
        job = asyncio.run(_run(path, task, job_input, db, out, as_json, interrupted, artifacts_dir))
    except (KeyboardInterrupt, _Interrupted):
        # Ctrl-C: say what became of the job (``_run`` ended it before returning).
        err.print(f"interrupted: {' '.join(interrupted) or 'no job was started'}", markup=False)
        raise typer.Exit(130) from None
    except WorkspaceError as exc:
        _print_problems(err, exc)
        raise typer.Exit(1) from None
    except HeadwaterError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    kept = _artifacts(artifacts_dir, job.id)
    if as_json:
        from headwater.server.json_shapes import job_json

        out.print_json(json.dumps({**job_json(job), "artifacts": kept}))
    elif kept:
        assert artifacts_dir is not None
        names = ", ".join(a["name"] for a in kept)
        out.print(f"  artifacts in {artifacts_dir / job.id / 'files'}: {names}", markup=False)
    raise typer.Exit(0 if job.status is JobStatus.COMPLETED else 1)


def _artifacts(artifacts_dir: Path | None, job_id: str) -> list[dict[str, Any]]:
    if artifacts_dir is None:
        return []
    import dataclasses

    from headwater.artifacts import ArtifactStore

    return [dataclasses.asdict(a) for a in ArtifactStore(artifacts_dir).artifacts_of(job_id)]


async def _run(
    path: Path,
    task: str,
    job_input: dict[str, Any],
    db: str | None,
    out: Console,
    quiet: bool,
    interrupted: list[str],
    artifacts_dir: Path | None = None,
) -> JobRecord:
    import asyncio

    from headwater.node import Node, NodeSettings
    from headwater.worker.worker import WorkerSettings

    with tempfile.TemporaryDirectory(prefix="headwater-run-") as tmp:
        url = db or f"sqlite:///{tmp}/run.db"
        settings = NodeSettings(
            db_url=url, run_worker=False, worker=WorkerSettings(), artifacts_dir=artifacts_dir
        )
        node = Node(path, settings)
        await node.start()
        try:
            started = time.monotonic()
            follower = _LogPrinter(out, quiet)
            created: list[str] = []
            running = asyncio.ensure_future(
                node.run_one(task, job_input, on_logs=follower, on_created=created.append)
            )
            try:
                if not await _until_done_or_ctrl_c(running):
                    if created:
                        interrupted.append(await _end_interrupted(node.store, created[0]))
                    raise _Interrupted
            except asyncio.CancelledError:  # Ctrl-C before our handler was in place
                running.cancel()
                if created:
                    interrupted.append(await _end_interrupted(node.store, created[0]))
                raise
            job = running.result()
            await follower.catch_up(node, job.id)
            if not quiet:
                _print_result(out, job, time.monotonic() - started)
            return job
        finally:
            await node.close()


class _Interrupted(Exception):
    """Ctrl-C stopped ``headwater run``; ``interrupted`` says what became of the job."""


async def _until_done_or_ctrl_c(running: asyncio.Future[Any]) -> bool:
    """Whether ``running`` ended by itself; on Ctrl-C it is stopped first (its worker
    with it). SIGINT sets an event (asyncio's own handler cancels the main task, and
    Python 3.11 can lose a cancellation that meets a finishing ``wait_for``: CI once saw a
    Ctrl-C ignored and the job run to its end). The cancellation is repeated until the
    task has ended for the same reason. A second Ctrl-C raises KeyboardInterrupt."""
    import asyncio

    loop = asyncio.get_running_loop()
    ctrl_c = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, ctrl_c.set)
    pressed = asyncio.ensure_future(ctrl_c.wait())
    try:
        await asyncio.wait({running, pressed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        pressed.cancel()
    if not ctrl_c.is_set() or running.done():
        return True
    while not running.done():
        running.cancel()
        await asyncio.wait({running}, timeout=1.0)
    return False


class _LogPrinter:
    def __init__(self, out: Console, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self.after = 0

    def __call__(self, records: list[LogRecord]) -> None:
        for r in records:
            self.after = max(self.after, r.seq)
            if self.quiet:
                continue
            prefix = _escape(f"[{r.step}]" if r.step else "[job]")
            if r.stream is LogStream.SYSTEM:
                self.out.print(f"[dim]{prefix} {_escape(r.line)}[/dim]")
            elif r.stream is LogStream.STDERR:
                self.out.print(f"[cyan]{prefix}[/cyan] [yellow]{_escape(r.line)}[/yellow]")
            else:
                self.out.print(f"[cyan]{prefix}[/cyan] {_escape(r.line)}")

    async def catch_up(self, node: Any, job_id: str) -> None:
        while True:
            records = await node.store.get_logs(job_id, after_seq=self.after, limit=1000)
            if not records:
                return
            self(records)


async def _end_interrupted(store: Store, job_id: str) -> str:
    """Cancel the job of an interrupted ``run`` (its worker has stopped by now, so a
    running job is finished here); what became of it, for the user."""
    with contextlib.suppress(Exception):
        job = await store.get_job(job_id)
        if job is not None and not job.status.is_terminal:
            await store.request_cancel(job_id)
            await store.finish_job(
                job_id, None, JobStatus.CANCELLED, error="interrupted (Ctrl-C on headwater run)"
            )
        job = await store.get_job(job_id)
        if job is not None:
            return f"job {job_id} {job.status.value}"
    return f"job {job_id} left as it was (the database could not be reached)"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_result(out: Console, job: JobRecord, seconds: float) -> None:
    # `run` has no API to approve through: a job that waits ends the run, saying so.
    status = "suspended (waiting for approval)" if job.suspended else job.status.value
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(status, "white")
    mark = "✓" if job.status is JobStatus.COMPLETED else "✗"
    out.print(f"[{colour}]{mark} job {job.id} {status}[/{colour}] in {seconds:.2f}s")
    for step in job.steps:
        detail = f" — {step.error}" if step.error else ""
        out.print(f"  {step.name}: {step.status.value}{_escape(detail)}")
    if job.error:
        out.print(f"[red]error:[/red] {_escape(job.error)}")
    if job.output is not None:
        out.print("output: " + _escape(json.dumps(job.output)))


@app.command()
def up(
    path: PathArg,
    db: DbOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    concurrency: ConcurrencyOpt = 8,
    api_key: ApiKeysOpt = None,
    retention: RetentionOpt = None,
    log_retention: LogRetentionOpt = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_format: LogFormatOpt = LogFormat.CONSOLE,
    artifacts_dir: ArtifactsDirOpt = None,
    tags: Annotated[
        list[str] | None,
        typer.Option(
            "--tags",
            envvar="HEADWATER_WORKER_TAGS",
            help="Tags of the embedded worker on top of its runners' (e.g. gpu): a step"
            " that needs a tag it lacks waits for a worker that has it.",
        ),
    ] = None,
) -> None:
    """Run the HTTP API, the triggers and a worker in one process (Ctrl-C stops it)."""
    import asyncio

    from rich.console import Console

    from headwater.logging_setup import configure_logging

    err = Console(stderr=True, highlight=False)
    try:
        check_port(host, port)  # before anything starts or prints
    except HeadwaterError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    configure_logging(log_level, log_format)
    keys = api_keys(api_key)
    try:
        policy = retention_policy(retention, log_retention)
        kept_in = artifacts_dir or Path.cwd() / ".headwater" / "artifacts"
        worker_tags = frozenset(t.strip() for v in tags or [] for t in v.split(",") if t.strip())
        asyncio.run(
            _up(
                path,
                db or default_db_url(),
                host,
                port,
                concurrency,
                keys,
                err,
                policy,
                kept_in,
                worker_tags,
            )
        )
    except WorkspaceError as exc:
        _print_problems(err, exc)
        raise typer.Exit(1) from None
    except HeadwaterError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None


def check_port(host: str, port: int) -> None:
    """Raise one clear line when the API could not listen on ``host:port``."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise HeadwaterError(f"--host {host!r} is not an address ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: a port in TIME_WAIT from a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise HeadwaterError(f"port {port} is in use; choose --port") from None
            raise HeadwaterError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def retention_policy(retention: str | None, log_retention: str | None) -> RetentionPolicy | None:
    """The policy of ``--retention`` / ``--log-retention`` (None: keep everything)."""
    from headwater.store.retention import parse_retention

    policy = parse_retention(retention, log_retention)
    return None if policy.empty else policy


async def _up(
    path: Path,
    db_url: str,
    host: str,
    port: int,
    concurrency: int,
    keys: list[str],
    err: Console,
    retention: RetentionPolicy | None = None,
    artifacts_dir: Path | None = None,
    worker_tags: frozenset[str] = frozenset(),
) -> None:
    from headwater.app.up import UpSettings, run_up

    settings = UpSettings(
        path, db_url, host, port, concurrency, tuple(keys), retention, artifacts_dir, worker_tags
    )
    await run_up(settings, err.print)
