"""Distributed mode: ``headwater server``, ``headwater worker``, ``headwater worker-tokens``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from headwater.cli import app
from headwater.cli.keys import api_keys
from headwater.cli.run_cmds import (
    ApiKeysOpt,
    ConcurrencyOpt,
    DbOpt,
    HostOpt,
    LogFormat,
    LogFormatOpt,
    LogLevel,
    LogLevelOpt,
    LogRetentionOpt,
    PathArg,
    PortOpt,
    RetentionOpt,
    _print_problems,
    check_port,
    default_db_url,
    retention_policy,
)
from headwater.errors import HeadwaterError, WorkspaceError

if TYPE_CHECKING:
    from rich.console import Console

    from headwater.cli.worker_config import WorkerConfig, load_worker_config

__all__ = ["WorkerConfig", "load_worker_config"]


def __getattr__(name: str) -> Any:
    # WorkerConfig (pydantic) lives in worker_config, loaded on first use: --help stays fast.
    if name in __all__:
        from headwater.cli import worker_config

        return getattr(worker_config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


tokens_app = typer.Typer(
    rich_markup_mode=None,
    help="Create, list and revoke the tokens remote workers authenticate with.",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="worker-tokens")


def _err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _fail(exc: HeadwaterError) -> typer.Exit:
    if isinstance(exc, WorkspaceError):
        _print_problems(_err_console(), exc)
    else:
        _err_console().print(f"error: {exc}", markup=False)
    return typer.Exit(1)


@app.command()
def server(
    path: PathArg,
    db: DbOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            envvar="HEADWATER_RUN_WORKER",
            help="Also run a worker in this process.",
        ),
    ] = False,
    concurrency: ConcurrencyOpt = 8,
    api_key: ApiKeysOpt = None,
    stale_after: Annotated[
        float,
        typer.Option(
            envvar="HEADWATER_STALE_AFTER",
            help="Seconds without a heartbeat after which a worker loses its jobs.",
        ),
    ] = 10.0,
    lease_ttl: Annotated[
        float,
        typer.Option(
            envvar="HEADWATER_LEASE_TTL",
            help="Seconds a trigger lease lasts: a dead server's triggers move "
            "to another server within this (plus 1 s).",
        ),
    ] = 6.0,
    retention: RetentionOpt = None,
    log_retention: LogRetentionOpt = None,
    artifacts_dir: Annotated[
        Path | None,
        typer.Option(
            "--artifacts-dir",
            envvar="HEADWATER_ARTIFACTS_DIR",
            help="Where the files steps write to $ARTIFACTS_DIR are kept, per job, remote "
            "workers' included (default: .headwater/artifacts in the current directory). "
            "Several servers need a shared folder here to serve each other's.",
        ),
    ] = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_format: LogFormatOpt = LogFormat.CONSOLE,
) -> None:
    """Serve the API and /worker/* on a shared database, run the triggers this server owns
    (one owner per trigger across servers) and, with --worker, a local worker."""
    import asyncio

    from headwater.app.server import ServerSettings, run_server
    from headwater.logging_setup import configure_logging

    try:
        check_port(host, port)  # before anything starts or prints
    except HeadwaterError as exc:
        raise _fail(exc) from None
    configure_logging(log_level, log_format)
    try:
        policy = retention_policy(retention, log_retention)
    except HeadwaterError as exc:
        raise _fail(exc) from None
    settings = ServerSettings(
        workspace=path,
        db_url=db or default_db_url(),
        host=host,
        port=port,
        api_keys=tuple(api_keys(api_key)),
        run_worker=worker,
        concurrency=concurrency,
        stale_after=stale_after,
        lease_ttl=lease_ttl,
        retention=policy,
        artifacts_dir=artifacts_dir or Path(".headwater") / "artifacts",
    )
    try:
        asyncio.run(run_server(settings, _err_console().print))
    except HeadwaterError as exc:
        raise _fail(exc) from None


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


@app.command(name="worker")
def worker_cmd(
    server_url: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            envvar="HEADWATER_SERVER",
            help="Server URL; repeat it (or separate with commas) to fail over between servers.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="worker-config.yaml (worker_token, tags, ...).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="HEADWATER_WORKER_TOKEN", help="The worker token."),
    ] = None,
    tags: Annotated[
        list[str] | None,
        typer.Option(
            "--tags",
            envvar="HEADWATER_WORKER_TAGS",
            help="Tags this worker offers (script, docker, pod, function, your own).",
        ),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once (default 8).")] = None,
    name: Annotated[str | None, typer.Option(help="Name shown for this worker.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Where workspace copies are kept.")] = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_format: LogFormatOpt = LogFormat.CONSOLE,
) -> None:
    """Run jobs for headwater servers over HTTP (a worker on another host)."""
    import asyncio

    from headwater.app.worker import run_remote_worker
    from headwater.cli.worker_config import WorkerConfig, load_worker_config
    from headwater.logging_setup import configure_logging
    from headwater.worker.remote import RemoteWorkerSettings
    from headwater.worker.worker import WorkerSettings

    configure_logging(log_level, log_format)
    try:
        cfg = load_worker_config(config) if config is not None else WorkerConfig()
    except HeadwaterError as exc:
        raise _fail(exc) from None
    servers = _split(server_url)
    if not servers and cfg.server is not None:
        servers = _split(cfg.server if isinstance(cfg.server, list) else [cfg.server])
    secret = token or cfg.worker_token
    if not servers:
        _err_console().print(
            "error: no server: pass --server URL, set HEADWATER_SERVER or `server:` "
            "in the worker config"
        )
        raise typer.Exit(2)
    if not secret:
        _err_console().print(
            "error: no worker token: pass --token, set HEADWATER_WORKER_TOKEN or "
            "`worker_token:` in the worker config (create one with "
            "'headwater worker-tokens create NAME' next to the database)"
        )
        raise typer.Exit(2)
    chosen = _split(tags) or cfg.tags
    offered = frozenset(chosen) if chosen else None
    settings = RemoteWorkerSettings(
        servers=tuple(servers),
        token=secret,
        tags=offered,
        name=name or cfg.name,
        cache_dir=cache_dir or Path(cfg.cache_dir or Path(".headwater") / "worker-cache"),
        worker=WorkerSettings(
            concurrency=concurrency or cfg.concurrency,
            heartbeat_interval=cfg.heartbeat_interval,
        ),
    )

    try:
        asyncio.run(run_remote_worker(settings, _err_console().print))
    except HeadwaterError as exc:
        raise _fail(exc) from None


# -- worker tokens ---------------------------------------------------------------------------
def _with_store(db: str | None, action: Any) -> Any:
    import asyncio

    from headwater.logging_setup import configure_logging
    from headwater.store.sql import open_store

    configure_logging("warning")

    async def main() -> Any:
        store = await open_store(db or default_db_url())
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except HeadwaterError as exc:
        raise _fail(exc) from None


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. the worker host.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a worker token; it is printed once (only its hash is stored)."""
    from headwater.distributed.tokens import issue_token

    issued = issue_token(name)

    async def action(store: Any) -> None:
        await store.insert_worker_token(issued.record)

    _with_store(db, action)
    if as_json:
        from headwater.server.json_shapes import worker_token_json

        typer.echo(json.dumps({**worker_token_json(issued.record), "token": issued.token}))
        return
    typer.echo(issued.token)
    _err_console().print(
        f"worker token {issued.record.id} ({name}) created; it is shown only now. "
        "Give it to the worker as worker_token: or HEADWATER_WORKER_TOKEN."
    )


@tokens_app.command("list")
def tokens_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List worker tokens (ids and names; the tokens themselves are not stored)."""
    from rich.console import Console

    from headwater.server.json_shapes import worker_token_json

    async def action(store: Any) -> list[Any]:
        return list(await store.list_worker_tokens())

    records = _with_store(db, action)
    if as_json:
        typer.echo(json.dumps([worker_token_json(r) for r in records]))
        return
    out = Console(highlight=False)
    if not records:
        out.print("no worker tokens (create one with 'headwater worker-tokens create NAME')")
    for r in records:
        shown = worker_token_json(r)
        state = f"revoked {shown['revoked_at']}" if r.revoked_at else "active"
        used = shown["last_used_at"] or "never used"
        out.print(f"{r.id}  {r.name}  {state}  created {shown['created_at']}  {used}", markup=False)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token id (from 'list').")],
    db: DbOpt = None,
) -> None:
    """Revoke a worker token: servers refuse it within seconds."""

    async def action(store: Any) -> bool:
        return bool(await store.revoke_worker_token(token_id))

    if not _with_store(db, action):
        _err_console().print(f"error: no active worker token with id {token_id!r}", markup=False)
        raise typer.Exit(1)
    typer.echo(f"worker token {token_id} revoked")
