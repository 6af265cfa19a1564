"""Cached virtual environments for python steps with ``dependencies``.

One environment per (normalised requirements, python version, interpreter path),
under ``<cache>/venvs/<sha256>``, built once and reused by every step and every
worker process that shares the cache directory.

Building is serialised per key: an ``asyncio.Lock`` for steps of one worker, and an
``flock`` on ``<key>.lock`` for workers in other processes (polled with a
non-blocking flock, so a cancelled step never leaves a thread parked on the lock).

A venv cannot be moved — console scripts and ``activate`` hold its absolute path — so
it is built in its final real directory ``<key>.<random>`` and published by renaming
a symlink ``<key> → <key>.<random>`` into place: readers see either no environment or
a complete one, and a crash mid-build leaves only a directory the next builder
deletes.

Installers, fastest first: ``uv`` when it is on PATH; else ``python -m venv
--without-pip`` plus the worker's own ``pip --python`` (0.1 s instead of the 8 s that
bootstrapping pip into every venv costs); else a plain ``python -m venv`` and the new
venv's pip. Every tool runs as an async subprocess, so the event loop keeps running.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import structlog

from headwater.core.status import LogStream
from headwater.errors import HeadwaterError
from headwater.runners.base import LineSink
from headwater.runners.lines import LinePump
from headwater.runners.process import Reaper, resolve_reaper, spawn

__all__ = [
    "DependencyError",
    "Installer",
    "VenvCache",
    "default_cache_dir",
    "normalise_requirements",
]

_log = structlog.get_logger(__name__)

TAIL_LINES = 40  # installer output kept for the error message
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(.*)", re.DOTALL)
_VERSION_PROBE = "import sys; print(sys.implementation.name, *sys.version_info[:3])"


class DependencyError(HeadwaterError):
    """Installing a step's dependencies failed; ``output`` is the installer's last lines."""

    def __init__(self, message: str, output: Sequence[str] = ()) -> None:
        self.output = list(output)
        detail = "\n".join(self.output)
        super().__init__(f"{message}\n{detail}" if detail else message)


class Installer(StrEnum):
    AUTO = "auto"  # uv if on PATH, else pip
    UV = "uv"
    PIP = "pip"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$HEADWATER_CACHE_DIR``, else ``$XDG_CACHE_HOME/headwater``, else ``~/.cache/headwater``."""
    if env.get("HEADWATER_CACHE_DIR"):
        return Path(env["HEADWATER_CACHE_DIR"])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "headwater"
    return Path.home() / ".cache" / "headwater"


def normalise_requirements(requirements: Sequence[str]) -> list[str]:
    """Sorted, de-duplicated requirements with PEP 503 project names and no spaces
    outside markers and URLs, so that ``["Six >= 1", "six>=1"]`` share one environment."""
    out: set[str] = set()
    for requirement in requirements:
        text = " ".join(requirement.split())
        if not text:
            continue
        if text.startswith("-"):
            raise DependencyError(
                f"dependency {requirement!r} looks like an installer option; "
                "only requirement specifiers (e.g. 'requests>=2') are allowed"
            )
        match = _NAME.fullmatch(text)
        if match is None:
            raise DependencyError(f"dependency {requirement!r} is not a requirement specifier")
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        rest, semicolon, marker = match.group(2).partition(";")
        # "name @ url" keeps one space around the URL; extras and version specifiers
        # mean the same without spaces.
        rest = " " + " ".join(rest.split()) if "@" in rest else "".join(rest.split())
        marker = f"; {' '.join(marker.split())}" if semicolon else ""
        out.add(f"{name}{rest}{marker}")
    return sorted(out)


class VenvCache:
    """Builds and finds the environments; one per runner (no process-wide state)."""

    def __init__(
        self,
        root: Path,
        *,
        base_env: Mapping[str, str] | None = None,
        reaper: Reaper = Reaper.AUTO,
        installer: Installer = Installer.AUTO,
    ) -> None:
        self.root = root
        self._env = dict(os.environ if base_env is None else base_env)
        self._env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
        self._reaper = resolve_reaper(reaper)
        path = self._env.get("PATH")
        self._uv = shutil.which("uv", path=path) if installer is not Installer.PIP else None
        if installer is Installer.UV and self._uv is None:
            raise ValueError("installer 'uv' was requested but uv is not on PATH")
        self._own_pip = importlib.util.find_spec("pip") is not None
        self._locks: dict[str, asyncio.Lock] = {}
        self._versions: dict[str, str] = {}
        self.builds = 0  # environments this cache built (tests and metrics read it)

    def venv_dir(self, key: str) -> Path:
        return self.root / key

    async def key(self, interpreter: str, requirements: Sequence[str]) -> str:
        """sha256 of the normalised requirements, the python version and the interpreter."""
        version = await self._version(interpreter)
        blob = json.dumps(
            {
                "requirements": normalise_requirements(requirements),
                "python": version,
                "interpreter": interpreter,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    async def ensure(
        self, interpreter: str, requirements: Sequence[str], sink: LineSink | None = None
    ) -> Path:
        """The venv directory for these requirements, building it if needed.

        ``interpreter`` is an absolute path. Raises ``DependencyError`` when the
        installer fails, with its last lines of output."""
        key = await self.key(interpreter, requirements)
        venv = self.venv_dir(key)
        if _ready(venv):
            return venv
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if _ready(venv):
                return venv
            self.root.mkdir(parents=True, exist_ok=True)
            async with _file_lock(self.root / f"{key}.lock", key):
                if _ready(venv):
                    return venv
                await self._build(key, interpreter, normalise_requirements(requirements), sink)
        return venv

    async def _build(
        self, key: str, interpreter: str, requirements: list[str], sink: LineSink | None
    ) -> None:
        venv = self.venv_dir(key)
        await asyncio.to_thread(_remove_leftovers, self.root, key)
        real = self.root / f"{key}.{secrets.token_hex(4)}"
        python = str(real / "bin" / "python")
        version = await self._version(interpreter)
        same_python = version == self._version_of_self()
        if self._uv is not None:
            how = "uv"
            steps = [
                [self._uv, "venv", "--quiet", "--python", interpreter, str(real)],
                [self._uv, "pip", "install", "--python", python, *requirements],
            ]
        elif self._own_pip and same_python:
            how = "pip"
            steps = [
                [interpreter, "-m", "venv", "--without-pip", str(real)],
                [sys.executable, "-m", "pip", "--python", python, "install", *requirements],
            ]
        else:
            how = "venv+pip"
            steps = [
                [interpreter, "-m", "venv", str(real)],
                [python, "-m", "pip", "install", *requirements],
            ]
        started = time.monotonic()
        if sink is not None:
            await sink(
                LogStream.SYSTEM,
                f"installing python dependencies ({how}): {' '.join(requirements)}",
                False,
            )
        _log.info("venv_build_started", key=key, installer=how, requirements=requirements)
        try:
            for argv in steps:
                await self._run_tool(argv, requirements)
            link = self.root / f"{key}.link-{secrets.token_hex(4)}"
            os.symlink(real.name, link)
            if venv.is_dir() and not venv.is_symlink():
                await asyncio.to_thread(shutil.rmtree, venv)  # left by something else
            os.replace(link, venv)
        except BaseException as exc:
            _log.warning("venv_build_failed", key=key, installer=how, error=type(exc).__name__)
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, real, True))
            raise
        self.builds += 1
        elapsed = time.monotonic() - started
        _log.info("venv_build_finished", key=key, installer=how, seconds=round(elapsed, 3))
        if sink is not None:
            await sink(LogStream.SYSTEM, f"python dependencies installed in {elapsed:.1f}s", False)

    async def _run_tool(self, argv: list[str], requirements: list[str]) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

        async def keep(stream: LogStream, line: str, truncated: bool) -> None:
            if line.strip():
                tail.append(line)

        try:
            child = await spawn(
                argv, cwd=self.root, env=self._env, reaper=self._reaper, merge_stderr=True
            )
        except OSError as exc:
            raise DependencyError(
                f"could not install python dependencies {requirements}: "
                f"cannot start {argv[0]}: {exc.strerror}"
            ) from exc
        try:
            assert child.stdout is not None
            await LinePump(child.stdout, LogStream.STDERR, keep, 65_536).run()
            await child.exited
            code = child.reap()
        finally:
            child.close()  # on cancellation this kills the installer's whole group
        if code != 0:
            tool = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:3]))
            status = f"exit code {code}" if code > 0 else f"signal {-code}"
            raise DependencyError(
                f"could not install python dependencies {requirements}: "
                f"`{tool}` failed with {status}; its last output:",
                list(tail),
            )

    def _version_of_self(self) -> str:
        impl, (major, minor, micro) = sys.implementation.name, sys.version_info[:3]
        return f"{impl} {major} {minor} {micro}"

    async def _version(self, interpreter: str) -> str:
        """The interpreter's implementation and version, asked once per interpreter."""
        if interpreter == sys.executable:
            return self._version_of_self()
        cached = self._versions.get(interpreter)
        if cached is not None:
            return cached
        lines: list[str] = []

        async def keep(stream: LogStream, line: str, truncated: bool) -> None:
            lines.append(line)

        try:
            child = await spawn(
                [interpreter, "-c", _VERSION_PROBE],
                cwd=self.root.parent if self.root.parent.is_dir() else "/",
                env=self._env,
                reaper=self._reaper,
                merge_stderr=True,
            )
        except OSError as exc:
            raise DependencyError(
                f"cannot run python interpreter {interpreter}: {exc.strerror}"
            ) from exc
        try:
            assert child.stdout is not None
            await LinePump(child.stdout, LogStream.STDOUT, keep, 4096).run()
            await child.exited
            code = child.reap()
        finally:
            child.close()
        if code != 0 or not lines:
            raise DependencyError(f"{interpreter} does not look like a python interpreter:", lines)
        self._versions[interpreter] = lines[-1].strip()
        return self._versions[interpreter]


def _ready(venv: Path) -> bool:
    return (venv / "bin" / "python").exists()


def _remove_leftovers(root: Path, key: str) -> None:
    """Directories and links of builds that died; called with the key's flock held."""
    for path in root.glob(f"{key}.*"):
        if path.name == f"{key}.lock":
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def _file_lock(path: Path, key: str) -> AsyncIterator[None]:
    """An exclusive flock, polled so the loop never blocks; closing the fd releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        delay = 0.02
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not logged:
                    _log.info(
                        "venv_build_waiting", key=key, reason="another process is building it"
                    )
                    logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        yield
    finally:
        os.close(fd)
