"""What a runner is given and what it gives back.

The engine renders templates and resolves the action before calling a runner, so a
runner only starts a process (or container, or pod), hands each output line to a
``LineSink`` and reports how the process ended. The sink is awaited before the next
line is read: a slow sink (for example an event source at ``max_in_flight``) stops the
reading, the pipe fills and the child blocks — backpressure without buffering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from headwater import jsonsafe
from headwater.core.status import LogStream
from headwater.errors import JsonValueError
from headwater.workspace.models import Language

__all__ = [
    "OUTPUT_PREFIX",
    "LineSink",
    "OutputLine",
    "Runner",
    "StepOutcome",
    "StepResult",
    "StepSpec",
    "parse_output_line",
]

OUTPUT_PREFIX = "OUTPUT: "


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A fully rendered step, ready to run."""

    job_id: str
    step: str
    workdir: Path
    env: Mapping[str, str]  # added to the worker's environment
    timeout: float | None = None  # seconds; None: no limit
    kill_grace: float = 5.0  # SIGTERM → SIGKILL
    max_line_bytes: int = 1_048_576
    # script
    script: str | None = None
    source: Path | None = None  # script file (absolute)
    language: Language = Language.SHELL
    interpreter: str | None = None
    dependencies: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # the script's arguments ($1, $2, ... / sys.argv[1:])
    # images (docker/pod runners)
    image: str | None = None
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    manifest: Mapping[str, Any] | None = None
    resources: Mapping[str, str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # A long-running step (an event-source consumer) dies with the worker process, so
    # that recovery never runs it twice.
    die_with_parent: bool = False
    # Container runners: host folders copied into the container before it starts, and
    # container folders copied out to host folders after its process ended (Strøm's
    # /artifacts and state folders), as (container path, host folder).
    copy_in: tuple[tuple[str, Path], ...] = ()
    copy_out: tuple[tuple[str, Path], ...] = ()


class StepOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # non-zero exit, or the runner could not start it
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class StepResult:
    outcome: StepOutcome
    exit_code: int | None
    error: str | None = None  # why it failed, for people (e.g. "timed out after 5s")


class LineSink(Protocol):
    async def __call__(self, stream: LogStream, line: str, truncated: bool) -> None:
        """One line without its newline. ``truncated``: the line exceeded
        ``max_line_bytes`` and ``line`` holds only its first ``max_line_bytes`` bytes."""


class Runner(Protocol):
    async def run(self, spec: StepSpec, sink: LineSink, cancel: asyncio.Event) -> StepResult:
        """Run to completion, or until ``spec.timeout`` or ``cancel`` is set; then stop the
        whole process group (SIGTERM, ``kill_grace``, SIGKILL) before returning."""


@dataclass(frozen=True, slots=True)
class OutputLine:
    """A parsed ``OUTPUT: <json>`` line: ``value`` is set, or ``problem`` says why not.

    ``unstorable``: the line is a valid JSON object that no store can keep (a ``\\u0000``
    or a lone surrogate in a string); ``cleaned`` is then that object with those
    characters replaced, to be recorded as a rejected event with ``problem``."""

    value: dict[str, Any] | None
    problem: str | None = None
    unstorable: bool = False
    cleaned: dict[str, Any] | None = None


def parse_output_line(line: str) -> OutputLine | None:
    """``None`` for lines that are not ``OUTPUT:`` lines; otherwise the object or a problem.

    Only a JSON object is an output (the seed's protocol); anything else after the
    prefix is reported as a problem so the caller can warn and skip it. The JSON is read
    by ``headwater.jsonsafe``: bounded depth, no ``NaN``/``Infinity``."""
    if not line.startswith(OUTPUT_PREFIX):
        return None
    text = line[len(OUTPUT_PREFIX) :]
    try:
        value = jsonsafe.loads(text)
    except JsonValueError as exc:
        if exc.unstorable and isinstance(exc.cleaned, dict):
            return OutputLine(None, str(exc), unstorable=True, cleaned=exc.cleaned)
        if exc.unstorable:
            return OutputLine(None, f"{exc}; and it is not a JSON object")
        return OutputLine(None, f"not acceptable JSON after 'OUTPUT: ': {exc}")
    if not isinstance(value, dict):
        return OutputLine(None, f"'OUTPUT: ' must be followed by a JSON object, got {_kind(value)}")
    return OutputLine(value)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
