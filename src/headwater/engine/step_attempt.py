"""One attempt of a step, apart from the StepRunner that makes it: the sink its
process's lines go to (``OutputCollector``: logs, the last ``OUTPUT:``, the stderr tail),
what its result becomes (``Attempt``), its delayed RUNNING record and the container
command it runs (``image_command``)."""

from __future__ import annotations

import asyncio
import shlex
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from headwater.engine.control import ControlPlane
from headwater.engine.logwriter import LogWriter
from headwater.engine.task_state import StateLines
from headwater.errors import TemplateError
from headwater.runners.base import OUTPUT_PREFIX, StepOutcome, StepResult, parse_output_line
from headwater.store.base import JobRecord, LogLine, LogStream, StepStatus, StepUpdate
from headwater.store.ids import utcnow

__all__ = [
    "RUNNING_RECORD_DELAY",
    "Attempt",
    "LineHook",
    "OutputCollector",
    "Reporter",
    "RunningRecord",
    "from_result",
    "image_command",
]


class Reporter(Protocol):
    """What an ``OutputCollector`` needs of its StepRunner: the log and system lines."""

    logs: LogWriter

    async def system(self, job_id: str, step: str | None, text: str) -> None: ...


class LineHook(Protocol):
    """Sees a step's lines before they are logged; True means "consumed, don't log it".
    Event-source consumers use it to turn ``OUTPUT:`` lines into events."""

    async def __call__(self, step: str, stream: LogStream, line: str, truncated: bool) -> bool: ...

    async def close(self) -> None:
        """The step's process ended: commit what it emitted before the step finishes."""


@dataclass(frozen=True, slots=True)
class Attempt:
    status: StepStatus
    output: Any = None
    error: str | None = None
    exit_code: int | None = None
    retryable: bool = True


# A step that ends sooner than this is stored once, when it ends (with the job's finish
# when it is the job's last): most function and short shell steps take milliseconds,
# and a commit each for "running" was a third of a job's writes.
RUNNING_RECORD_DELAY = 0.05


class RunningRecord:
    """A step's running state, stored ``RUNNING_RECORD_DELAY`` after it started unless
    it has ended by then. ``settle`` (before anything else is stored for the step) drops
    it if it was not written, and waits for it (raising what it raised) if it was."""

    __slots__ = ("_control", "_job_id", "_timer", "_update", "_write")

    def __init__(self, control: ControlPlane, job_id: str, update: StepUpdate) -> None:
        self._control = control
        self._job_id = job_id
        self._update = update
        self._write: asyncio.Future[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(RUNNING_RECORD_DELAY, self._start)

    def _start(self) -> None:
        self._write = asyncio.ensure_future(
            self._control.upsert_steps(self._job_id, [self._update])
        )

    async def settle(self) -> None:
        self._timer.cancel()
        if self._write is not None:
            await self._write


# A failed step's error ends with the last lines it wrote to stderr (its cause: a
# traceback's last lines, a command's complaint), at most this many lines and characters.
STDERR_TAIL_LINES = 10
STDERR_TAIL_CHARS = 2000


def from_result(result: StepResult, output: Any, stderr_tail: Iterable[str] = ()) -> Attempt:
    if result.outcome is StepOutcome.SUCCEEDED:
        return Attempt(StepStatus.COMPLETED, output=output, exit_code=result.exit_code)
    if result.outcome is StepOutcome.CANCELLED:
        return Attempt(
            StepStatus.CANCELLED, output=output, error=result.error, exit_code=result.exit_code
        )
    return Attempt(
        StepStatus.FAILED,
        output=output,
        error=with_stderr(result.error, list(stderr_tail)),
        exit_code=result.exit_code,
    )


def with_stderr(error: str | None, tail: list[str]) -> str | None:
    if not tail:
        return error
    text = "\n".join(tail)
    if len(text) > STDERR_TAIL_CHARS:
        text = "…" + text[-STDERR_TAIL_CHARS:]
    return f"{error or 'failed'}; stderr (last lines):\n{text}"


class OutputCollector:
    """The LineSink of a step: logs lines, keeps the last ``OUTPUT:`` object."""

    def __init__(self, runner: Reporter, job: JobRecord, step: str, hook: LineHook | None) -> None:
        self._runner = runner
        self._job = job
        self._step = step
        self._hook = hook
        self.output: Any = None
        self.problem: str | None = None  # an OUTPUT value that no store can keep
        self._warned_truncation = False
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.state = StateLines()  # STATE: / GLOBAL_STATE: lines

    async def __call__(self, stream: LogStream, line: str, truncated: bool) -> None:
        if not line.strip():
            return
        if self._hook is not None and await self._hook(self._step, stream, line, truncated):
            return
        if stream is LogStream.STDERR:
            self.stderr_tail.append(line.rstrip())
        if stream is LogStream.STDOUT and "STATE:" in line[:13]:
            problem = self.state.feed(line)
            if problem is not None:
                await self._runner.system(self._job.id, self._step, problem)
        if stream is LogStream.STDOUT and line.startswith(OUTPUT_PREFIX):
            if truncated:
                await self._runner.system(
                    self._job.id, self._step, "warning: an OUTPUT line was too long and was skipped"
                )
                return
            parsed = parse_output_line(line)
            if parsed is not None and parsed.value is not None:
                self.output = parsed.value
            elif parsed is not None and parsed.unstorable:
                self.problem = f"an OUTPUT value cannot be stored: {parsed.problem}"
                await self._runner.system(self._job.id, self._step, f"error: {self.problem}")
            elif parsed is not None:
                await self._runner.system(
                    self._job.id, self._step, f"warning: {parsed.problem}; line skipped"
                )
        elif truncated and not self._warned_truncation:
            self._warned_truncation = True
            await self._runner.system(
                self._job.id,
                self._step,
                "warning: a line was longer than the limit and was cut",
            )
        await self._runner.logs.write(LogLine(self._job.id, self._step, stream, line, utcnow()))


def image_command(
    entrypoint: Any, cmd: Any, command: Any, where: str
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """``(entrypoint, cmd)`` of a container: the image's ENTRYPOINT and CMD replaced.

    ``entrypoint`` (a list, or a string split like a shell would) replaces ENTRYPOINT;
    ``command`` (Strøm's list) or a list ``cmd`` replaces CMD. A string ``cmd`` is a
    shell command (``/bin/sh -c CMD``) when there is no entrypoint, and the
    entrypoint's arguments (split like a shell would) when there is one."""

    def words(value: Any, field_name: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, list):
            return tuple(str(v) for v in value)
        try:
            return tuple(shlex.split(str(value)))
        except ValueError as exc:
            message = f"{where} {field_name}: cannot be split into words: {exc}"
            raise TemplateError(message) from None

    first = words(entrypoint, "entrypoint")
    if command is not None:
        return first, words(command, "command")
    if isinstance(cmd, str) and first is None:
        return ("/bin/sh", "-c"), (cmd,)
    return first, words(cmd, "cmd")
