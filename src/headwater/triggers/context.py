"""What a trigger is given: the small surface of a running headwater it may use.

Triggers (scheduler, webhook) never build stores or dispatchers themselves; the process
that runs them hands them a ``TriggerContext``. ``Node`` does not match the protocol
as-is (its ``dispatcher`` is the unbatched one), so ``CallbackTriggerContext`` adapts
any set of callables to it; tests hand a fake.

Optional: a context may also have ``redact(data) -> data`` (JSON-like data with every
secret value masked). The webhook uses it on job outputs and error reasons it returns;
without it, responses are not redacted. A protocol cannot declare an optional member,
so the webhook looks it up with ``getattr``. Likewise ``refresh()`` (awaitable): read
the workspace from its files now, for Strøm's ``force_refresh`` on a trigger. And
``paused(name) -> bool``: whether the trigger is paused (``headwater pause``); a paused
webhook answers 503 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from headwater.dispatch.dispatcher import BatchingDispatcher
from headwater.errors import HeadwaterError
from headwater.store.base import Store
from headwater.workspace.models import Workspace
from headwater.workspace.secret_tree import secret_scope
from headwater.workspace.templating import TemplateEngine

__all__ = ["CallbackTriggerContext", "TriggerContext", "refreshed_workspace", "secret_context"]

log = structlog.get_logger(__name__)


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
        refresh: Callable[[], Awaitable[object]] | None = None,
        paused: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.templates = templates
        self._workspace = workspace
        self._secrets = secrets
        if redact is not None:
            # Only set when given: the webhook checks ``getattr(ctx, "redact", None)``.
            self.redact = redact
        if refresh is not None:
            self.refresh = refresh
        if paused is not None:
            self.paused = paused

    def workspace(self) -> Workspace:
        return self._workspace()

    def secrets(self) -> Mapping[str, str]:
        return self._secrets()


async def refreshed_workspace(ctx: TriggerContext, trigger: str) -> Workspace:
    """Strøm's ``force_refresh``: the workspace read from its files now, not at the
    watcher's next turn, so a job started right after an edit runs the edited task. A
    broken edit keeps the loaded workspace (and is logged, as the watcher does)."""
    refresh = getattr(ctx, "refresh", None)
    if refresh is not None:
        try:
            await refresh()
        except HeadwaterError as exc:
            log.error("workspace_refresh_failed", trigger=trigger, error=str(exc))
    return ctx.workspace()
