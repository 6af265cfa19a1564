"""A Python workflow named in YAML (``type: workflow``, ``target_workflow:``): checked by
importing it, since a name that does not import would fail only when a job runs.

The workspace layer knows nothing of the SDK, so a workflow is recognised by the mark
``@headwater.workflow`` leaves on its function (``__headwater_workflow__``). The module
is looked for on ``sys.path``, then in the workspace folder (appended, as the function
runner does, so it never shadows an installed module).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

__all__ = ["WORKFLOW_MARK", "workflow_problem"]

WORKFLOW_MARK = "__headwater_workflow__"


def workflow_problem(ref: str, root: Path | None, kwargs: tuple[str, ...] = ()) -> str | None:
    """Why ``module:function`` is not a workflow that takes ``kwargs`` (None: it is)."""
    module_name, _, attr_path = ref.partition(":")
    folder = str(root.resolve()) if root is not None else None
    if folder is not None and folder not in sys.path:
        sys.path.append(folder)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        return f"workflow {ref!r} does not import: {exc}"
    except AttributeError:
        return f"workflow {ref!r}: module {module_name!r} has no {attr_path!r}"
    except Exception as exc:  # the user's module failed while importing
        return f"workflow {ref!r}: importing {module_name!r} raised {exc!r}"
    if getattr(target, WORKFLOW_MARK, None) is None:
        return f"{ref!r} is not a @headwater.workflow (decorate the function with it)"
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    missing = [k for k in kwargs if k not in params]
    if missing:
        wanted = ", ".join(kwargs)
        return (
            f"workflow {ref!r} is called with {wanted} as keywords: it does not take {missing[0]}"
        )
    return None
