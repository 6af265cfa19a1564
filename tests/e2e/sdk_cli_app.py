"""The app the SDK's CLI tests drive (settings from the environment)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import text

import headwater
from headwater import StreamEvent

STREAM = os.environ.get("SDK_E2E_STREAM", "stream:e2e")
FLAGS = Path(os.environ.get("SDK_E2E_FLAGS", "/nonexistent"))

registry = headwater.Registry(app="e2e")

# A worker process (not the supervisor, which imports this too) that finds the flag
# dies at start: a broken deploy, for the crash-loop quarantine.
if os.environ.get("HEADWATER_HEARTBEAT_FILE") and (FLAGS / "crash").exists():
    raise SystemExit(3)


@registry.consumer(STREAM, name="ledger")
def ledger(event: StreamEvent, session: Any) -> None:
    session.execute(text("CREATE TABLE IF NOT EXISTS ledger (event_uuid TEXT, amount INT)"))
    session.execute(
        text("INSERT INTO ledger VALUES (:u, :a)"),
        {"u": event.event_uuid, "a": event.payload.get("amount", 0)},
    )


@registry.consumer(STREAM, name="picky", max_attempts=1)
def picky(event: StreamEvent, session: Any) -> None:
    if event.payload.get("amount", 0) < 0 and not (FLAGS / "fixed").exists():
        raise ValueError("negative amounts are not supported yet")


if os.environ.get("SDK_E2E_REDIS"):

    @registry.on_redis_stream(
        f"{STREAM}:in", name="enrich", url=os.environ["SDK_E2E_REDIS"], start_id="0"
    )
    def enrich(payload: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
        return {"amount": payload["amount"], "doubled": payload["amount"] * 2}
