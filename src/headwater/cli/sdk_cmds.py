"""The Python SDK's commands: ``consumers list``, ``consumer run|status|list``,
``quarantine list|release``.

They talk to the database (``--db``) and Redis (``--redis``) directly, like the
consumer supervisor itself: an outbox pipeline does not need a headwater server.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from headwater.cli import app
from headwater.cli.run_cmds import (
    DbOpt,
    LogFormat,
    LogFormatOpt,
    LogLevel,
    LogLevelOpt,
    default_db_url,
)
from headwater.defaults import DEFAULT_REDIS_URL
from headwater.errors import HeadwaterError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["RedisOpt", "consumer_app", "consumers_app", "quarantine_app", "run_async"]

T = TypeVar("T")

consumers_app = typer.Typer(
    rich_markup_mode=None, help="Registrations of a Python app (SDK).", no_args_is_help=True
)
consumer_app = typer.Typer(
    rich_markup_mode=None,
    help="Outbox consumers (SDK): run them, see their state.",
    no_args_is_help=True,
)
quarantine_app = typer.Typer(
    rich_markup_mode=None,
    help="Consumers parked by crash-loop protection, and their release.",
    no_args_is_help=True,
)
app.add_typer(consumers_app, name="consumers", rich_help_panel="Python SDK")
app.add_typer(consumer_app, name="consumer", rich_help_panel="Python SDK")
app.add_typer(quarantine_app, name="quarantine", rich_help_panel="Python SDK")

RedisOpt = Annotated[
    str,
    typer.Option("--redis", envvar="HEADWATER_REDIS_URL", help="Redis URL of the streams."),
]
LeaseDurationOpt = Annotated[float, typer.Option(help="Lease duration in seconds.")]
LeaseRenewalOpt = Annotated[float, typer.Option(help="Renew the lease after N seconds.")]
CleanupIntervalOpt = Annotated[str, typer.Option(help="Time between cleanup runs.")]
CleanupBatchOpt = Annotated[int, typer.Option(min=1, help="Max rows deleted per cleanup batch.")]
MetricsPortOpt = Annotated[
    int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT.")
]
AppArg = Annotated[
    str,
    typer.Argument(
        help="The app: a module (pkg.consumers), a file (app.py), optionally :registry.",
        show_default=False,
    ),
]
AppFilter = Annotated[
    str | None, typer.Option("--app", help="Only this app's consumers ({app}.{name}).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; HeadwaterError becomes one line on stderr and exit code 1."""
    import asyncio

    import structlog

    if not structlog.is_configured():
        from headwater.logging_setup import configure_logging

        configure_logging("warning")
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except HeadwaterError as exc:
        _err().print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def duration(value: str, option: str) -> float:
    from headwater.workspace.models import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        _err().print(f"error: {option}: {exc}", markup=False)
        raise typer.Exit(2) from None


# -- consumers list ----------------------------------------------------------------------
def _list(spec: str, as_json: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from headwater.sdk.loading import load_registry

    try:
        registry = load_registry(spec)
    except HeadwaterError as exc:
        _err().print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    items = registry.describe()
    if as_json:
        typer.echo(json.dumps({"app": registry.app, "registrations": items}, indent=2))
        return
    out = Console(highlight=False)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "KIND", "SOURCE", "FUNCTION", "GUARANTEE", "CONFIG"):
        table.add_column(column, overflow="fold")
    from_class = False
    for item in items:
        guarantee = item.get("guarantee") or (
            "once per workflow id" if item["kind"] == "workflow" else "one job per message"
        )
        table.add_row(
            escape(item["full_name"]),
            item["kind"],
            escape(item["source"]),
            escape(item["function"]),
            guarantee,
            escape(_config_cell(item)),
        )
        from_class = from_class or bool(item.get("class_defaults"))
    out.print(table)
    if from_class:
        out.print("* from the class's @headwater.receiver_defaults")


def _config_cell(item: dict[str, Any]) -> str:
    """The receiver's settings given in code (a class's marked *), secrets hidden; the
    full effective configuration is in --json."""
    config = item.get("config") or {}
    inherited = set(item.get("class_defaults") or ())
    shown = [
        f"{key}={json.dumps(config[key]) if not isinstance(config[key], str) else config[key]}"
        + ("*" if key in inherited else "")
        for key in item.get("config_set") or ()
        if key in config
    ]
    return " ".join(shown) or "-"


@consumers_app.command("list")
def consumers_list(spec: AppArg, as_json: JsonFlag = False) -> None:
    """Every registration of the app: its source, name and the function it calls."""
    _list(spec, as_json)


@consumer_app.command("list")
def consumer_list(spec: AppArg, as_json: JsonFlag = False) -> None:
    """Same as `headwater consumers list`."""
    _list(spec, as_json)


# -- consumer run ------------------------------------------------------------------------
@consumer_app.command("run")
def consumer_run(
    spec: AppArg,
    db: DbOpt = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between supervisor passes (quarantine releases).")
    ] = 5.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Max events per XREAD.")] = 100,
    events_per_transaction: Annotated[
        int,
        typer.Option(
            min=1, help="Events that share a commit while their handlers succeed (1: each alone)."
        ),
    ] = 100,
    heartbeat_dir: Annotated[
        Path, typer.Option(help="Directory for the workers' heartbeat files.")
    ] = Path("/tmp/headwater/consumer-heartbeats"),
    heartbeat_timeout: Annotated[
        float, typer.Option(help="Kill a worker with no heartbeat for this many seconds.")
    ] = 30.0,
    graceful_shutdown_timeout: Annotated[
        float, typer.Option(help="On stop, SIGKILL workers still running after this.")
    ] = 30.0,
    lease_duration: LeaseDurationOpt = 30.0,
    lease_renewal: LeaseRenewalOpt = 25.0,
    cleanup_retention: Annotated[
        str, typer.Option(help="Keep dedup records this long (7d, 36h, 3600).")
    ] = "7d",
    cleanup_interval: CleanupIntervalOpt = "5m",
    cleanup_batch_size: CleanupBatchOpt = 1000,
    max_crashes: Annotated[
        int, typer.Option(min=1, help="Crashes within --crash-window that quarantine.")
    ] = 5,
    crash_window: Annotated[float, typer.Option(help="Seconds of the crash window.")] = 60.0,
    healthy_run: Annotated[
        float, typer.Option(help="A worker alive this long clears its crash history.")
    ] = 60.0,
    metrics_port: MetricsPortOpt = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this registration (repeat).")
    ] = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_format: LogFormatOpt = LogFormat.CONSOLE,
) -> None:
    """Run every registered consumer of the app, one supervised worker process each.

    Receiver-bound functions (@headwater.on_kafka …) run in one more supervised process,
    as jobs. Ctrl-C or SIGTERM stop the workers gracefully."""
    from headwater.logging_setup import configure_logging
    from headwater.sdk.consumers.settings import ConsumerSettings, SupervisorSettings

    configure_logging(log_level, log_format)
    try:
        worker = ConsumerSettings(
            db_url=db or default_db_url(),
            redis_url=redis_url,
            batch_size=batch_size,
            events_per_transaction=events_per_transaction,
            lease_duration=lease_duration,
            lease_renewal=lease_renewal,
            cleanup_retention=duration(cleanup_retention, "--cleanup-retention"),
            cleanup_interval=duration(cleanup_interval, "--cleanup-interval"),
            cleanup_batch_size=cleanup_batch_size,
        )
    except ValueError as exc:
        _err().print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    settings = SupervisorSettings(
        worker=worker,
        poll_interval=poll_interval,
        heartbeat_dir=heartbeat_dir,
        heartbeat_timeout=heartbeat_timeout,
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        max_crashes=max_crashes,
        crash_window=crash_window,
        healthy_run=healthy_run,
        metrics_port=metrics_port,
        only=tuple(only or ()),
    )
    from headwater.app.sdk import run_consumers

    run_async(lambda: run_consumers(spec, settings))


# -- consumer status ---------------------------------------------------------------------
@consumer_app.command("status")
def consumer_status(
    db: DbOpt = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    app_name: AppFilter = None,
    no_redis: Annotated[bool, typer.Option("--no-redis", help="Skip the lag (no Redis).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Leases, checkpoints, lag, failing events, dead letters and quarantine."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    async def gather() -> dict[str, Any]:
        from headwater.sdk.status import read_status

        return await read_status(db or default_db_url(), None if no_redis else redis_url, app_name)

    status = run_async(gather)
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    out = Console(highlight=False)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("CONSUMER", "STREAM", "STATE", "CHECKPOINT", "DONE", "LAG", "DLQ", "NOTE"):
        table.add_column(column, overflow="fold")
    for c in status["consumers"]:
        lease = c.get("lease") or {}
        state = "quarantined" if c.get("quarantined") else (
            "running" if lease.get("held") else "stopped"
        )  # fmt: skip
        lag = "-" if c.get("lag_events") is None else f"{c['lag_events']} / {c['lag_ms']:.0f} ms"
        failing = c.get("failing")
        note = ""
        if failing:
            note = f"failing {failing['event_uuid']} ×{failing['attempts']}"
        elif c.get("quarantined"):
            note = f"since {c['quarantined'].get('quarantined_at')}"
        table.add_row(
            escape(c["name"]),
            escape(str(c.get("stream") or "-")),
            state,
            str(c.get("checkpoint") or "-"),
            str(c.get("events_processed", "-")),
            lag,
            str(c.get("dead_letters", 0)),
            escape(note),
        )
    out.print(table)
    if status.get("redis_error"):
        out.print(f"lag unknown: Redis did not answer ({escape(status['redis_error'])})")
    pub = status["publisher"]
    held = (pub.get("lease") or {}).get("held")
    out.print(
        f"publisher: {'running' if held else 'stopped'} · outbox backlog {pub['backlog']}"
        f" (oldest {pub['backlog_ms'] / 1000:.1f} s)"
    )


# -- quarantine --------------------------------------------------------------------------
@quarantine_app.command("list")
def quarantine_list(
    db: DbOpt = None, app_name: AppFilter = None, as_json: JsonFlag = False
) -> None:
    """Quarantined consumers (they stay so across supervisor restarts)."""
    from rich.console import Console
    from rich.markup import escape

    async def gather() -> list[dict[str, Any]]:
        from headwater.sdk.consumers.quarantine import list_quarantined
        from headwater.store.sql import open_store

        store = await open_store(db or default_db_url())
        try:
            return [{"name": r.key, **r.value} for r in await list_quarantined(store, app_name)]
        finally:
            await store.close()

    found = run_async(gather)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    out = Console(highlight=False)
    if not found:
        out.print("no quarantined consumers", style="dim")
        return
    for item in found:
        out.print(
            f"{escape(item['name'])}  {item.get('reason')}  since {item.get('quarantined_at')}"
            f"  ({item.get('crash_count')} crashes in {item.get('window_seconds')} s)"
        )


@quarantine_app.command("release")
def quarantine_release(
    name: Annotated[str, typer.Argument(help="The consumer ({app}.{name}, or just name).")],
    db: DbOpt = None,
) -> None:
    """Release a quarantined consumer: a running supervisor respawns it at its next pass."""
    from rich.console import Console
    from rich.markup import escape

    async def release() -> dict[str, Any]:
        from headwater.sdk.consumers.quarantine import release_quarantine
        from headwater.store.sql import open_store

        store = await open_store(db or default_db_url())
        try:
            return await release_quarantine(store, name)
        finally:
            await store.close()

    released = run_async(release)
    Console(highlight=False).print(f"released {escape(released['name'])}")
