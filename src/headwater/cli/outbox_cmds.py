"""``headwater publisher run`` and ``headwater send-event``: the producer side of the
outbox pipeline, straight on the database and Redis."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

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
from headwater.cli.sdk_cmds import (
    CleanupBatchOpt,
    CleanupIntervalOpt,
    LeaseDurationOpt,
    LeaseRenewalOpt,
    MetricsPortOpt,
    RedisOpt,
    duration,
    run_async,
)
from headwater.defaults import DEFAULT_REDIS_URL

if TYPE_CHECKING:
    pass

__all__ = ["publisher_app", "send_event_cmd"]

publisher_app = typer.Typer(
    rich_markup_mode=None,
    help="The outbox publisher (SDK): outbox rows → Redis Streams.",
    no_args_is_help=True,
)
app.add_typer(publisher_app, name="publisher", rich_help_panel="Python SDK")


def _json_object(value: str | None, option: str) -> dict[str, Any] | None:
    from rich.console import Console

    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        Console(stderr=True).print(f"error: {option} is not JSON: {exc}", markup=False)
        raise typer.Exit(2) from None
    if not isinstance(parsed, dict):
        Console(stderr=True).print(
            f'error: {option} must be a JSON object, like \'{{"user_id": "123"}}\'', markup=False
        )
        raise typer.Exit(2)
    return parsed


@publisher_app.command("run")
def publisher_run(
    db: DbOpt = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per XADD batch.")] = 500,
    poll_interval: Annotated[
        float | None,
        typer.Option(help="Polling fallback in seconds (default: 1 with NOTIFY, else 0.01)."),
    ] = None,
    lease_duration: LeaseDurationOpt = 30.0,
    lease_renewal: LeaseRenewalOpt = 25.0,
    cleanup_retention: Annotated[
        str, typer.Option(help="Keep published rows and stream entries this long.")
    ] = "7d",
    cleanup_interval: CleanupIntervalOpt = "5m",
    cleanup_batch_size: CleanupBatchOpt = 1000,
    metrics_port: MetricsPortOpt = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_format: LogFormatOpt = LogFormat.CONSOLE,
) -> None:
    """Move committed outbox rows to Redis Streams, oldest first, in batches.

    One publisher at a time holds the lease; start a second one as a standby."""
    from headwater.logging_setup import configure_logging
    from headwater.sdk.publisher import PublisherSettings

    configure_logging(log_level, log_format)
    settings = PublisherSettings(
        db_url=db or default_db_url(),
        redis_url=redis_url,
        batch_size=batch_size,
        poll_interval=poll_interval,
        lease_duration=lease_duration,
        lease_renewal=lease_renewal,
        cleanup_retention=duration(cleanup_retention, "--cleanup-retention"),
        cleanup_interval=duration(cleanup_interval, "--cleanup-interval"),
        cleanup_batch_size=cleanup_batch_size,
    )
    from headwater.app.sdk import run_publisher

    run_async(lambda: run_publisher(settings, metrics_port))


@app.command("send-event", rich_help_panel="Python SDK")
def send_event_cmd(
    stream: Annotated[str, typer.Option(help="The stream, e.g. stream:user:events.")],
    event_type: Annotated[str, typer.Option(help="The event type, e.g. UserCreated.")],
    payload: Annotated[str, typer.Option(help='The payload, a JSON object: {"user_id": "1"}.')],
    metadata: Annotated[str | None, typer.Option(help="Metadata, a JSON object.")] = None,
    count: Annotated[int, typer.Option(min=1, help="Send this many copies (tests).")] = 1,
    db: DbOpt = None,
) -> None:
    """Write events to the outbox (one transaction), as send_event() does in your code."""
    body = _json_object(payload, "--payload")
    meta = _json_object(metadata, "--metadata")
    assert body is not None

    async def send() -> list[str]:
        from headwater.sdk.outbox import asend_event
        from headwater.store.sql import open_store

        store = await open_store(db or default_db_url())
        try:
            async with store.write_engine.begin() as conn:
                return [
                    await asend_event(conn, stream, event_type, body, meta) for _ in range(count)
                ]
        finally:
            await store.close()

    for event_uuid in run_async(send):
        typer.echo(event_uuid)


@app.command("migrate", rich_help_panel="Python SDK")
def migrate_cmd(db: DbOpt = None) -> None:
    """Create or upgrade headwater's tables (the outbox's among them) in the database.

    Every headwater command does it when it starts; run this first when your own code
    calls send_event() before any of them has run."""
    from rich.console import Console

    async def migrate() -> str:
        from headwater.store.sql import open_store

        store = await open_store(db or default_db_url())
        try:
            return store.dialect
        finally:
            await store.close()

    dialect = run_async(migrate)
    Console(highlight=False).print(f"headwater's tables are up to date ({dialect})")
