"""LocalRunner with real processes: languages, exits, env, output, timeouts, backpressure."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from headwater.errors import RunnerError
from headwater.runners.base import LineSink, StepOutcome, StepResult, StepSpec
from headwater.runners.local import LocalRunner
from headwater.runners.process import Reaper, pidfd_available
from headwater.store.base import LogStream
from headwater.workspace.models import Language

REAPERS = [Reaper.THREAD, *([Reaper.PIDFD] if pidfd_available() else [])]


@pytest.fixture(params=REAPERS, ids=lambda r: str(r))
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> LocalRunner:
    return LocalRunner(cache_dir=tmp_path / "cache", reaper=request.param, eof_grace=0.3)


@dataclass
class Sink:
    lines: list[tuple[LogStream, str, bool]] = field(default_factory=list)

    async def __call__(self, stream: LogStream, line: str, truncated: bool) -> None:
        self.lines.append((stream, line, truncated))

    def of(self, stream: LogStream) -> list[str]:
        return [line for s, line, _ in self.lines if s is stream]


def spec(tmp_path: Path, script: str | None = None, **kw: Any) -> StepSpec:
    kw.setdefault("workdir", tmp_path)
    kw.setdefault("env", {})
    return StepSpec(job_id="job-1", step="step-a", script=script, **kw)


async def run(
    runner: LocalRunner,
    step: StepSpec,
    sink: LineSink | None = None,
    cancel: asyncio.Event | None = None,
) -> tuple[StepResult, Sink]:
    collected = Sink()
    result = await asyncio.wait_for(
        runner.run(step, sink or collected, cancel or asyncio.Event()), timeout=60
    )
    return result, collected


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (nobody reaps orphans in some containers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_dead(pid: int, within: float = 3.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


# -- languages and exits ---------------------------------------------------------------


async def test_shell_success_and_output_order(runner: LocalRunner, tmp_path: Path) -> None:
    result, sink = await run(runner, spec(tmp_path, "for i in 1 2 3; do echo line $i; done"))
    assert result == StepResult(StepOutcome.SUCCEEDED, 0)
    assert sink.of(LogStream.STDOUT) == ["line 1", "line 2", "line 3"]


async def test_shell_exit_code(runner: LocalRunner, tmp_path: Path) -> None:
    result, sink = await run(runner, spec(tmp_path, "echo before; exit 3"))
    assert result == StepResult(StepOutcome.FAILED, 3, "exit code 3")
    assert sink.of(LogStream.STDOUT) == ["before"]


async def test_killed_by_signal(runner: LocalRunner, tmp_path: Path) -> None:
    result, _ = await run(runner, spec(tmp_path, "kill -SEGV $$"))
    assert result == StepResult(StepOutcome.FAILED, None, "killed by signal SIGSEGV")


async def test_shell_is_bash_and_sh_is_sh(runner: LocalRunner, tmp_path: Path) -> None:
    _, bash = await run(runner, spec(tmp_path, 'echo "bash=${BASH_VERSION:+yes}"'))
    _, sh = await run(
        runner, spec(tmp_path, 'echo "bash=${BASH_VERSION:+yes}"', language=Language.SH)
    )
    assert bash.of(LogStream.STDOUT) == ["bash=yes"]
    if os.path.realpath("/bin/sh").endswith("bash"):
        pytest.skip("sh is bash on this machine")
    assert sh.of(LogStream.STDOUT) == ["bash="]


async def test_python_success_failure_and_signal(runner: LocalRunner, tmp_path: Path) -> None:
    ok, sink = await run(
        runner,
        spec(tmp_path, "import sys; print('py', sys.version_info[0])", language=Language.PYTHON),
    )
    assert ok.outcome is StepOutcome.SUCCEEDED
    assert sink.of(LogStream.STDOUT) == ["py 3"]

    failed, sink = await run(
        runner, spec(tmp_path, "raise SystemExit(7)", language=Language.PYTHON)
    )
    assert failed == StepResult(StepOutcome.FAILED, 7, "exit code 7")

    crashed, sink = await run(
        runner, spec(tmp_path, "raise ValueError('boom')", language=Language.PYTHON)
    )
    assert crashed == StepResult(StepOutcome.FAILED, 1, "exit code 1")
    assert sink.of(LogStream.STDERR)[-1] == "ValueError: boom"

    killed, _ = await run(
        runner,
        spec(
            tmp_path,
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            language=Language.PYTHON,
        ),
    )
    assert killed == StepResult(StepOutcome.FAILED, None, "killed by signal SIGKILL")


async def test_python_interpreter_override(runner: LocalRunner, tmp_path: Path) -> None:
    step = spec(
        tmp_path,
        "import sys; print(sys.flags.isolated)",
        language=Language.PYTHON,
        interpreter=f"{sys.executable} -I",
    )
    result, sink = await run(runner, step)
    assert result.outcome is StepOutcome.SUCCEEDED
    assert sink.of(LogStream.STDOUT) == ["1"]


async def test_source_scripts(runner: LocalRunner, tmp_path: Path) -> None:
    (tmp_path / "hello.sh").write_text('echo "shell from $(basename "$0")"\n')
    (tmp_path / "hello.py").write_text(
        "import sys\nprint('python from', sys.argv[0].rsplit('/', 1)[-1])\n"
    )
    result, sink = await run(runner, spec(tmp_path, source=tmp_path / "hello.sh"))
    assert result.outcome is StepOutcome.SUCCEEDED
    assert sink.of(LogStream.STDOUT) == ["shell from hello.sh"]
    result, sink = await run(
        runner, spec(tmp_path, source=Path("hello.py"), language=Language.PYTHON)
    )
    assert result.outcome is StepOutcome.SUCCEEDED
    assert sink.of(LogStream.STDOUT) == ["python from hello.py"]


async def test_relative_workdir_and_source(
    runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "job.sh").write_text("pwd -P\n")
    monkeypatch.chdir(tmp_path)
    result, sink = await run(runner, spec(tmp_path, source=Path("job.sh"), workdir=Path("ws")))
    assert result.outcome is StepOutcome.SUCCEEDED, sink.lines
    assert sink.of(LogStream.STDOUT) == [str((tmp_path / "ws").resolve())]


async def test_inline_script_too_big_for_argv_goes_through_a_temp_file(
    runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    script = "x = 1\n" * 40_000 + "print('big', len(open(__file__).read()))\n"
    result, sink = await run(runner, spec(tmp_path, script, language=Language.PYTHON))
    assert result.outcome is StepOutcome.SUCCEEDED, sink.lines
    assert sink.of(LogStream.STDOUT) == [f"big {len(script)}"]
    assert list((tmp_path / "tmp").iterdir()) == []  # removed afterwards


async def test_inline_python_traceback_names_a_file_and_imports_from_workdir(
    runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step's error (its last stderr lines) reaches shell hooks that echo it in double
    # quotes, as Strøm's hooks-test does: `File "<string>"` would break that quoting.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "helper_mod.py").write_text("VALUE = 'from workdir'\n")
    (tmp_path / "tmp" / "json.py").write_text("raise SystemExit('stray module shadowed json')\n")
    script = "import json, helper_mod\nprint(helper_mod.VALUE)\n{}['missing_key']\n"
    result, sink = await run(runner, spec(tmp_path, script, language=Language.PYTHON))
    assert result.outcome is StepOutcome.FAILED
    assert sink.of(LogStream.STDOUT) == ["from workdir"]
    stderr = "\n".join(sink.of(LogStream.STDERR))
    assert "<string>" not in stderr and "<" not in stderr.split("line 3")[0]
    assert "{}['missing_key']" in stderr  # the failing source line is shown
    assert stderr.endswith("KeyError: 'missing_key'")
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == ["json.py"]  # ours removed


# -- failures to start -----------------------------------------------------------------


async def test_missing_interpreter(runner: LocalRunner, tmp_path: Path) -> None:
    result, _ = await run(runner, spec(tmp_path, "pass", interpreter="python-does-not-exist"))
    assert result == StepResult(
        StepOutcome.FAILED, None, "interpreter 'python-does-not-exist' not found on PATH"
    )
    result, _ = await run(runner, spec(tmp_path, "pass", interpreter="/nope/python"))
    assert result.error == "interpreter '/nope/python' does not exist or is not executable"


async def test_missing_source_and_bad_workdir(runner: LocalRunner, tmp_path: Path) -> None:
    result, _ = await run(runner, spec(tmp_path, source=tmp_path / "missing.sh"))
    assert result == StepResult(
        StepOutcome.FAILED, None, f"script file {tmp_path}/missing.sh does not exist"
    )
    result, _ = await run(runner, spec(tmp_path, "true", workdir=tmp_path / "nowhere"))
    assert result.outcome is StepOutcome.FAILED
    assert result.error == (
        f"cannot start step: working directory {tmp_path}/nowhere: No such file or directory"
    )


async def test_dependencies_on_a_shell_step_fail_clearly(
    runner: LocalRunner, tmp_path: Path
) -> None:
    result, _ = await run(runner, spec(tmp_path, "true", dependencies=("six",)))
    assert result == StepResult(
        StepOutcome.FAILED, None, "dependencies are only supported for language python, not shell"
    )


async def test_specs_that_are_not_local_scripts_are_programming_errors(
    runner: LocalRunner, tmp_path: Path
) -> None:
    with pytest.raises(RunnerError, match="exactly one of script and source"):
        await run(runner, spec(tmp_path))
    with pytest.raises(RunnerError, match="image"):
        await run(runner, spec(tmp_path, "true", image="alpine"))


# -- environment -----------------------------------------------------------------------


async def test_env_cwd_and_stdin(tmp_path: Path) -> None:
    worker_env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    runner = LocalRunner(base_env={**worker_env, "FROM_WORKER": "w", "HEADWATER_STEP": "spoofed"})
    script = (
        'echo "$FROM_WORKER $MINE $HEADWATER_JOB_ID $HEADWATER_STEP"; pwd -P; cat; '
        'echo "u=$PYTHONUNBUFFERED"'
    )
    result, sink = await run(
        runner, spec(tmp_path, script, env={"MINE": "m", "HEADWATER_JOB_ID": "x"})
    )
    assert result.outcome is StepOutcome.SUCCEEDED
    assert sink.of(LogStream.STDOUT) == ["w m job-1 step-a", str(tmp_path.resolve()), "u="]


async def test_python_is_unbuffered_unless_the_step_says_otherwise(tmp_path: Path) -> None:
    runner = LocalRunner(base_env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    code = "import os; print(os.environ.get('PYTHONUNBUFFERED'))"
    _, sink = await run(runner, spec(tmp_path, code, language=Language.PYTHON))
    assert sink.of(LogStream.STDOUT) == ["1"]
    _, sink = await run(
        runner, spec(tmp_path, code, language=Language.PYTHON, env={"PYTHONUNBUFFERED": ""})
    )
    assert sink.of(LogStream.STDOUT) == [""]  # an empty value is "off" for Python


async def test_runs_in_its_own_session(runner: LocalRunner, tmp_path: Path) -> None:
    _, sink = await run(
        runner,
        spec(
            tmp_path,
            "import os; print(os.getsid(0) == os.getpid() == os.getpgid(0))",
            language=Language.PYTHON,
        ),
    )
    assert sink.of(LogStream.STDOUT) == ["True"]


# -- output ----------------------------------------------------------------------------


async def test_stdout_and_stderr_are_both_captured_in_order(
    runner: LocalRunner, tmp_path: Path
) -> None:
    script = "for i in 1 2 3; do echo out $i; sleep 0.05; echo err $i >&2; sleep 0.05; done"
    result, sink = await run(runner, spec(tmp_path, script))
    assert result.outcome is StepOutcome.SUCCEEDED
    assert [(s.value, line) for s, line, _ in sink.lines] == [
        (stream, f"{stream[3:]} {i}") for i in (1, 2, 3) for stream in ("stdout", "stderr")
    ]


async def test_empty_lines_crlf_unterminated_and_invalid_utf8(
    runner: LocalRunner, tmp_path: Path
) -> None:
    result, sink = await run(runner, spec(tmp_path, r"printf 'a\n\nb\r\n\377x\nlast'"))
    assert result.outcome is StepOutcome.SUCCEEDED
    assert sink.of(LogStream.STDOUT) == ["a", "", "b", "\ufffdx", "last"]


async def test_huge_line_is_truncated_once(runner: LocalRunner, tmp_path: Path) -> None:
    script = "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo after"
    result, sink = await run(runner, spec(tmp_path, script, max_line_bytes=1 << 20))
    assert result.outcome is StepOutcome.SUCCEEDED
    assert [(len(line), truncated) for _, line, truncated in sink.lines] == [
        (1 << 20, True),
        (5, False),
    ]
    assert sink.lines[1][1] == "after"


async def test_backpressure_blocks_the_child_and_loses_nothing(
    runner: LocalRunner, tmp_path: Path
) -> None:
    progress = tmp_path / "progress"
    script = f"""
import os
fd = os.open({str(progress)!r}, os.O_WRONLY | os.O_CREAT)
pad = "p" * 490
for i in range(10_000):
    print(f"{{i:05d}} {{pad}}", flush=True)
    os.pwrite(fd, b"%05d" % (i + 1), 0)
"""
    release = asyncio.Event()
    got: list[str] = []

    async def slow_sink(stream: LogStream, line: str, truncated: bool) -> None:
        await release.wait()
        got.append(line)

    task = asyncio.ensure_future(
        run(runner, spec(tmp_path, script, language=Language.PYTHON), slow_sink)
    )

    async def written() -> int:
        text = progress.read_text() if progress.exists() else ""
        return int(text) if text else 0

    await asyncio.sleep(0.6)
    first = await written()
    await asyncio.sleep(0.4)
    second = await written()
    # Blocked in write: stuck, and far from done (pipe + reader buffers are < 1 MB).
    assert 0 < first == second < 5_000
    assert not task.done()
    release.set()
    result, _ = await task
    assert result.outcome is StepOutcome.SUCCEEDED
    assert await written() == 10_000
    assert [int(line[:5]) for line in got] == list(range(10_000))


async def test_slow_sink_after_exit_loses_nothing(runner: LocalRunner, tmp_path: Path) -> None:
    # The child is long gone while the sink still works through the buffered lines:
    # the drain must wait for the sink however long past eof_grace (0.3 s here) it takes.
    got: list[str] = []

    async def slow_sink(stream: LogStream, line: str, truncated: bool) -> None:
        await asyncio.sleep(0.01)
        got.append(line)

    result, _ = await run(runner, spec(tmp_path, "seq 1 150"), slow_sink)
    assert result == StepResult(StepOutcome.SUCCEEDED, 0)
    assert got == [str(i) for i in range(1, 151)]


# -- timeouts, cancellation, process groups --------------------------------------------


async def test_timeout_kills_the_group_including_background_grandchildren(
    runner: LocalRunner, tmp_path: Path
) -> None:
    script = "sleep 1000 & echo $!; (trap '' TERM; sleep 1000) & echo $!; wait"
    started = time.monotonic()
    result, sink = await run(runner, spec(tmp_path, script, timeout=0.5, kill_grace=0.5))
    elapsed = time.monotonic() - started
    assert result == StepResult(StepOutcome.TIMED_OUT, None, "timed out after 0.5s")
    assert elapsed < 30  # not the grandchildren's 1,000 s (a ceiling no load reaches)
    pids = list(map(int, sink.of(LogStream.STDOUT)))
    assert len(pids) == 2, sink.lines  # both grandchildren started before the timeout
    for pid in pids:
        assert await wait_dead(pid), f"grandchild {pid} survived"


async def test_sigterm_handler_gets_its_grace_and_its_output_is_drained(
    runner: LocalRunner, tmp_path: Path
) -> None:
    script = """
import signal, sys, time
def bye(*_):
    print("cleaning up", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(1000)
"""
    result, sink = await run(
        runner, spec(tmp_path, script, language=Language.PYTHON, timeout=1, kill_grace=5)
    )
    assert result == StepResult(StepOutcome.TIMED_OUT, 0, "timed out after 1s")
    assert sink.of(LogStream.STDOUT) == ["ready", "cleaning up"]


async def test_sigterm_ignored_means_sigkill_after_grace(
    runner: LocalRunner, tmp_path: Path
) -> None:
    started = time.monotonic()
    result, _ = await run(
        runner, spec(tmp_path, "trap '' TERM; sleep 1000", timeout=0.2, kill_grace=0.4)
    )
    assert result == StepResult(StepOutcome.TIMED_OUT, None, "timed out after 0.2s")
    assert 0.55 < time.monotonic() - started < 30  # timeout + grace, not the 1,000 s sleep


async def test_cancel(runner: LocalRunner, tmp_path: Path) -> None:
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, cancel.set)
    started = time.monotonic()
    result, _ = await run(runner, spec(tmp_path, "echo started; sleep 1000"), cancel=cancel)
    assert result == StepResult(StepOutcome.CANCELLED, None, "cancelled")
    assert time.monotonic() - started < 30  # not the 1,000 s sleep


async def test_cancelled_before_start_runs_nothing(runner: LocalRunner, tmp_path: Path) -> None:
    cancel = asyncio.Event()
    cancel.set()
    result, _ = await run(runner, spec(tmp_path, f"touch {tmp_path}/ran"), cancel=cancel)
    assert result.outcome is StepOutcome.CANCELLED
    assert not (tmp_path / "ran").exists()


async def test_orphan_holding_the_pipe_does_not_hang_the_step(
    runner: LocalRunner, tmp_path: Path
) -> None:
    # run() fails after 60 s: long before the orphan's 1,000 s, with no guess at how slow
    # the machine is (bench/runner_timing.py measures how long it takes).
    result, sink = await run(runner, spec(tmp_path, "sleep 1000 & echo $!; echo done"))
    assert result == StepResult(StepOutcome.SUCCEEDED, 0)
    pid_line, done = sink.of(LogStream.STDOUT)
    assert done == "done"
    assert await wait_dead(int(pid_line))


async def test_process_that_escaped_the_group_cannot_hang_the_step(
    runner: LocalRunner, tmp_path: Path
) -> None:
    escape = (
        f"{sys.executable} -c 'import os, time; os.setsid(); time.sleep(1000)' & echo $!; "
        "sleep 0.2; echo done"
    )
    started = time.monotonic()
    result, sink = await run(runner, spec(tmp_path, escape))
    try:
        assert result == StepResult(StepOutcome.SUCCEEDED, 0)
        assert time.monotonic() - started < 30  # not the escaped process's 1,000 s
        assert sink.of(LogStream.STDOUT)[1] == "done"
    finally:
        os.kill(int(sink.of(LogStream.STDOUT)[0]), signal.SIGKILL)


async def test_sink_error_propagates_and_kills_the_step(
    runner: LocalRunner, tmp_path: Path
) -> None:
    class Boom(Exception):
        pass

    async def failing_sink(stream: LogStream, line: str, truncated: bool) -> None:
        raise Boom(line)

    started = time.monotonic()
    with pytest.raises(Boom, match="first"):
        await run(
            runner,
            spec(tmp_path, f"echo $$ > {tmp_path}/pid; echo first; sleep 1000"),
            failing_sink,
        )
    assert time.monotonic() - started < 30  # not the 1,000 s sleep
    assert await wait_dead(int((tmp_path / "pid").read_text()))


async def test_cancelling_run_kills_the_step(runner: LocalRunner, tmp_path: Path) -> None:
    task = asyncio.ensure_future(
        run(runner, spec(tmp_path, f"echo $$ > {tmp_path}/pid; sleep 1000"))
    )
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_dead(int((tmp_path / "pid").read_text()))


async def test_many_concurrent_steps_keep_their_own_output(
    runner: LocalRunner, tmp_path: Path
) -> None:
    async def one(i: int) -> tuple[StepResult, Sink]:
        return await run(
            runner, spec(tmp_path, 'echo "$N"; echo "$N" >&2; exit $((N % 3))', env={"N": str(i)})
        )

    results = await asyncio.gather(*(one(i) for i in range(60)))
    for i, (result, sink) in enumerate(results):
        assert result.exit_code == i % 3
        assert sink.of(LogStream.STDOUT) == sink.of(LogStream.STDERR) == [str(i)]
