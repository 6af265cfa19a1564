"""Task state kept between runs of a task (Strøm's state snapshots), in the state table.

A snapshot is what one step left: a JSON object (its ``STATE:`` lines merged, or the
``state.json`` it wrote) and a gzip tarball of the other files it wrote into
``$STATE_OUT_DIR``. Each task has one current snapshot per workspace, and the workspace
one shared by all its tasks (``GLOBAL_STATE:``). A newer snapshot replaces the older one
whole (last writer wins, as in Strøm: concurrent jobs of a task do not merge their
state). The documents live in the store's versioned ``state`` table, so SQLite,
PostgreSQL and the in-memory store keep them alike.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from headwater.store.ids import utcnow

if TYPE_CHECKING:
    from headwater.store.roles import StateStore

__all__ = [
    "GLOBAL_STATE_NAMESPACE",
    "TASK_STATE_NAMESPACE",
    "TaskStateRecord",
    "load_task_state",
    "save_task_state",
]

TASK_STATE_NAMESPACE = "task-state"
GLOBAL_STATE_NAMESPACE = "global-state"


@dataclass(frozen=True, slots=True)
class TaskStateRecord:
    """The current snapshot of a task's state (``task`` None: the workspace's global one)."""

    workspace: str
    task: str | None
    job_id: str
    step: str
    state: dict[str, Any] | None
    files: bytes | None  # gzip tarball of the files, None when the step wrote none
    created_at: datetime

    @property
    def size_bytes(self) -> int:
        return len(self.files or b"")

    def to_doc(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "step": self.step,
            "state": self.state,
            "files": base64.b64encode(self.files).decode() if self.files else None,
            "created_at": self.created_at.isoformat(),
        }

    def to_api(self, file_names: list[str]) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "task": self.task,
            "job_id": self.job_id,
            "step": self.step,
            "state": self.state,
            "files": file_names,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_doc(cls, workspace: str, task: str | None, doc: dict[str, Any]) -> TaskStateRecord:
        files = doc.get("files")
        try:
            blob = base64.b64decode(files, validate=True) if isinstance(files, str) else None
        except (binascii.Error, ValueError):
            blob = None
        state = doc.get("state")
        created = doc.get("created_at")
        return cls(
            workspace=workspace,
            task=task,
            job_id=str(doc.get("job_id", "")),
            step=str(doc.get("step", "")),
            state=state if isinstance(state, dict) else None,
            files=blob,
            created_at=datetime.fromisoformat(created) if isinstance(created, str) else utcnow(),
        )


def _where(workspace: str, task: str | None) -> tuple[str, str]:
    if task is None:
        return GLOBAL_STATE_NAMESPACE, workspace
    # Workspace names are slugs, so the first "/" separates them from the task.
    return TASK_STATE_NAMESPACE, f"{workspace}/{task}"


async def load_task_state(
    store: StateStore, workspace: str, task: str | None
) -> TaskStateRecord | None:
    record = await store.get_state(*_where(workspace, task))
    if record is None:
        return None
    return TaskStateRecord.from_doc(workspace, task, record.value)


async def save_task_state(store: StateStore, snapshot: TaskStateRecord) -> None:
    await store.put_state(*_where(snapshot.workspace, snapshot.task), snapshot.to_doc())
