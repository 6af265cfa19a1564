"""The in-memory store's flow control: paused tasks and triggers, re-run inserts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from headwater.core.status import Channel, PauseKind, StepStatus
from headwater.store.base import InsertOutcome, NewJob, PausedRecord, StepRecord, StepUpdate
from headwater.store.ids import utcnow
from headwater.store.jsoncopy import json_copy

__all__ = ["MemoryFlowOps"]


class MemoryFlowOps:
    """Mixed into InMemoryStore: needs ``insert_jobs``, ``steps`` and ``_publish``."""

    steps: dict[str, dict[str, StepRecord]]
    # What is paused, by kind: name → when. The claim reads ``paused[PauseKind.TASK]``.
    paused: dict[PauseKind, dict[str, datetime]]

    async def insert_jobs(  # provided by InMemoryStore
        self, jobs: Sequence[NewJob], cursor: tuple[str, str] | None = None
    ) -> list[InsertOutcome]:
        raise NotImplementedError

    def _publish(self, channel: Channel, payloads: Iterable[str]) -> None:
        raise NotImplementedError

    def paused_tasks(self) -> dict[str, datetime]:
        return self.paused.setdefault(PauseKind.TASK, {})

    async def set_paused(self, kind: PauseKind, name: str, paused: bool) -> bool:
        names = self.paused.setdefault(PauseKind(kind), {})
        if paused:
            if name in names:
                return False
            names[name] = utcnow()
            return True
        if names.pop(name, None) is None:
            return False
        if PauseKind(kind) is PauseKind.TASK:
            self._publish(Channel.JOBS, ["*"])
        return True

    async def list_paused(self, kind: PauseKind | None = None) -> list[PausedRecord]:
        kinds = [PauseKind(kind)] if kind is not None else list(PauseKind)
        return [
            PausedRecord(each, name, at)
            for each in kinds
            for name, at in sorted(self.paused.get(each, {}).items())
        ]

    async def insert_job_with_steps(self, job: NewJob, steps_done: Sequence[StepUpdate]) -> str:
        # No await between the insert and the steps: nothing can claim the job before
        # its kept steps are there (one event loop, as the store requires).
        (outcome,) = await self.insert_jobs([job])
        self.steps[outcome.id] = {
            s.name: StepRecord(
                job_id=outcome.id,
                name=s.name,
                action=s.action,
                status=StepStatus(s.status),
                exit_code=s.exit_code,
                output=json_copy(s.output),
                error=s.error,
                attempts=s.attempts,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for s in steps_done
        }
        return outcome.id
