"""Runs one step: condition, templates, runner (or sub-job, or function), retries, output."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from headwater.artifacts import ArtifactStore
from headwater.engine.action_input import complete_action_input
from headwater.engine.approval import is_approval, wait_for_approval
from headwater.engine.control import ControlPlane
from headwater.engine.function_context import CURRENT_FUNCTION, FunctionJob, StartJob
from headwater.engine.functions import FunctionCache
from headwater.engine.logwriter import LogWriter
from headwater.engine.step_attempt import (
    Attempt,
    LineHook,
    OutputCollector,
    RunningRecord,
    from_result,
    image_command,
)
from headwater.engine.step_dirs import (
    ArtifactKeeper,
    LocalArtifacts,
    container_dirs,
    host_dirs,
    keep_artifacts,
    scratch_dirs,
)
from headwater.engine.task_state import (
    Snapshots,
    load_snapshots,
    ran_to_its_end,
    save_snapshots,
    unpack,
    uses_state,
)
from headwater.errors import HeadwaterError, TemplateError
from headwater.runners.base import (
    Runner,
    StepOutcome,
    StepResult,
    StepSpec,
)
from headwater.store.base import (
    Channel,
    JobRecord,
    LogLine,
    LogStream,
    StepStatus,
    StepUpdate,
    Store,
)
from headwater.workspace.hooks import is_hook_task
from headwater.workspace.models import Action, ActionType, RunnerKind, Step, Task, Workspace
from headwater.workspace.multi import owner_secrets
from headwater.workspace.secret_tree import secret_scope
from headwater.workspace.templating import TemplateEngine, build_context

__all__ = ["LineHook", "StepRunner", "StepState", "StopSignal"]

log = structlog.get_logger(__name__)

MAX_TASK_DEPTH = 10


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StopSignal:
    """Why the running steps of a job must stop: cancel (reason None) or a task timeout."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None

    def trigger(self, reason: str | None) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


@dataclass
class StepState:
    name: str
    action: str
    status: StepStatus = StepStatus.PENDING
    output: Any = None
    error: str | None = None
    exit_code: int | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_upstream: bool = False  # skipped because a dependency failed
    timeout_at: datetime | None = None  # a suspended approval step fails then
    # The final state is not stored yet: it was the job's last step, so the worker stores
    # it with the job's finish, in one transaction (``Store.finish_job(steps=…)``).
    unsaved: bool = False

    def update(self) -> StepUpdate:
        return StepUpdate(
            name=self.name,
            action=self.action,
            status=self.status,
            exit_code=self.exit_code,
            output=self.output,
            error=self.error,
            attempts=self.attempts,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


SubmitChild = Callable[[JobRecord, str, str, Mapping[str, Any]], Awaitable[str]]


class StepRunner:
    """Everything a step needs, shared by all jobs of a worker."""

    def __init__(
        self,
        control: ControlPlane,  # the Store itself (embedded) or a server (HttpControlPlane)
        logs: LogWriter,
        templates: TemplateEngine,
        runners: Mapping[RunnerKind, Runner],
        secrets: Callable[[], Mapping[str, str]],
        submit_child: SubmitChild,
        line_hook: Callable[[JobRecord, str, int], LineHook | None] = lambda job, step, n: None,
        extra_env: Callable[[JobRecord], Mapping[str, str]] = lambda job: {},
        resume_env: Callable[[JobRecord], Awaitable[Mapping[str, str]]] | None = None,
        kill_grace: float = 5.0,
        max_line_bytes: int = 1_048_576,
        functions: FunctionCache | None = None,
        artifacts: ArtifactStore | ArtifactKeeper | None = None,
        workflow_store: Store | None = None,
        start_job: StartJob | None = None,
    ) -> None:
        self.control = control
        # Durable workflows' records (engine.function_context): the store in an embedded
        # worker; a remote worker has none (its workflows fail with a clear error).
        self._workflow_store = workflow_store
        self._start_job = start_job
        # None: this worker keeps no artifacts
        self._artifacts = (
            LocalArtifacts(artifacts) if isinstance(artifacts, ArtifactStore) else artifacts
        )
        self.logs = logs
        self.templates = templates
        self.runners = runners
        self._secrets = secrets
        self._submit_child = submit_child
        self._line_hook = line_hook
        self._extra_env = extra_env
        # A consumer step's environment read when it starts (HEADWATER_CURSOR).
        self._resume_env = resume_env
        self._kill_grace = kill_grace
        self._max_line_bytes = max_line_bytes
        self._functions = functions or FunctionCache()
        self._state_users: dict[int, tuple[Task, bool]] = {}  # id(task) -> (task, uses)
        # Several workspaces: each one's secrets, cut out of the combined ones once.
        self._owned_secrets: tuple[int, dict[str | None, Mapping[str, str]]] = (0, {})

    async def record(self, job_id: str, state: StepState) -> None:
        await self.control.upsert_steps(job_id, [state.update()])

    async def system(self, job_id: str, step: str | None, text: str) -> None:
        await self.logs.write(LogLine(job_id, step, LogStream.SYSTEM, text, _now()))

    # -- one step, with its retries ------------------------------------------------------
    async def run(
        self,
        workspace: Workspace,
        task: Task,
        job: JobRecord,
        name: str,
        states: Mapping[str, StepState],
        stop: StopSignal,
        each: Mapping[str, Any] | None = None,
    ) -> None:
        """Run step ``name``; ``each``: the item of a for_each instance (engine.fanout)."""
        step = task.flow[name]
        state = states[name]
        # Strøm resolves the task state when a step starts: a later step sees an earlier
        # one's snapshot.
        snaps = await self._snapshots(workspace, task, job)
        # Built when first needed (many steps need none), which is before the next await:
        # it holds the other steps' states as they were when this step started.
        context = _LazyContext(lambda: self.context(job, states, each, snaps, workspace))
        if step.when is not None:
            try:
                condition = self.templates.render(step.when, context(), where=f"step {name!r} when")
            except TemplateError as exc:
                await self._final(job, states, state, StepStatus.FAILED, error=str(exc))
                return
            if not self.templates.is_truthy(condition):
                await self._final(
                    job, states, state, StepStatus.SKIPPED, error="when condition is false"
                )
                return
        if is_approval(workspace, step):
            await wait_for_approval(self, workspace, job, name, step, states, context)
            return
        # Strøm: a step's own retry wins; else its action's.
        retry = step.retry if step.retry is not None else workspace.action_for(step).retry
        retries_used = 0
        while True:
            state.attempts += 1
            state.status = StepStatus.RUNNING
            state.started_at = _now()
            state.error = None
            running = RunningRecord(self.control, job.id, state.update())
            try:
                attempt = await self._attempt(
                    workspace, job, name, step, context, stop, state.attempts, snaps
                )
            finally:
                await running.settle()
            if attempt.status is StepStatus.CANCELLED and stop.reason is not None:
                attempt = Attempt(StepStatus.FAILED, error=stop.reason, exit_code=attempt.exit_code)
            state.exit_code = attempt.exit_code
            state.output = attempt.output
            if attempt.status is StepStatus.SUSPENDED:  # a workflow waits: let the job go
                state.status = StepStatus.SUSPENDED
                state.timeout_at = None
                await self.record(job.id, state)
                return
            can_retry = (
                attempt.status is StepStatus.FAILED
                and attempt.retryable
                and retry is not None
                and retries_used < retry.count
                and not stop.event.is_set()
            )
            if not can_retry:
                await self._final(job, states, state, attempt.status, error=attempt.error)
                return
            retries_used += 1
            assert retry is not None
            delay = retry.delay(retries_used)
            await self.system(
                job.id,
                name,
                f"attempt {state.attempts} failed ({attempt.error}); "
                f"retry {retries_used}/{retry.count} in {delay:.3g}s",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.event.wait(), delay)
            if stop.event.is_set():
                status = StepStatus.CANCELLED if stop.reason is None else StepStatus.FAILED
                await self._final(job, states, state, status, error=stop.reason or "cancelled")
                return

    async def final(
        self,
        job: JobRecord,
        states: Mapping[str, StepState],
        state: StepState,
        status: StepStatus,
        error: str | None,
    ) -> None:
        """Give ``state`` its final ``status`` and store it (or leave it to the job's finish)."""
        await self._final(job, states, state, status, error)

    async def _final(
        self,
        job: JobRecord,
        states: Mapping[str, StepState],
        state: StepState,
        status: StepStatus,
        error: str | None,
    ) -> None:
        state.status = status
        state.error = error
        state.finished_at = _now()
        if all(s.status.is_terminal for s in states.values() if s is not state):
            # The job's last step: its state goes with the job's finish (one transaction
            # instead of two; see JobOutcome.steps).
            state.unsaved = True
            return
        await self.record(job.id, state)

    def context(
        self,
        job: JobRecord,
        states: Mapping[str, StepState],
        each: Mapping[str, Any] | None = None,
        snaps: Snapshots | None = None,
        workspace: Workspace | None = None,
    ) -> dict[str, Any]:
        """The template context of a step of ``job`` (and of a for_each instance's item)."""
        secrets = self._secrets_of(workspace, job.workspace)
        context = self._context(job, states, secrets)
        context.update((snaps or Snapshots()).context())
        if each is not None:
            context["each"] = dict(each)
        return context

    async def _snapshots(self, workspace: Workspace, task: Task, job: JobRecord) -> Snapshots:
        known = self._state_users.get(id(task))
        if known is None or known[0] is not task:
            known = (task, uses_state(workspace, task))
            self._state_users[id(task)] = known
        if not known[1]:
            return Snapshots()
        return await load_snapshots(self.control, job.workspace, job.task)

    def _secrets_of(self, workspace: Workspace | None, owner: str | None) -> Mapping[str, str]:
        """The secrets templates of workspace ``owner`` see (one workspace: all of them)."""
        secrets = self._secrets()
        if workspace is None or not workspace.later_workspaces:
            return secrets
        key = owner if owner in workspace.later_workspaces else None
        seen, cut = self._owned_secrets
        if seen != id(secrets):
            cut = {}
            self._owned_secrets = (id(secrets), cut)
        found = cut.get(key)
        if found is None:
            found = cut[key] = owner_secrets(secrets, key)
        return found

    def _context(
        self, job: JobRecord, states: Mapping[str, StepState], secrets: Mapping[str, str]
    ) -> dict[str, Any]:
        steps = {
            n: {"output": s.output, "status": s.status.value, "error": s.error}
            for n, s in states.items()
        }
        return build_context(
            input=job.input,
            secrets=secrets,
            steps=steps,
            job={
                "id": job.id,
                "task": job.task,
                "workspace": job.workspace,
                "source_type": job.source_type,
                "source_id": job.source_id,
            },
        )

    # -- one attempt ---------------------------------------------------------------------
    async def _attempt(
        self,
        workspace: Workspace,
        job: JobRecord,
        name: str,
        step: Step,
        context: Callable[[], Mapping[str, Any]],
        stop: StopSignal,
        step_attempt: int,
        snaps: Snapshots,
    ) -> Attempt:
        action = workspace.action_for(step)
        try:
            if job.source_type == "hook" and is_hook_task(job.task):
                step_input = job.input  # a hook job's one step: the rendered hook input
            elif _has_template(step.input):
                step_input = self.templates.render(
                    step.input, context(), where=f"step {name!r} input"
                )
            else:  # read only below (functions and sub-jobs get copies)
                step_input = step.input
            step_input = complete_action_input(
                step_input, action, job.input, self.templates, context, f"action {name!r} input"
            )
            if action.type is ActionType.TASK:
                return await self._run_child(job, name, action, step_input, stop)
            if action.type in (ActionType.FUNCTION, ActionType.WORKFLOW):  # a workflow: its
                return await self._run_function(  # wrapper runs it durably as this step
                    job, name, action, step, step_input, stop, action.owner_root or workspace.root
                )
            action_context = {**context(), "input": step_input}
            if action.owner is not None and action.owner != job.workspace:
                # Strøm: another workspace's action renders its body with its own secrets.
                action_context.update(secret_scope(self._secrets_of(workspace, action.owner)))
            spec = self._spec(workspace, job, name, step, action, step_input, action_context)
            runner = self.runners.get(action.effective_runner)
            if runner is None:
                return Attempt(
                    StepStatus.FAILED,
                    error=f"this worker has no {action.effective_runner.value} runner",
                    retryable=False,
                )
            hook = self._line_hook(job, name, step_attempt)
            if hook is not None:  # a consumer: it must not outlive this process
                env = dict(spec.env)
                if self._resume_env is not None:  # where to resume: read now, not earlier
                    env.update(await self._resume_env(job))
                spec = dataclasses.replace(spec, die_with_parent=True, env=env)
        except TemplateError as exc:
            return Attempt(StepStatus.FAILED, error=str(exc), retryable=False)
        collector = OutputCollector(self, job, name, hook)
        kind = action.effective_runner
        scratch = (
            scratch_dirs(spec)
            if kind is RunnerKind.LOCAL
            else container_dirs(spec)
            if kind is RunnerKind.DOCKER
            else contextlib.nullcontext(spec)
        )
        try:
            with scratch as spec:
                folders = host_dirs(spec) if kind is not RunnerKind.POD else {}
                if snaps.task is not None or snaps.global_ is not None:
                    await asyncio.to_thread(_unpack_state, snaps, folders)
                result: StepResult = await runner.run(spec, collector, stop.event)
                if ran_to_its_end(result):
                    warnings = await save_snapshots(
                        self.control,
                        job.workspace,
                        job.task,
                        job.id,
                        name,
                        collector.state,
                        folders,
                    )
                    for warning in warnings:
                        await self.system(job.id, name, warning)
                if kind is not RunnerKind.POD and result.outcome is StepOutcome.SUCCEEDED:
                    kept = await keep_artifacts(self._artifacts, job.id, name, spec)
                    if kept is not None:
                        return Attempt(StepStatus.FAILED, error=kept, retryable=False)
        finally:
            if hook is not None:
                await hook.close()
        if collector.problem is not None and result.outcome is StepOutcome.SUCCEEDED:
            # The output cannot be stored: the step fails instead of its job's finish.
            return Attempt(StepStatus.FAILED, error=collector.problem, exit_code=result.exit_code)
        return from_result(result, collector.output, collector.stderr_tail)

    def _spec(
        self,
        workspace: Workspace,
        job: JobRecord,
        name: str,
        step: Step,
        action: Action,
        step_input: Any,
        action_context: Mapping[str, Any],
    ) -> StepSpec:
        where = f"action {step.action or name!r}"
        env = {
            k: str(self.templates.render(v, action_context, where=f"{where} env {k!r}"))
            for k, v in action.env.items()
        }
        env.update(self._extra_env(job))
        env["HEADWATER_INPUT"] = json.dumps(step_input, default=str)
        script = (
            self.templates.render_str(action.script, action_context, where=f"{where} script")
            if action.script is not None
            else None
        )
        args = tuple(
            self.templates.render_str(a, action_context, where=f"{where} args[{i}]")
            for i, a in enumerate(action.args)
        )
        root = action.owner_root or workspace.root  # another workspace's action: its folder
        workdir = root / action.workdir if action.workdir else root
        # Image fields are templates too (Strøm renders image, cmd and manifest).
        image = (
            self.templates.render_str(action.image, action_context, where=f"{where} image")
            if action.image
            else None
        )
        entrypoint, cmd = image_command(
            self.templates.render(action.entrypoint, action_context, where=f"{where} entrypoint"),
            self.templates.render(action.cmd, action_context, where=f"{where} cmd"),
            self.templates.render(action.command, action_context, where=f"{where} command"),
            where,
        )
        manifest = (
            self.templates.render(action.manifest, action_context, where=f"{where} manifest")
            if action.manifest
            else None
        )
        return StepSpec(
            job_id=job.id,
            step=name,
            workdir=workdir,
            env=env,
            timeout=step.timeout if step.timeout is not None else action.timeout,
            kill_grace=self._kill_grace,
            max_line_bytes=self._max_line_bytes,
            script=script,
            source=(root / action.source) if action.source else None,
            language=action.language,
            interpreter=action.interpreter,
            dependencies=tuple(action.dependencies),
            args=args,
            image=image,
            cmd=cmd,
            entrypoint=entrypoint,
            manifest=manifest,
            resources=action.resources,
            labels={"headwater.job": job.id, "headwater.step": name},
        )

    async def _run_child(
        self, job: JobRecord, name: str, action: Action, step_input: Any, stop: StopSignal
    ) -> Attempt:
        assert action.task is not None
        depth = await self._depth(job)
        if depth >= MAX_TASK_DEPTH:
            return Attempt(
                StepStatus.FAILED,
                error=f"sub-task nesting is deeper than {MAX_TASK_DEPTH} levels",
                retryable=False,
            )
        payload = step_input if isinstance(step_input, Mapping) else {"value": step_input}
        with self.control.subscribe(Channel.FINISHED) as finished:
            try:
                child_id = await self._submit_child(job, name, action.task, payload)
            except HeadwaterError as exc:
                return Attempt(StepStatus.FAILED, error=str(exc), retryable=False)
            await self.system(job.id, name, f"started sub-job {child_id} of task {action.task!r}")
            while True:
                child = await self.control.get_job(child_id)
                if child is None:
                    return Attempt(StepStatus.FAILED, error=f"sub-job {child_id} disappeared")
                if child.status.is_terminal:
                    break
                if stop.event.is_set():
                    with contextlib.suppress(HeadwaterError):
                        await self.control.request_cancel(child_id)
                stopper = asyncio.ensure_future(stop.event.wait())
                while True:  # every job's finish is announced: wait for the child's
                    waiter = asyncio.ensure_future(finished.wait(5.0))
                    await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if stopper.done() or not waiter.done() or waiter.cancelled():
                        break
                    payloads = waiter.result()  # [] after 5 s: look anyway
                    if not payloads or any(p == "*" or child_id in p.split(",") for p in payloads):
                        break
                stopper.cancel()
        if child.status.value == "completed":
            return Attempt(StepStatus.COMPLETED, output=child.output)
        if child.status.value == "cancelled":
            return Attempt(StepStatus.CANCELLED, error=f"sub-job {child_id} was cancelled")
        return Attempt(
            StepStatus.FAILED,
            output=child.output,
            error=f"sub-job {child_id} failed: {child.error}",
        )

    async def _depth(self, job: JobRecord) -> int:
        depth, parent = 0, job.parent_job_id
        while parent is not None and depth <= MAX_TASK_DEPTH:
            depth += 1
            record = await self.control.get_job(parent)
            parent = record.parent_job_id if record is not None else None
        return depth

    async def _run_function(
        self,
        job: JobRecord,
        name: str,
        action: Action,
        step: Step,
        step_input: Any,
        stop: StopSignal,
        root: Path,
    ) -> Attempt:
        assert action.function is not None
        kwargs = step_input if isinstance(step_input, Mapping) else {"value": step_input}
        timeout = step.timeout if step.timeout is not None else action.timeout

        async def sink(stream: LogStream, line: str) -> None:  # print() and logging
            await self.logs.write(LogLine(job.id, name, stream, line, _now()))

        token = CURRENT_FUNCTION.set(
            FunctionJob(
                job,
                name,
                action.function,
                asyncio.get_running_loop(),
                stop.event,
                self._workflow_store,
                self._start_job,
            )
        )
        try:
            outcome = await self._functions.call(
                action.function, dict(kwargs), timeout, stop.event, root, sink
            )
        finally:
            CURRENT_FUNCTION.reset(token)
        if outcome.suspended:
            what = f" ({outcome.error})" if outcome.error else ""
            await self.system(job.id, name, f"workflow waiting{what}: the worker lets it go")
            return Attempt(StepStatus.SUSPENDED, output={"workflow": "waiting"})
        for line in outcome.traceback:
            await self.logs.write(LogLine(job.id, name, LogStream.STDERR, line, _now()))
        if outcome.error is not None:
            status = StepStatus.CANCELLED if outcome.cancelled else StepStatus.FAILED
            return Attempt(status, error=outcome.error)
        return Attempt(StepStatus.COMPLETED, output=outcome.value)


def _unpack_state(snaps: Snapshots, env: Mapping[str, str]) -> None:
    for snapshot, variable in ((snaps.task, "STATE_DIR"), (snaps.global_, "GLOBAL_STATE_DIR")):
        folder = env.get(variable)
        if folder:
            unpack(snapshot, Path(folder))


class _LazyContext:
    """A template context made on first use, then kept."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], dict[str, Any]]) -> None:
        self._make = make
        self._value: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self._value is None:
            self._value = self._make()
        return self._value


def _has_template(value: Any) -> bool:
    """Whether rendering could change ``value`` (a string with a "{" somewhere in it)."""
    if isinstance(value, str):
        return "{" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False
