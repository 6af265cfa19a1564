"""Per-step scratch directories for the variables Strøm scripts write to.

Strøm gives every shell step ``$ARTIFACTS_DIR`` (files to keep) and ``$STATE_DIR`` /
``$STATE_OUT_DIR`` (task state between runs), plus the workspace-wide ``GLOBAL_*``
pair. headwater does not collect artifacts or keep state yet (``validate`` refuses a
workspace that uses them), but a script that reads them anyway must never see them
unset: ``cp report.html "$ARTIFACTS_DIR/"`` would then write into ``/``. So a local
step gets each as an empty directory of its own, removed when the step ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from headwater.runners.base import StepSpec

__all__ = ["SCRATCH_VARIABLES", "scratch_dirs"]

# Variable -> directory name under the step's scratch root.
SCRATCH_VARIABLES: dict[str, str] = {
    "ARTIFACTS_DIR": "artifacts",
    "STATE_DIR": "state",
    "STATE_OUT_DIR": "state-out",
    "GLOBAL_STATE_DIR": "global-state",
    "GLOBAL_STATE_OUT_DIR": "global-state-out",
}


@contextlib.contextmanager
def scratch_dirs(spec: StepSpec) -> Iterator[StepSpec]:
    """``spec`` with each of :data:`SCRATCH_VARIABLES` set to a fresh empty directory
    (unless the action sets it itself); the directories are removed afterwards."""
    missing = {k: v for k, v in SCRATCH_VARIABLES.items() if not spec.env.get(k)}
    if not missing:
        yield spec
        return
    root = Path(tempfile.mkdtemp(prefix="headwater-step-"))
    try:
        env = dict(spec.env)
        for variable, name in missing.items():
            path = root / name
            path.mkdir()
            env[variable] = str(path)
        yield dataclasses.replace(spec, env=env)
    finally:
        shutil.rmtree(root, ignore_errors=True)
