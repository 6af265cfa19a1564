"""The one exception tree of headwater: every error we raise derives from HeadwaterError."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a workspace, located in its source file when known."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    severity: Severity = Severity.ERROR
    path: tuple[str | int, ...] = field(default=())

    def format(self) -> str:
        where = self.file or "<workspace>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.severity.value}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity.value,
            "message": self.message,
            "path": ".".join(str(p) for p in self.path),
        }


class HeadwaterError(Exception):
    """Root of every error headwater raises on purpose."""


class WorkspaceError(HeadwaterError):
    """A workspace could not be loaded or is invalid; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity is Severity.ERROR]
        head = errors[0].format() if errors else "invalid workspace"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(head + more)


class TemplateError(HeadwaterError):
    """A template failed to parse or render; the message names the template and variable."""


class TemplateCallError(TemplateError):
    """A filter, test or function refused its arguments, or ``throw()`` was called.

    Raised without a location; the template engine adds which template it was.
    """


class InputValidationError(HeadwaterError):
    """A job's input does not match its task's input schema."""

    def __init__(self, task: str, reasons: list[str]) -> None:
        self.task = task
        self.reasons = reasons
        super().__init__(f"input for task {task!r} is invalid: " + "; ".join(reasons))


class JsonValueError(HeadwaterError, ValueError):
    """A JSON text or value headwater refuses (see ``headwater.jsonsafe``).

    ``unstorable`` is False for text that is not acceptable JSON at all (malformed,
    nested too deep, too large, ``NaN``/``Infinity``) and True for valid JSON holding a
    string no store can keep (``\\u0000``, a lone surrogate): such a value can still be
    recorded, cleaned, as a rejected event with this error as its reason: ``cleaned``
    is then the decoded value with those characters replaced by U+FFFD."""

    def __init__(self, message: str, *, unstorable: bool = False, cleaned: object = None) -> None:
        self.unstorable = unstorable
        self.cleaned = cleaned
        super().__init__(message)


class IdempotencyKeyReusedError(HeadwaterError):
    """An ``Idempotency-Key`` already used for a request with another body (422)."""


class StoreError(HeadwaterError):
    """The store failed or refused an operation."""


class NotFoundError(HeadwaterError):
    """A job, task, trigger or other named thing does not exist."""


class ConflictError(HeadwaterError):
    """The operation conflicts with the current state (e.g. cancel a finished job)."""


class RunnerError(HeadwaterError):
    """A runner could not start or supervise a step (not a step's own failure)."""


class ConfigError(HeadwaterError):
    """Bad command-line or process configuration (database URL, ports, tokens)."""


class MissingClientError(ConfigError):
    """A receiver's client library is not installed; retrying cannot help, so the trigger
    stops with the ``pip install 'headwater[extra]'`` line as its error."""


class ReceiverHaltedError(HeadwaterError):
    """A receiver cannot go on without an operator (its stored position is gone from the
    source): the trigger is marked failed with this message, and not restarted."""


class SourcePositionLostError(ReceiverHaltedError):
    """A receiver's stored position is gone from its source (a MySQL binlog purged while
    headwater was down): retrying cannot bring it back, so the trigger stops with the
    error instead of skipping what was lost."""


class AuthError(HeadwaterError):
    """A credential (API key, worker token) is missing, unknown or revoked."""


class StaleConsumerError(ConflictError):
    """An event-source consumer whose fencing token (or job attempt) is no longer the
    trigger's current one: its events are refused, so two consumers never feed a trigger."""


class ServerUnavailableError(HeadwaterError):
    """No headwater server answered a worker's request (after retries)."""


class RegistrationError(HeadwaterError):
    """An SDK registration is invalid (bad name, duplicate name, wrong handler shape)."""


class InvalidEventError(HeadwaterError, ValueError):
    """``send_event`` was given something that cannot be an outbox event."""


class CommitInTransactionError(HeadwaterError):
    """A consumer handler called ``session.commit()``: the worker owns the transaction,
    because the dedup record, the handler's writes and the checkpoint commit together."""


class LeaseLostError(HeadwaterError):
    """Another process took the lease: work stamped with the old token is refused."""


class ArtifactError(HeadwaterError):
    """A step's artifacts cannot be kept (too large, or no artifact storage here)."""


class WorkflowError(HeadwaterError):
    """A durable workflow cannot go on (see ``headwater.sdk.workflows``)."""


class NonDeterministicWorkflowError(WorkflowError):
    """A workflow's replay called other steps (or in another order) than its record says:
    its code or what it depends on changed between runs. The workflow fails."""


class StepFailedError(WorkflowError):
    """A workflow step failed for good (after its retries); the same error is raised
    when a replay reaches the recorded failure, so a workflow catching it behaves alike."""

    def __init__(self, step: str, error: str) -> None:
        super().__init__(f"step {step!r} failed: {error}")
        self.step = step
        self.error = error


class WorkflowFailedError(WorkflowError):
    """A workflow whose result was asked for failed or was cancelled."""

    def __init__(self, workflow_id: str, status: str, error: str | None) -> None:
        super().__init__(f"workflow {workflow_id!r} {status}: {error or 'no error given'}")
        self.workflow_id = workflow_id
        self.status = status
        self.error = error


def first_line(exc: BaseException, limit: int = 500) -> str:
    """An exception's first line (its type when it has no text), for one-line reasons
    shown to operators (``last_error``, rejected events)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
