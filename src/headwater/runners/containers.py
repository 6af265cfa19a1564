"""What the docker and pod runners share: the command, the env, labels and names.

Command: ``StepSpec.entrypoint`` replaces the image's ENTRYPOINT (a pod's ``command``)
and ``StepSpec.cmd`` its CMD (a pod's ``args``); with neither, the image runs as built.
A ``type: script`` action with ``runner: docker|pod`` and an ``image`` runs its script
in that image: ``sh -c SCRIPT`` (``bash -c`` for ``language: bash``, ``python -c`` for
Python, or the ``interpreter`` given), the script passed as one argument, so no
workspace mount is needed and a remote engine works too. A ``source:`` file is read on
the worker and passed the same way. ``dependencies`` belong in the image.
"""

from __future__ import annotations

import math
import re
import secrets as _random
import shlex

from headwater.errors import RunnerError
from headwater.runners.base import StepSpec
from headwater.workspace.models import Language

__all__ = [
    "HOST_LABEL",
    "MANAGED_LABEL",
    "MAX_SCRIPT_BYTES",
    "WORKER_LABEL",
    "StartError",
    "check_image_spec",
    "container_argv",
    "object_name",
    "seconds",
    "step_env",
]

MANAGED_LABEL = "headwater.managed"
HOST_LABEL = "headwater.host"
WORKER_LABEL = "headwater.worker"
# One argv string is capped at 128 KiB on Linux (MAX_ARG_STRLEN).
MAX_SCRIPT_BYTES = 100_000

_NAME_BAD = re.compile(r"[^a-z0-9-]+")


class StartError(Exception):
    """The step cannot be started as written; the message is for people."""


def check_image_spec(spec: StepSpec, runner: str) -> None:
    if not spec.image:
        raise RunnerError(f"step {spec.step!r} has no image; the {runner} runner runs images")


def container_argv(spec: StepSpec) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """``(entrypoint, cmd)`` for the container (see the module docstring)."""
    if spec.script is None and spec.source is None:
        return spec.entrypoint, spec.cmd
    if spec.dependencies:
        raise StartError(
            "`dependencies` are installed by the local runner only; in a container, build"
            " them into the image"
        )
    if spec.script is not None:
        script = spec.script
    else:
        assert spec.source is not None
        path = spec.source if spec.source.is_absolute() else spec.workdir / spec.source
        try:
            script = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StartError(f"cannot read script file {path}: {exc.strerror or exc}") from None
    if len(script.encode("utf-8", "surrogateescape")) > MAX_SCRIPT_BYTES:
        raise StartError(
            f"the script is longer than {MAX_SCRIPT_BYTES} bytes, the most a container"
            " command can carry; put it in the image"
        )
    if spec.interpreter:
        try:
            prefix = tuple(shlex.split(spec.interpreter))
        except ValueError as exc:
            raise StartError(f"interpreter {spec.interpreter!r} cannot be parsed: {exc}") from None
    elif spec.language is Language.PYTHON:
        prefix = ("python",)
    elif spec.language is Language.BASH:
        prefix = ("bash",)
    else:
        prefix = ("sh",)
    # `sh -c SCRIPT NAME ARGS...` makes the args $1, $2, ...; `python -c` gives them as
    # sys.argv[1:] without a name.
    zeroth = (spec.step,) if spec.args and spec.language is not Language.PYTHON else ()
    return (*prefix, "-c"), (script, *zeroth, *spec.args)


def seconds(grace: float) -> int:
    """A grace period in whole seconds, as both APIs take it: rounded up, so a grace of
    0.5 s is not turned into an immediate SIGKILL."""
    return math.ceil(max(0.0, grace))


def step_env(spec: StepSpec) -> dict[str, str]:
    return {**spec.env, "HEADWATER_JOB_ID": spec.job_id, "HEADWATER_STEP": spec.step}


def object_name(job_id: str, step: str) -> str:
    """``hw-<step>-<job>-<random>``: valid as a container name and as a pod name
    (DNS-1123 label), and unique per attempt."""
    step_part = _NAME_BAD.sub("-", step.lower()).strip("-")[:30].strip("-") or "step"
    job_part = _NAME_BAD.sub("", job_id.lower())[-8:]
    return "-".join(p for p in ("hw", step_part, job_part, _random.token_hex(3)[:5]) if p)
