"""One consumer's worker process (spawned by ``headwater consumer run``):

    python -m headwater.sdk.consumers.worker_main APP_SPEC CONSUMER_NAME

Settings come from ``$HEADWATER_CONSUMER_SETTINGS`` (JSON), the heartbeat file from
``$HEADWATER_HEARTBEAT_FILE``. SIGTERM or SIGINT: finish the current event, release the
lease, exit 0. Any other end is a crash (non-zero), which the supervisor counts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from headwater.logging_setup import configure_logging
from headwater.sdk.consumers.heartbeat import Heartbeat
from headwater.sdk.consumers.settings import ConsumerSettings
from headwater.sdk.consumers.supervisor import HEARTBEAT_ENV, OWNER_ENV, SETTINGS_ENV
from headwater.sdk.consumers.worker import ConsumerWorker
from headwater.sdk.loading import load_registry
from headwater.sdk.redis_util import connect
from headwater.sdk.registrations import ConsumerRegistration
from headwater.store.sql import open_store

__all__ = ["main"]


async def run(spec: str, name: str, settings: ConsumerSettings, heartbeat: Path | None) -> None:
    registration = load_registry(spec).get(name)
    if not isinstance(registration, ConsumerRegistration):
        raise SystemExit(f"{name!r} is not an outbox consumer")
    beat = Heartbeat(heartbeat, settings.heartbeat_interval)
    beat.beat(force=True, state="starting")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await open_store(settings.db_url, migrate=False, pool_size=2)
    redis = connect(settings.redis_url)
    try:
        worker = ConsumerWorker(
            registration,
            settings,
            store=store,
            redis=redis,
            heartbeat=beat,
            owner=os.environ.get(OWNER_ENV) or None,
        )
        await worker.run(stop)
    finally:
        await redis.aclose()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m headwater.sdk.consumers.worker_main APP NAME")
    configure_logging(os.environ.get("HEADWATER_LOG_LEVEL", "info"),
                      os.environ.get("HEADWATER_LOG_FORMAT", "console"))  # fmt: skip
    settings = ConsumerSettings.from_json(os.environ[SETTINGS_ENV])
    heartbeat = os.environ.get(HEARTBEAT_ENV)
    asyncio.run(run(args[0], args[1], settings, Path(heartbeat) if heartbeat else None))


if __name__ == "__main__":
    main()
