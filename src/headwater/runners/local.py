"""The local runner: script steps as processes on the worker's machine.

Per step: resolve the command (interpreters are resolved once per runner, never per
spawn), start it in a new session with stdin from /dev/null, read stdout and stderr
concurrently through bounded ``LinePump``s, and wait for the first of: the leader's
exit, ``spec.timeout``, ``cancel``, or a sink error.

Stopping (timeout, cancel) signals the whole process group: SIGTERM, then up to
``kill_grace`` for the leader to exit and the pipes to close, then SIGKILL. After any
exit, the rest of the group is killed too — a step's background processes do not
outlive it — and output is drained: the pumps get ``eof_grace`` to reach EOF; a pump
still blocked on a pipe that no longer receives data (held open by a process that
escaped the group with its own ``setsid``) is cut off, while a pump that is merely
waiting for a slow sink is left to finish, so backpressure never loses lines.

Empty lines are passed to the sink like any other (the seed's protocol ignores them;
that is the engine's decision). Nothing here raises for a step's own failure: a
missing interpreter, script file or workdir, or a failed dependency install, is a
``FAILED`` result with the reason. ``RunnerError`` means the spec itself is not a
local script step (a programming error upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from headwater.core.status import LogStream
from headwater.errors import RunnerError
from headwater.runners.base import LineSink, StepOutcome, StepResult, StepSpec
from headwater.runners.lines import LinePump
from headwater.runners.process import ChildProcess, Reaper, resolve_reaper, spawn
from headwater.runners.venvs import DependencyError, Installer, VenvCache, default_cache_dir
from headwater.workspace.models import Language

__all__ = ["MAX_INLINE_SCRIPT_BYTES", "LocalRunner"]

_log = structlog.get_logger(__name__)

# Linux caps one argv string at 128 KiB (MAX_ARG_STRLEN); beyond this a script goes
# through a temporary file instead of ``-c``.
MAX_INLINE_SCRIPT_BYTES: Final = 100_000
_KILL_WAIT: Final = 30.0  # after SIGKILL; only an unkillable (D-state) leader takes longer
_EXIT, _TIMEOUT, _CANCEL = "exit", "timeout", "cancel"


class _StartError(Exception):
    """The step could not be started; the message is for people."""


class LocalRunner:
    """Runs ``type: script`` steps with ``runner: local``. Implements ``Runner``.

    ``base_env`` (default: a snapshot of ``os.environ`` taken here) is the environment
    every step starts from. ``eof_grace`` bounds how long output is awaited after the
    leader exited. ``reaper`` picks how exits are noticed (see ``process.Reaper``).
    """

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        base_env: Mapping[str, str] | None = None,
        reaper: Reaper = Reaper.AUTO,
        eof_grace: float = 0.5,
        installer: Installer = Installer.AUTO,
    ) -> None:
        self._env: dict[str, str] = dict(os.environ if base_env is None else base_env)
        self._path = self._env.get("PATH", os.defpath)
        self._reaper = resolve_reaper(reaper)
        self._eof_grace = eof_grace
        sh = shutil.which("sh", path=self._path) or "/bin/sh"
        self._sh = (sh,)
        self._bash = (shutil.which("bash", path=self._path) or sh,)
        self._python = (sys.executable,)
        self._interpreters: dict[str, tuple[str, ...]] = {}
        root = cache_dir if cache_dir is not None else default_cache_dir(self._env)
        self.venvs = VenvCache(
            root / "venvs", base_env=self._env, reaper=self._reaper, installer=installer
        )

    @property
    def reaper(self) -> Reaper:
        return self._reaper

    async def run(self, spec: StepSpec, sink: LineSink, cancel: asyncio.Event) -> StepResult:
        """Run the step; see the module docstring for the stopping and draining rules.

        Output is always drained to the end, also after a timeout or cancel (an event
        source's last lines are events): a sink that never returns keeps ``run`` from
        returning, although the process is killed on time. An exception from the sink
        kills the process group and propagates, as does cancelling ``run`` itself."""
        _check_spec(spec)
        loop = asyncio.get_running_loop()
        deadline = None if spec.timeout is None else loop.time() + spec.timeout
        if cancel.is_set():
            return StepResult(StepOutcome.CANCELLED, None, "cancelled before it started")
        temp_script: str | None = None
        try:
            try:
                prefix, venv = await self._interpreter(spec, sink, cancel, deadline)
                argv, temp_script = _script_args(spec, prefix)
            except _StartError as exc:
                return StepResult(StepOutcome.FAILED, None, str(exc))
            except _Stopped as stopped:
                return stopped.result
            env = self._step_env(spec, venv)
            try:
                child = await spawn(
                    argv,
                    cwd=spec.workdir,
                    env=env,
                    reaper=self._reaper,
                    die_with_parent=spec.die_with_parent,
                )
            except (OSError, ValueError) as exc:
                return StepResult(StepOutcome.FAILED, None, _start_error(exc, argv[0], spec))
            return await self._supervise(child, spec, sink, cancel, deadline)
        finally:
            if temp_script is not None:
                _remove_script(temp_script)

    # -- command -----------------------------------------------------------------------

    async def _interpreter(
        self, spec: StepSpec, sink: LineSink, cancel: asyncio.Event, deadline: float | None
    ) -> tuple[tuple[str, ...], Path | None]:
        """The argv prefix that runs the script, and the venv when there is one."""
        if spec.interpreter:
            prefix = self._resolve(spec.interpreter)
        elif spec.language is Language.PYTHON:
            prefix = self._python
        elif spec.language is Language.SH:
            prefix = self._sh
        else:
            prefix = self._bash
        if not spec.dependencies:
            return prefix, None
        if spec.language is not Language.PYTHON:
            raise _StartError(
                f"dependencies are only supported for language python, not {spec.language.value}"
            )
        venv = await self._ensure_venv(prefix[0], spec, sink, cancel, deadline)
        return (str(venv / "bin" / "python"), *prefix[1:]), venv

    def _resolve(self, interpreter: str) -> tuple[str, ...]:
        cached = self._interpreters.get(interpreter)
        if cached is not None:
            return cached
        try:
            words = shlex.split(interpreter)
        except ValueError as exc:
            raise _StartError(f"interpreter {interpreter!r} cannot be parsed: {exc}") from None
        if not words:
            raise _StartError("interpreter is empty")
        exe = words[0]
        found = shutil.which(exe, path=self._path)
        if found is None:
            where = "does not exist or is not executable" if os.sep in exe else "not found on PATH"
            raise _StartError(f"interpreter {exe!r} {where}")
        # Only successes are cached, so installing a missing interpreter later works.
        resolved = (os.path.abspath(found), *words[1:])
        self._interpreters[interpreter] = resolved
        return resolved

    async def _ensure_venv(
        self,
        python: str,
        spec: StepSpec,
        sink: LineSink,
        cancel: asyncio.Event,
        deadline: float | None,
    ) -> Path:
        build = asyncio.ensure_future(self.venvs.ensure(python, spec.dependencies, sink))
        try:
            reason = await _first_of(build, cancel, deadline)
        except BaseException:
            build.cancel()
            raise
        if reason is not _EXIT:
            build.cancel()
            with contextlib.suppress(asyncio.CancelledError, DependencyError):
                await build
            raise _Stopped(_stopped_result(reason, spec, None, " while installing dependencies"))
        try:
            return build.result()
        except DependencyError as exc:
            for line in exc.output:
                await sink(LogStream.STDERR, line, False)
            raise _StartError(str(exc)) from None

    def _step_env(self, spec: StepSpec, venv: Path | None) -> dict[str, str]:
        env = self._env.copy()
        if spec.language is Language.PYTHON:
            env["PYTHONUNBUFFERED"] = "1"  # print() lines reach us as they happen
            if spec.script is not None:
                # An inline script runs from a temporary file, yet imports modules of its
                # working directory as `python -c` did.
                here = os.path.abspath(spec.workdir)
                above = env.get("PYTHONPATH")
                env["PYTHONPATH"] = f"{here}{os.pathsep}{above}" if above else here
        env.update(spec.env)
        if venv is not None:
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        env["HEADWATER_JOB_ID"] = spec.job_id
        env["HEADWATER_STEP"] = spec.step
        return env

    # -- supervision -------------------------------------------------------------------

    async def _supervise(
        self,
        child: ChildProcess,
        spec: StepSpec,
        sink: LineSink,
        cancel: asyncio.Event,
        deadline: float | None,
    ) -> StepResult:
        assert child.stdout is not None and child.stderr is not None
        pumps = [
            LinePump(child.stdout, LogStream.STDOUT, sink, spec.max_line_bytes),
            LinePump(child.stderr, LogStream.STDERR, sink, spec.max_line_bytes),
        ]
        tasks = [asyncio.ensure_future(p.run()) for p in pumps]
        try:
            reason = await _first_of(child.exited, cancel, deadline, tasks)
            if reason is not _EXIT:
                await _stop_group(child, spec.kill_grace, tasks)
            await self._drain(child, pumps, tasks)
            code = child.reap() if child.exited.done() else None
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        finally:
            child.close()
        for task in tasks:
            task.result()  # a sink error is the caller's problem: re-raise it
        if reason is not _EXIT:
            return _stopped_result(reason, spec, code)
        assert code is not None
        if code == 0:
            return StepResult(StepOutcome.SUCCEEDED, 0)
        if code > 0:
            return StepResult(StepOutcome.FAILED, code, f"exit code {code}")
        return StepResult(StepOutcome.FAILED, None, f"killed by signal {_signal_name(-code)}")

    async def _drain(
        self, child: ChildProcess, pumps: list[LinePump], tasks: Sequence[asyncio.Future[None]]
    ) -> None:
        """After the leader exited: let the output finish, kill what is left of the group."""
        pending = {t for t in tasks if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self._eof_grace)
        # The leader is an unreaped zombie, so the group id is still ours to signal.
        child.signal_group(signal.SIGKILL)
        if any(p.waiting_for_data for p, t in zip(pumps, tasks, strict=True) if t in pending):
            _log.warning("step_orphans_killed", pid=child.pid, reason="they held the output pipes")
        while pending:
            # Stalled: waiting on the pipe for a whole interval without a byte. (Waiting
            # only at the end is not enough: a pump back from its sink may not have had
            # the loop iteration in which the resumed transport reads what is queued.)
            before = [(p.waiting_for_data, p.bytes_read) for p in pumps]
            _, pending = await asyncio.wait(pending, timeout=self._eof_grace)
            for pump, task, (was_waiting, read) in zip(pumps, tasks, before, strict=True):
                if (
                    task in pending
                    and was_waiting
                    and pump.waiting_for_data
                    and pump.bytes_read == read
                ):
                    # Nobody in the group is left to write; whoever holds the pipe escaped it.
                    child.stop_reading(pump.reader)


class _Stopped(Exception):
    def __init__(self, result: StepResult) -> None:
        self.result = result


async def _first_of(
    exited: asyncio.Future[Any],
    cancel: asyncio.Event,
    deadline: float | None,
    others: Sequence[asyncio.Future[None]] = (),
) -> str:
    """Wait for ``exited``, ``cancel`` or ``deadline``; a failed ``others`` raises."""
    loop = asyncio.get_running_loop()
    cancelled: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
    pending: set[asyncio.Future[Any]] = {exited, cancelled, *others}
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if exited in done:
                return _EXIT
            if cancelled in done:
                return _CANCEL
            if not done:
                return _TIMEOUT
            for fut in done:  # an output pump finished: fine unless its sink raised
                exc = fut.exception()
                if exc is not None:
                    raise exc
    finally:
        cancelled.cancel()


async def _stop_group(
    child: ChildProcess, grace: float, tasks: Sequence[asyncio.Future[None]]
) -> None:
    """SIGTERM the group; SIGKILL it once the grace is over or everyone is gone."""
    child.signal_group(signal.SIGTERM)
    if grace > 0:
        # Pipes at EOF mean every process that shared them has exited.
        waiting = {child.exited, *(t for t in tasks if not t.done())}
        await asyncio.wait(waiting, timeout=grace)
    child.signal_group(signal.SIGKILL)
    if not child.exited.done():
        await asyncio.wait({child.exited}, timeout=_KILL_WAIT)
        if not child.exited.done():
            # Left to ChildProcess.close, which reaps it whenever it finally exits.
            _log.error("step_unkillable", pid=child.pid, seconds=_KILL_WAIT)


def _stopped_result(reason: str, spec: StepSpec, code: int | None, during: str = "") -> StepResult:
    exit_code = code if code is not None and code >= 0 else None
    if reason is _TIMEOUT:
        assert spec.timeout is not None
        return StepResult(
            StepOutcome.TIMED_OUT, exit_code, f"timed out after {_seconds(spec.timeout)}s{during}"
        )
    return StepResult(StepOutcome.CANCELLED, exit_code, f"cancelled{during}")


def _check_spec(spec: StepSpec) -> None:
    if spec.image is not None:
        raise RunnerError(f"step {spec.step!r} has an image; the local runner runs scripts only")
    if (spec.script is None) == (spec.source is None):
        raise RunnerError(f"step {spec.step!r} needs exactly one of script and source")


def _script_args(spec: StepSpec, prefix: tuple[str, ...]) -> tuple[list[str], str | None]:
    """The full argv, and a temporary script file to delete afterwards."""
    if spec.source is not None:
        # Absolute, because the child runs in workdir and a relative workdir would
        # otherwise be applied twice.
        source = os.path.abspath(spec.workdir / spec.source)
        if not os.path.isfile(source):
            raise _StartError(f"script file {source} does not exist")
        return [*prefix, source, *spec.args], None
    assert spec.script is not None
    script = spec.script
    # Python runs from a file (as in Strøm): a traceback then names a plain path and shows
    # the failing source lines, instead of `File "<string>"`, whose `<`/`>` break a shell
    # hook that echoes the step's error.
    if spec.language is not Language.PYTHON and (
        len(script) * 4 <= MAX_INLINE_SCRIPT_BYTES
        or len(script.encode("utf-8", "surrogateescape")) <= MAX_INLINE_SCRIPT_BYTES
    ):
        # `sh -c SCRIPT NAME ARGS...`: NAME becomes $0, so the args are $1, $2, ...
        zeroth = [spec.step] if spec.args else []
        return [*prefix, "-c", script, *zeroth, *spec.args], None
    if spec.language is Language.PYTHON:
        # A directory of its own: Python puts the script's directory first on sys.path,
        # where a stray /tmp/json.py would shadow the standard library.
        folder = tempfile.mkdtemp(prefix="headwater-py-")
        path = os.path.join(folder, f"{_file_stem(spec.step)}.py")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    else:
        fd, path = tempfile.mkstemp(prefix="headwater-script-", suffix=".sh")
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(script)
    return [*prefix, path, *spec.args], path


def _file_stem(step: str) -> str:
    """The step's name as a file name a shell echo survives (no quotes, `<`, spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", step)[:60] or "script"


def _remove_script(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    folder = os.path.dirname(path)
    if os.path.basename(folder).startswith("headwater-py-"):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _start_error(exc: OSError | ValueError, exe: str, spec: StepSpec) -> str:
    if isinstance(exc, ValueError):
        return f"cannot start step: {exc}"  # e.g. a NUL byte in the script or env
    what = exc.strerror or str(exc)
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(spec.workdir):
        return f"cannot start step: working directory {spec.workdir}: {what}"
    return f"cannot start step: {exe}: {what}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
