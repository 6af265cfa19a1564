"""Strøm's task state for one step: read the previous snapshot, keep the new one.

Rules (Strøm's, from its task-state guide and worker):
- when a step starts it reads the task's current snapshot (and the workspace's global
  one): its JSON is ``state`` (``global_state``) in the step's templates, absent (None)
  when there is none; its files are unpacked into ``$STATE_DIR`` (``$GLOBAL_STATE_DIR``),
  with the JSON as ``state.json``. So a later step of the same job sees what an earlier
  one saved;
- a step saves a new snapshot when its process ran to its end (any exit code; not after
  a timeout or cancel) and it wrote something: ``STATE: {...}`` lines on stdout
  (merged, a later key wins) or files into ``$STATE_OUT_DIR`` (a ``state.json`` there is
  the JSON when there are no lines). ``GLOBAL_STATE:`` / ``$GLOBAL_STATE_OUT_DIR`` do the
  same for the global snapshot;
- a new snapshot replaces the current one whole; of two jobs saving at once, the last
  one wins (no merge), as in Strøm;
- a snapshot over the size limits is not kept: the step logs a warning and goes on.
Files are kept for local steps; ``STATE:`` lines work with every runner.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater.jsonsafe import is_data_error
from headwater.runners.base import StepOutcome, StepResult
from headwater.store.ids import utcnow
from headwater.store.task_state import TaskStateRecord

if TYPE_CHECKING:
    from headwater.engine.control import ControlPlane
    from headwater.workspace.models import Task, Workspace

__all__ = [
    "MAX_STATE_FILES_BYTES",
    "MAX_STATE_JSON_BYTES",
    "Snapshots",
    "StateLines",
    "load_snapshots",
    "save_snapshots",
    "uses_state",
]

MAX_STATE_JSON_BYTES = 1024 * 1024
MAX_STATE_FILES_BYTES = 10 * 1024 * 1024
_STATE_JSON = "state.json"
_PREFIXES = (("GLOBAL_STATE:", True), ("STATE:", False))
# Anything that could read or write state: worth two store reads when a step starts.
_MENTIONS_STATE = re.compile(r"(?i)state")


@dataclass(frozen=True, slots=True)
class Snapshots:
    """The task's and the workspace's current snapshots when a step started."""

    task: TaskStateRecord | None = None
    global_: TaskStateRecord | None = None

    def context(self) -> dict[str, Any]:
        return {
            "state": self.task.state if self.task is not None else None,
            "global_state": self.global_.state if self.global_ is not None else None,
        }


@dataclass
class StateLines:
    """The ``STATE:`` / ``GLOBAL_STATE:`` objects of a step's stdout, merged."""

    task: dict[str, Any] = field(default_factory=dict)
    global_: dict[str, Any] = field(default_factory=dict)

    def feed(self, line: str) -> str | None:
        """Take ``line`` if it is a state line; a warning when it is a malformed one."""
        for prefix, is_global in _PREFIXES:
            if line.startswith(prefix):
                text = line[len(prefix) :].strip()
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    return f"warning: a {prefix} line is not JSON ({exc}); line skipped"
                if not isinstance(value, dict):
                    return f"warning: a {prefix} line must hold a JSON object; line skipped"
                (self.global_ if is_global else self.task).update(value)
                return None
        return None


def uses_state(workspace: Workspace, task: Task) -> bool:
    """Whether the task's steps or their actions could read state (else nothing is read)."""
    texts = [task.model_dump_json()]
    for step in task.flow.values():
        if step.inline is not None or step.action in workspace.actions:
            texts.append(workspace.action_for(step).model_dump_json())
    return any(_MENTIONS_STATE.search(t) for t in texts)


async def load_snapshots(plane: ControlPlane, workspace: str, task: str) -> Snapshots:
    current, shared = await asyncio.gather(
        plane.get_task_state(workspace, task), plane.get_task_state(workspace, None)
    )
    return Snapshots(current, shared)


def unpack(snapshot: TaskStateRecord | None, folder: Path) -> None:
    """The snapshot's files (and ``state.json``) into the empty ``folder``."""
    if snapshot is None or not folder.is_dir() or any(folder.iterdir()):
        return
    if snapshot.files:
        with tarfile.open(fileobj=io.BytesIO(snapshot.files), mode="r:gz") as tar:
            tar.extractall(folder, filter="data")  # no links out, no absolute names
    if snapshot.state is not None:
        (folder / _STATE_JSON).write_text(json.dumps(snapshot.state))


def ran_to_its_end(result: StepResult) -> bool:
    if result.outcome is StepOutcome.SUCCEEDED:
        return True
    return result.outcome is StepOutcome.FAILED and result.exit_code is not None


async def save_snapshots(
    plane: ControlPlane,
    workspace: str,
    task: str,
    job_id: str,
    step: str,
    lines: StateLines,
    env: Mapping[str, str],
) -> list[str]:
    """Keep what the step wrote; the warnings for what could not be kept."""
    warnings: list[str] = []
    for name, merged, out in (
        (task, lines.task, env.get("STATE_OUT_DIR")),
        (None, lines.global_, env.get("GLOBAL_STATE_OUT_DIR")),
    ):
        what = "global state" if name is None else "task state"
        if not merged and not _has_entries(out):
            continue  # the common case: nothing to keep, no thread hop
        try:
            snapshot = await asyncio.to_thread(
                _snapshot, workspace, name, job_id, step, merged, Path(out) if out else None
            )
        except (OSError, ValueError, tarfile.TarError) as exc:
            warnings.append(f"warning: the step's {what} was not kept: {exc}")
            continue
        if snapshot is None:
            continue
        try:
            await plane.save_task_state(snapshot)
        except Exception as exc:
            # A value no store can keep (e.g. a NUL character) is the step's, not a crash.
            if not is_data_error(exc):
                raise
            warnings.append(f"warning: the step's {what} was not kept: {str(exc)[:300]}")
    return warnings


def _has_entries(folder: str | None) -> bool:
    if not folder:
        return False
    try:
        with os.scandir(folder) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def _snapshot(
    workspace: str,
    task: str | None,
    job_id: str,
    step: str,
    merged: dict[str, Any],
    out: Path | None,
) -> TaskStateRecord | None:
    state: dict[str, Any] | None = dict(merged) if merged else None
    files: list[Path] = []
    if out is not None and out.is_dir():
        for path in sorted(out.rglob("*")):
            if path == out / _STATE_JSON:
                if state is None:
                    loaded = json.loads(path.read_text())
                    if not isinstance(loaded, dict):
                        raise ValueError(f"{_STATE_JSON} must hold a JSON object")
                    state = loaded
            elif path.is_file() and not path.is_symlink():
                files.append(path)
    if state is None and not files:
        return None
    if state is not None and len(json.dumps(state)) > MAX_STATE_JSON_BYTES:
        raise ValueError(f"its JSON is over the {MAX_STATE_JSON_BYTES}-byte limit")
    blob = _tarball(out, files) if out is not None and files else None
    if blob is not None and len(blob) > MAX_STATE_FILES_BYTES:
        raise ValueError(f"its files are over the {MAX_STATE_FILES_BYTES}-byte limit")
    return TaskStateRecord(workspace, task, job_id, step, state, blob, utcnow())


def _tarball(root: Path, files: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in files:
            size = path.stat().st_size
            if size > MAX_STATE_FILES_BYTES:
                raise ValueError(f"{path.name} is over the {MAX_STATE_FILES_BYTES}-byte limit")
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return buffer.getvalue()


def file_names(snapshot: TaskStateRecord) -> list[str]:
    """The names of a snapshot's files (for the API)."""
    if not snapshot.files:
        return []
    with tarfile.open(fileobj=io.BytesIO(snapshot.files), mode="r:gz") as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())
