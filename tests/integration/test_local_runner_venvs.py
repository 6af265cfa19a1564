"""Python steps with ``dependencies``: one cached venv per requirement set, real installs.

These install ``six`` (a tiny pure-python package) from the configured index, so they
take a second or two each; they are marked slow.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from headwater.runners.base import StepOutcome, StepResult, StepSpec
from headwater.runners.local import LocalRunner
from headwater.runners.venvs import Installer, VenvCache
from headwater.store.base import LogStream
from headwater.workspace.models import Language
from tests.polling import eventually

pytestmark = pytest.mark.slow

SIX_VERSION = "import six, sys; print('six', six.__version__ != '', sys.prefix != sys.base_prefix)"


@dataclass
class Sink:
    lines: list[tuple[LogStream, str]] = field(default_factory=list)

    async def __call__(self, stream: LogStream, line: str, truncated: bool) -> None:
        self.lines.append((stream, line))

    def of(self, stream: LogStream) -> list[str]:
        return [line for s, line in self.lines if s is stream]


def python_step(tmp_path: Path, script: str, deps: tuple[str, ...], **kw: object) -> StepSpec:
    return StepSpec(
        job_id="job-1",
        step="deps",
        workdir=tmp_path,
        env={},
        script=script,
        language=Language.PYTHON,
        dependencies=deps,
        **kw,  # type: ignore[arg-type]
    )


async def run(runner: LocalRunner, step: StepSpec) -> tuple[StepResult, Sink]:
    sink = Sink()
    result = await asyncio.wait_for(runner.run(step, sink, asyncio.Event()), timeout=120)
    return result, sink


def cache_entries(root: Path) -> list[str]:
    return sorted(p.name.split(".", 1)[1] if "." in p.name else "<venv>" for p in root.iterdir())


async def test_venv_is_built_once_and_reused(tmp_path: Path) -> None:
    runner = LocalRunner(cache_dir=tmp_path / "cache", installer=Installer.PIP)
    step = python_step(tmp_path, SIX_VERSION, ("six",))

    result, sink = await run(runner, step)
    assert result.outcome is StepOutcome.SUCCEEDED, sink.lines
    assert sink.of(LogStream.STDOUT) == ["six True True"]
    assert any("installing python dependencies" in line for line in sink.of(LogStream.SYSTEM))
    assert runner.venvs.builds == 1

    # (How fast a cached step starts is measured in bench/runner_timing.py.)
    result, sink = await run(runner, python_step(tmp_path, SIX_VERSION, ("Six ",)))
    assert result.outcome is StepOutcome.SUCCEEDED
    assert sink.of(LogStream.SYSTEM) == []  # nothing installed the second time
    assert runner.venvs.builds == 1

    # Another runner (another worker) sharing the cache directory reuses it too.
    other = LocalRunner(cache_dir=tmp_path / "cache", installer=Installer.PIP)
    result, _ = await run(other, step)
    assert result.outcome is StepOutcome.SUCCEEDED
    assert other.venvs.builds == 0
    # One published venv (a symlink), its real directory and the lock file; no debris.
    venvs = tmp_path / "cache" / "venvs"
    link = next(p for p in venvs.iterdir() if p.is_symlink())
    real = venvs / os.readlink(link)
    assert sorted(p.name for p in venvs.iterdir()) == sorted(
        [link.name, f"{link.name}.lock", real.name]
    )
    assert (real / "bin" / "python").exists()


async def test_venv_console_scripts_are_on_path(tmp_path: Path) -> None:
    runner = LocalRunner(cache_dir=tmp_path / "cache", installer=Installer.PIP)
    script = "import os, shutil; print(os.environ['VIRTUAL_ENV'] in shutil.which('python'))"
    result, sink = await run(runner, python_step(tmp_path, script, ("six",)))
    assert result.outcome is StepOutcome.SUCCEEDED, sink.lines
    assert sink.of(LogStream.STDOUT) == ["True"]


async def test_concurrent_steps_share_one_build(tmp_path: Path) -> None:
    runner = LocalRunner(cache_dir=tmp_path / "cache", installer=Installer.PIP)
    step = python_step(tmp_path, SIX_VERSION, ("six",))
    results = await asyncio.gather(*(run(runner, step) for _ in range(4)))
    assert [r.outcome for r, _ in results] == [StepOutcome.SUCCEEDED] * 4
    assert runner.venvs.builds == 1


async def test_concurrent_processes_share_one_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    program = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from headwater.runners.venvs import Installer, VenvCache
        async def main():
            cache = VenvCache(Path({str(cache)!r}), installer=Installer.PIP)
            await cache.ensure(sys.executable, ["six"])
            print(cache.builds)
        asyncio.run(main())
        """
    )
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", program, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(int(out.split()[-1]) for out, _ in outs) == [0, 1]  # structlog may print first


async def test_failed_install_fails_the_step_with_the_installer_output(tmp_path: Path) -> None:
    runner = LocalRunner(cache_dir=tmp_path / "cache", installer=Installer.PIP)
    result, sink = await run(
        runner, python_step(tmp_path, "print('never')", ("headwater-no-such-package-xyz",))
    )
    assert result.outcome is StepOutcome.FAILED
    assert result.exit_code is None
    assert result.error is not None
    # The installer is the worker's pip or the new venv's, named python or python3.
    assert re.match(
        r"could not install python dependencies \['headwater-no-such-package-xyz'\]: "
        r"`python3? -m pip` failed with exit code 1; its last output:",
        result.error,
    ), result.error
    assert "No matching distribution found for headwater-no-such-package-xyz" in result.error
    stderr = sink.of(LogStream.STDERR)
    assert stderr and stderr[-1] in result.error
    assert "never" not in sink.of(LogStream.STDOUT)
    assert cache_entries(tmp_path / "cache" / "venvs") == ["lock"]  # the half-built venv is gone


async def test_timeout_while_installing(tmp_path: Path) -> None:
    runner = LocalRunner(cache_dir=tmp_path / "cache", installer=Installer.PIP)
    result, _ = await run(runner, python_step(tmp_path, "pass", ("six",), timeout=0.3))
    assert result == StepResult(
        StepOutcome.TIMED_OUT, None, "timed out after 0.3s while installing dependencies"
    )
    await eventually(  # the cleanup of the killed build runs in a thread
        lambda: cache_entries(tmp_path / "cache" / "venvs") == ["lock"], what="the cleanup"
    )


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
async def test_uv_builds_the_venv_when_available(tmp_path: Path) -> None:
    cache = VenvCache(tmp_path / "cache", installer=Installer.UV)
    venv = await cache.ensure(sys.executable, ["six"])
    out = subprocess.run(
        [venv / "bin" / "python", "-c", "import six"], capture_output=True, check=False
    )
    assert out.returncode == 0
