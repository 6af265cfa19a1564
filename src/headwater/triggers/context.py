"""What a trigger is given: the small surface of a running headwater it may use.

Triggers (scheduler, webhook) never build stores or dispatchers themselves; the process
that runs them hands them a ``TriggerContext``. ``Node`` does not match the protocol
as-is (its ``dispatcher`` is the unbatched one), so ``CallbackTriggerContext`` adapts
any set of callables to it; tests hand a fake.

Optional: a context may also have ``redact(data) -> data`` (JSON-like data with every
secret value masked). The webhook uses it on job outputs and error reasons it returns;
without it, responses are not redacted. A protocol cannot declare an optional member,
so the webhook looks it up with ``getattr``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from headwater.dispatch.dispatcher import BatchingDispatcher
from headwater.store.base import Store
from headwater.workspace.models import Workspace
from headwater.workspace.secret_tree import secret_scope
from headwater.workspace.templating import TemplateEngine

__all__ = ["CallbackTriggerContext", "TriggerContext", "secret_context"]


class TriggerContext(Protocol):
    """The running instance as a trigger sees it."""

    # Read-only properties so that plain attributes and properties both satisfy it.
    @property
    def store(self) -> Store: ...

    @property
    def dispatcher(self) -> BatchingDispatcher:
        """``dispatch_one(Event)`` / ``dispatch_many([...])``; outcomes exist after commit."""
        ...

    @property
    def templates(self) -> TemplateEngine: ...

    def workspace(self) -> Workspace:
        """The currently loaded workspace (a reload may swap it between calls)."""
        ...

    def secrets(self) -> Mapping[str, str]:
        """The workspace's resolved secrets (``{{ secret.x }}``)."""
        ...


def secret_context(ctx: TriggerContext) -> dict[str, Any]:
    """The template context of a trigger's ``input``/``secret``: secrets under both names."""
    return secret_scope(ctx.secrets())


class CallbackTriggerContext:
    """A ``TriggerContext`` made of callables (how ``Node`` hands itself to triggers)."""

    def __init__(
        self,
        *,
        store: Store,
        dispatcher: BatchingDispatcher,
        templates: TemplateEngine,
        workspace: Callable[[], Workspace],
        secrets: Callable[[], Mapping[str, str]],
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.templates = templates
        self._workspace = workspace
        self._secrets = secrets
        if redact is not None:
            # Only set when given: the webhook checks ``getattr(ctx, "redact", None)``.
            self.redact = redact

    def workspace(self) -> Workspace:
        return self._workspace()

    def secrets(self) -> Mapping[str, str]:
        return self._secrets()
