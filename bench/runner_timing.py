"""Two LocalRunner timings that tests used to assert against the wall clock (which
failed on a loaded machine): a step whose Python dependencies are already in the venv
cache, and a step that exits while an orphan it started still holds its output pipe.

The tests keep the behaviour (no second install; the step ends instead of waiting for
the orphan); the time each takes is measured here:

    python bench/runner_timing.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from headwater.runners.base import StepOutcome, StepSpec  # noqa: E402
from headwater.runners.local import LocalRunner  # noqa: E402
from headwater.runners.venvs import Installer  # noqa: E402
from headwater.store.base import LogStream  # noqa: E402
from headwater.workspace.models import Language  # noqa: E402


async def _sink(stream: LogStream, line: str, truncated: bool) -> None:
    return None


async def _timed(runner: LocalRunner, step: StepSpec) -> float:
    started = time.monotonic()
    result = await runner.run(step, _sink, asyncio.Event())
    assert result.outcome is StepOutcome.SUCCEEDED, result
    return time.monotonic() - started


async def measure(runs: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        runner = LocalRunner(cache_dir=workdir / "cache", installer=Installer.PIP)
        cached = StepSpec(
            job_id="job-1",
            step="deps",
            workdir=workdir,
            env={},
            script="import six",
            language=Language.PYTHON,
            dependencies=("six",),
        )
        await _timed(runner, cached)  # the first run builds the venv
        orphan = StepSpec(
            job_id="job-1",
            step="orphan",
            workdir=workdir,
            env={},
            script="sleep 1000 & echo $!; echo done",
        )
        figures: dict[str, list[float]] = {"cached venv step": [], "orphan holds the pipe": []}
        for _ in range(runs):
            figures["cached venv step"].append(await _timed(runner, cached))
            figures["orphan holds the pipe"].append(await _timed(runner, orphan))
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.runs))
    rows: list[dict[str, Any]] = []
    print(f"{'step':<24}{'median s':>10}{'max s':>10}")
    for name, times in figures.items():
        rows.append({"step": name, "median_s": statistics.median(times), "max_s": max(times)})
        print(f"{name:<24}{statistics.median(times):>10.3f}{max(times):>10.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
