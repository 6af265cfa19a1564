"""Strøm's ``| vals`` filter: a ``ref+...`` secret reference resolved by the vals CLI.

``{{ 'ref+vault://secret/data/api#token' | vals }}`` runs ``vals eval -f - -o json`` (the
``vals`` binary of helmfile/vals must be on PATH where the template renders: the server
for ``secrets:``, the worker for step templates). Anything that is not a string starting
with ``ref+`` passes through unchanged, so the filter is harmless on plain values. A
missing binary or a failed lookup is a template error that says why.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from headwater.errors import TemplateCallError

__all__ = ["VALS_FILTERS", "VALS_TIMEOUT_SECONDS", "vals"]

VALS_TIMEOUT_SECONDS = 60.0
_KEY = "_v"


def vals(value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith("ref+"):
        return value
    try:
        done = subprocess.run(
            ["vals", "eval", "-f", "-", "-o", "json"],
            input=json.dumps({_KEY: value}),
            capture_output=True,
            text=True,
            timeout=VALS_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise TemplateCallError(
            "vals: the `vals` CLI is not installed (on PATH); it resolves ref+ secret"
            " references (https://github.com/helmfile/vals)"
        ) from None
    except subprocess.TimeoutExpired:
        raise TemplateCallError(
            f"vals: no answer within {VALS_TIMEOUT_SECONDS:g} s for a ref+ reference"
        ) from None
    except OSError as exc:
        raise TemplateCallError(f"vals: cannot run the `vals` CLI: {exc}") from None
    if done.returncode != 0:
        raise TemplateCallError(
            f"vals eval failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    try:
        resolved = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise TemplateCallError("vals: the CLI's output is not JSON") from None
    result = resolved.get(_KEY) if isinstance(resolved, dict) else None
    if not isinstance(result, str):
        raise TemplateCallError("vals: the CLI's output has no resolved value")
    return result


VALS_FILTERS = {"vals": vals}
