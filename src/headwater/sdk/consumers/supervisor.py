"""``headwater consumer run``: one worker process per registered consumer, supervised.

Why processes and not tasks: a consumer's handler is the application's code, often
synchronous; in its own process a handler that blocks, leaks, segfaults or calls
``os._exit`` stalls or kills only its consumer, and the crash-loop guard has a process
to count. A worker costs one Python interpreter (≈40 MB).

Each pass (woken by a worker's exit, else every second): respawn what died unless its
crash loop quarantined it; SIGKILL a worker whose heartbeat is older than
``heartbeat_timeout``; every ``poll_interval`` re-read the quarantine records, so a
``headwater quarantine release`` takes effect while running; every ``lag_interval``
count each consumer's lag in events. Stopping: SIGTERM to every worker (each finishes
its event and releases its lease), SIGKILL after ``graceful_shutdown_timeout``. Workers
get SIGKILL from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from redis.exceptions import RedisError

from headwater.runners.process import die_with_parent_hook
from headwater.sdk.consumers.crashloop import CrashLoopGuard, Verdict
from headwater.sdk.consumers.quarantine import list_quarantined, record_quarantine
from headwater.sdk.consumers.settings import SupervisorSettings, lease_name
from headwater.sdk.events import format_id
from headwater.sdk.metrics import PipelineMetrics
from headwater.sdk.redis_util import count_after
from headwater.sdk.registry import Registry
from headwater.store.errors import DATABASE_ERRORS
from headwater.store.outbox_ops import OutboxQueries
from headwater.store.sql import SqlStore

__all__ = ["RECEIVERS_UNIT", "Supervisor", "Unit"]

log = structlog.get_logger(__name__)

_WORKER_MODULE = "headwater.sdk.consumers.worker_main"
RECEIVERS_UNIT = "@receivers"  # the one process running every receiver-bound function
SETTINGS_ENV = "HEADWATER_CONSUMER_SETTINGS"
HEARTBEAT_ENV = "HEADWATER_HEARTBEAT_FILE"
OWNER_ENV = "HEADWATER_LEASE_OWNER"
_INFRA_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, OSError, RedisError, TimeoutError)
_LAG_WARN = 100_000


@dataclass
class Unit:
    key: str  # identity for crashes and quarantine: {app}.{name}, or {app}.@receivers
    name: str
    stream: str | None
    argv: list[str]
    heartbeat: Path
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    waiter: asyncio.Task[int] | None = None
    restarts: int = 0
    owner: str = ""  # the lease owner the running worker was told to be


class Supervisor:
    def __init__(
        self,
        spec: str,
        registry: Registry,
        settings: SupervisorSettings,
        *,
        store: SqlStore,
        redis: Any,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.spec = spec
        self.registry = registry
        self.settings = settings
        self._store = store
        self._redis = redis
        self.metrics = metrics or PipelineMetrics()
        self.guard = CrashLoopGuard(
            settings.max_crashes, settings.crash_window, settings.healthy_run
        )
        self._wake = asyncio.Event()
        self._pending: set[asyncio.Future[None]] = set()  # store writes in flight
        self._spawned = 0
        self.units = self._plan()

    def _plan(self) -> list[Unit]:
        only = set(self.settings.only)
        folder = self.settings.heartbeat_dir
        app = self.registry.app
        units = []
        for reg in self.registry.consumers:
            if only and reg.name not in only:
                continue
            argv = [
                sys.executable,
                "-m",
                "headwater.sdk.consumers.worker_main",
                self.spec,
                reg.name,
            ]
            beat = folder / f"{app}.{reg.name}.{os.getpid()}.json"
            units.append(Unit(reg.full_name, reg.name, reg.stream, argv, beat))
        # The receivers' node runs the workflows too (a worker with the store).
        runs_jobs = self.registry.receivers or self.registry.workflows
        if runs_jobs and (not only or RECEIVERS_UNIT in only):
            argv = [sys.executable, "-m", "headwater.sdk.receiver_node", self.spec]
            beat = folder / f"{app}.receivers.{os.getpid()}.json"
            units.append(Unit(f"{app}.{RECEIVERS_UNIT}", RECEIVERS_UNIT, None, argv, beat))
        return units

    # -- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self.settings.heartbeat_dir.mkdir(parents=True, exist_ok=True)
        await self._restore_quarantine()
        last_poll = last_lag = 0.0
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                now = time.monotonic()
                self._reap(now)
                if now - last_poll >= self.settings.poll_interval:
                    last_poll = now
                    await self._sync_quarantine()
                for unit in self.units:
                    if unit.proc is None and self.guard.may_start(unit.key):
                        await self._spawn(unit)
                self._check_heartbeats(time.monotonic())
                if now - last_lag >= self.settings.lag_interval:
                    last_lag = now
                    await self._report_lag()
                self._export()
                wake = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    [wake, stop_wait], timeout=min(1.0, self.settings.poll_interval),
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                wake.cancel()
                self._wake.clear()
        finally:
            stop_wait.cancel()
            await self._shutdown()

    async def _spawn(self, unit: Unit) -> None:
        unit.heartbeat.unlink(missing_ok=True)
        self._spawned += 1
        unit.owner = f"{socket.gethostname()}:{os.getpid()}:{self._spawned}:{uuid.uuid4().hex[:6]}"
        env = {
            "PYTHONUNBUFFERED": "1",  # a handler's print() shows up at once in the logs
            **os.environ,
            SETTINGS_ENV: self.settings.worker.to_json(),
            HEARTBEAT_ENV: str(unit.heartbeat),
            OWNER_ENV: unit.owner,
        }
        try:
            unit.proc = await asyncio.create_subprocess_exec(
                *unit.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent_hook(os.getpid()),
            )
        except OSError as exc:
            log.error("supervisor_spawn_failed", consumer=unit.key, error=str(exc))
            self._crashed(unit, time.monotonic())
            return
        unit.started = time.monotonic()
        self.guard.started(unit.key, unit.started)
        unit.waiter = asyncio.create_task(unit.proc.wait())
        unit.waiter.add_done_callback(lambda _t: self._wake.set())
        log.info("supervisor_worker_started", consumer=unit.key, pid=unit.proc.pid)

    def _reap(self, now: float) -> None:
        for unit in self.units:
            if unit.waiter is None or not unit.waiter.done():
                continue
            code = unit.waiter.result()
            pid = unit.proc.pid if unit.proc else None
            unit.proc, unit.waiter = None, None
            log.warning(
                "supervisor_worker_exited",
                consumer=unit.key,
                pid=pid,
                code=code,
                uptime=round(now - unit.started, 3),
            )
            self._crashed(unit, now)
            if unit.stream is not None:
                self._background(self._release_lease(unit.key, unit.stream, unit.owner))

    def _background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _release_lease(self, consumer: str, stream: str, owner: str) -> None:
        """The worker is dead for sure: free its lease now rather than when it expires,
        so its replacement starts at once."""
        name = lease_name(stream, consumer)
        try:
            for lease in await self._store.list_leases(name):
                if lease.name == name and lease.owner == owner:
                    await self._store.release_lease(name, owner, lease.token)
        except _INFRA_ERRORS as exc:
            log.warning("failed_to_release_lease", consumer=consumer, error=repr(exc))

    def _crashed(self, unit: Unit, now: float) -> None:
        verdict = self.guard.crashed(unit.key, now)
        if verdict is Verdict.RESTART:
            unit.restarts += 1
            self.metrics.restarts.labels(unit.key).inc()
            return
        if verdict is Verdict.QUARANTINE:
            crashes = self.guard.crash_count(unit.key)
            log.error(
                "supervisor_worker_quarantined",
                consumer=unit.key,
                crash_count=crashes,
                window_seconds=self.settings.crash_window,
            )
            self.metrics.quarantined_total.labels(unit.key).inc()
            self._background(self._persist_quarantine(unit, crashes))

    async def _persist_quarantine(self, unit: Unit, crashes: int) -> None:
        try:
            await record_quarantine(
                self._store, unit.key, unit.stream or "", crashes, self.settings.crash_window
            )
        except _INFRA_ERRORS as exc:  # the in-memory guard stays the authority
            log.error("failed_to_record_quarantine", consumer=unit.key, error=repr(exc))

    async def _restore_quarantine(self) -> None:
        try:
            records = await list_quarantined(self._store, self.registry.app)
        except _INFRA_ERRORS as exc:
            log.error("failed_to_restore_quarantine", error=repr(exc))
            return
        mine = {u.key for u in self.units}
        restored = [r.key for r in records if r.key in mine]
        for key in restored:
            self.guard.quarantine(key)
        if restored:
            log.info("restored_quarantine_from_store", count=len(restored), consumers=restored)

    async def _sync_quarantine(self) -> None:
        """A record deleted by ``headwater quarantine release`` releases it here."""
        if not self.guard.quarantined:
            return
        try:
            stored = {r.key for r in await list_quarantined(self._store, self.registry.app)}
        except _INFRA_ERRORS as exc:
            log.warning("failed_to_read_quarantine", error=repr(exc))
            return
        for key in self.guard.quarantined - stored:
            self.guard.release(key)
            log.warning("supervisor_worker_released", consumer=key)

    def _check_heartbeats(self, now: float) -> None:
        timeout = self.settings.heartbeat_timeout
        for unit in self.units:
            if unit.proc is None or unit.proc.returncode is not None:
                continue
            if now - unit.started < timeout:
                continue  # still starting
            try:
                age = time.time() - unit.heartbeat.stat().st_mtime
            except OSError:
                age = now - unit.started
            if age > timeout:
                log.error(
                    "supervisor_worker_unresponsive",
                    consumer=unit.key,
                    pid=unit.proc.pid,
                    heartbeat_age=round(age, 1),
                )
                with contextlib.suppress(ProcessLookupError):
                    unit.proc.kill()

    # -- metrics ---------------------------------------------------------------------------
    def _export(self) -> None:
        from headwater.sdk.consumers.heartbeat import read_heartbeat

        self.metrics.quarantined.set(len(self.guard.quarantined))
        for unit in self.units:
            if unit.stream is None:
                continue
            labels = self.metrics.worker_up.labels(unit.stream, unit.key)
            labels.set(1 if unit.proc is not None else 0)
            found = read_heartbeat(unit.heartbeat) if unit.proc is not None else None
            if found is not None and found[1].get("lag_ms") is not None:
                self.metrics.lag_ms.labels(unit.stream, unit.key).set(found[1]["lag_ms"])

    async def _report_lag(self) -> None:
        consumers = {u.key: u.stream for u in self.units if u.stream is not None}
        if not consumers:
            return
        try:
            rows = await OutboxQueries(self._store).checkpoints(list(consumers))
            for row in rows:
                if consumers.get(row.consumer_name) != row.stream:
                    continue
                after = format_id(int(row.last_ms), int(row.last_seq))
                count = await count_after(self._redis, row.stream, after)
                self.metrics.lag_events.labels(row.stream, row.consumer_name).set(count)
                self.metrics.events_processed.labels(row.stream, row.consumer_name).set(
                    int(row.events_processed)
                )
                if count >= _LAG_WARN:
                    log.warning("consumer_lag_high", consumer=row.consumer_name, events=count)
        except _INFRA_ERRORS as exc:
            log.warning("consumer_lag_unavailable", error=repr(exc))

    # -- stopping --------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        running = [u for u in self.units if u.proc is not None and u.proc.returncode is None]
        for unit in running:
            assert unit.proc is not None
            with contextlib.suppress(ProcessLookupError):
                unit.proc.send_signal(signal.SIGTERM)
        waits = [u.waiter for u in running if u.waiter is not None]
        if waits:
            _done, pending = await asyncio.wait(
                waits, timeout=self.settings.graceful_shutdown_timeout
            )
            for unit in running:
                if unit.waiter in pending and unit.proc is not None:
                    log.warning("supervisor_worker_killed", consumer=unit.key, pid=unit.proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        unit.proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for unit in self.units:
            unit.heartbeat.unlink(missing_ok=True)
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
