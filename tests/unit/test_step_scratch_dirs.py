"""A local step's `$ARTIFACTS_DIR` and state directories: its own, empty, removed after."""

from __future__ import annotations

from pathlib import Path

from headwater.engine.step_dirs import SCRATCH_VARIABLES, scratch_dirs
from headwater.runners.base import StepSpec


def spec(env: dict[str, str]) -> StepSpec:
    return StepSpec(job_id="j", step="s", workdir=Path("."), env=env, timeout=None)


def test_each_variable_is_a_fresh_empty_directory_removed_afterwards() -> None:
    with scratch_dirs(spec({"A": "1"})) as first, scratch_dirs(spec({})) as second:
        paths = [Path(first.env[v]) for v in SCRATCH_VARIABLES]
        assert all(p.is_dir() and not any(p.iterdir()) for p in paths)
        assert len(set(paths)) == len(SCRATCH_VARIABLES)
        assert Path(first.env["ARTIFACTS_DIR"]) != Path(second.env["ARTIFACTS_DIR"])
        assert first.env["A"] == "1"
        (Path(first.env["ARTIFACTS_DIR"]) / "report.html").write_text("x")
    assert not any(p.exists() for p in paths)


def test_a_value_the_action_sets_is_kept() -> None:
    with scratch_dirs(spec({"ARTIFACTS_DIR": "/data/out"})) as got:
        assert got.env["ARTIFACTS_DIR"] == "/data/out"
        assert Path(got.env["STATE_DIR"]).is_dir()
