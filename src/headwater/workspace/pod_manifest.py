"""What ``validate`` says about a pod action's ``manifest``: the fields headwater owns.

It lives with the workspace (not the pod runner) so that validation needs no runner; the
pod runner imports it to merge manifests the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["is_named_list", "manifest_problems"]


def is_named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, Mapping) and isinstance(item.get("name"), str) for item in value)
    )


def manifest_problems(manifest: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """``(path inside the manifest, problem)`` for fields headwater owns or cannot honour."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for key in ("apiVersion", "kind"):
        if key in manifest:
            problems.append(((key,), f"`{key}` is always Pod v1; remove it"))
    metadata = manifest.get("metadata")
    if isinstance(metadata, Mapping):
        if "name" in metadata:
            problems.append(
                (("metadata", "name"), "headwater names each pod (one per attempt); remove it")
            )
        if "namespace" in metadata:
            problems.append(
                (
                    ("metadata", "namespace"),
                    "the namespace is the worker's (HEADWATER_POD_NAMESPACE); remove it",
                )
            )
    spec = manifest.get("spec")
    if isinstance(spec, Mapping):
        policy = spec.get("restartPolicy")
        if policy is not None and policy != "Never":
            problems.append(
                (
                    ("spec", "restartPolicy"),
                    f"a step runs once (`restartPolicy: Never`), not {policy!r}; use `retry:`"
                    " on the step to run it again",
                )
            )
        containers = spec.get("containers")
        if containers is not None and not is_named_list(containers):
            problems.append(
                (
                    ("spec", "containers"),
                    "every container needs a `name`: `main` is the step's own container,"
                    " any other name adds a sidecar",
                )
            )
    return problems
