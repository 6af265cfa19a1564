"""What the HTTP app is given: the small surface of a running headwater it may use.

The app never builds stores, dispatchers or workers itself; the process that runs it (the
embedded ``headwater up`` runtime, or a standalone server) implements ``Runtime`` and
hands it to ``create_app``. Tests hand it a fake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from headwater.store.base import InsertOutcome, JobRecord, PauseKind, Store
from headwater.workspace.models import Workspace

__all__ = ["REDACTED", "FlowControl", "JobFinishObserver", "Runtime", "TriggerStateProvider"]

REDACTED = "••••••"  # what ``Runtime.redact`` puts in place of a secret value


class Runtime(Protocol):
    """The running instance as the HTTP layer sees it."""

    # A read-only property in the protocol so that both a plain attribute and a property
    # satisfy it (a bare ``store: Store`` would demand a settable attribute).
    @property
    def store(self) -> Store: ...

    def workspace(self) -> Workspace:
        """The currently loaded workspace (it may be swapped by a reload between calls)."""
        ...

    async def submit(
        self,
        task: str,
        input: Mapping[str, Any],
        *,
        source_type: str = "api",
        source_id: str | None = None,
        dedup_key: str | None = None,
    ) -> InsertOutcome:
        """Validate ``input`` against the task's schema and insert a job.

        Raises ``NotFoundError`` for an unknown task and ``InputValidationError`` (with
        every reason) for an invalid input.
        """
        ...

    def redact(self, data: Any) -> Any:
        """``data`` (JSON-like, or a string) with every secret value, also inside longer
        strings, replaced by ``REDACTED``."""
        ...

    def health(self) -> Mapping[str, Any]:
        """Component states for ``/healthz``, e.g. ``{"store": "ok", "worker": "ok"}``."""
        ...


@runtime_checkable
class JobFinishObserver(Protocol):
    """Optional: a runtime that acts on a job the API cancelled before any worker took
    it (its ``on_cancel`` hooks fire; a running job's worker reports its own end)."""

    async def job_cancelled(self, job: JobRecord) -> None: ...


@runtime_checkable
class TriggerStateProvider(Protocol):
    """Optional: a runtime that also knows the live state of its triggers.

    ``GET /api/triggers`` merges ``trigger_states()[name]`` into each trigger as
    ``state`` when the runtime implements this (issue "Event-source triggers": running,
    restarts, quarantine, in-flight count...). Without it ``state`` is null.
    """

    async def trigger_states(self) -> Mapping[str, Mapping[str, Any]]: ...


@runtime_checkable
class TriggerControl(Protocol):
    """Optional: a runtime that lets operators act on triggers and the workspace."""

    async def restart_trigger(self, name: str) -> Mapping[str, Any]:
        """Start an idle, backing-off or quarantined event source again."""
        ...

    async def release_trigger(self, name: str) -> Mapping[str, Any]:
        """Release a quarantined event source (ConflictError when it is not)."""
        ...

    async def reload_workspace(self) -> Mapping[str, Any]:
        """Load the workspace again; triggers start, stop or restart to match."""
        ...


@runtime_checkable
class FlowControl(Protocol):
    """Optional: a runtime that pauses and resumes tasks and triggers and re-runs a job
    from a step (``headwater pause``/``resume``, ``headwater retry --from``)."""

    async def set_paused(self, kind: PauseKind, name: str, paused: bool) -> Mapping[str, Any]:
        """Pause or resume; ``{"kind", "name", "paused", "changed"}``. NotFoundError for
        a name the workspace does not define."""
        ...

    async def rerun_from(self, job: JobRecord, step: str) -> str:
        """A new job of ``job``'s task that starts at ``step``, the steps before it kept
        (``headwater.dispatch.rerun``); its id."""
        ...
