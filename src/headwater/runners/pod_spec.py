"""The pod a pod step runs as: built from the step, with the action's ``manifest`` merged in.

Pure functions over plain JSON (dicts and lists), so the exact body sent to the
Kubernetes API is testable without a cluster.

The generated pod has one container, ``main`` (the seed's name; Strøm's docs also call
it ``step``, and a manifest container named ``step`` is taken to mean ``main`` when the
manifest has no ``main``), ``restartPolicy: Never``, the step's env, command/args and
resources, and headwater's labels. The manifest is then merged in:

- objects merge key by key, recursively;
- lists whose elements all have a ``name`` (``containers``, ``volumes``,
  ``imagePullSecrets``, ``env``…) merge element by element, matched by name; an element
  with a new name is appended. ``env`` entries are replaced whole, not merged (an
  entry has either a ``value`` or a ``valueFrom``, never both);
- any other list, and every scalar, replaces what was there;
- ``null`` removes the key.

After the merge headwater puts back what it owns: ``apiVersion``, ``kind``,
``metadata.name``, ``restartPolicy: Never`` and its own labels. ``manifest_problems``
reports at load time the manifest fields that would fight over those.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from headwater.runners.base import StepSpec
from headwater.runners.containers import (
    HOST_LABEL,
    MANAGED_LABEL,
    WORKER_LABEL,
    container_argv,
    seconds,
    step_env,
)
from headwater.runners.identity import ProcessIdentity
from headwater.workspace.pod_manifest import is_named_list as _named
from headwater.workspace.pod_manifest import manifest_problems

__all__ = [
    "MAIN_CONTAINER",
    "PodState",
    "build_pod",
    "deep_merge",
    "label_value",
    "manifest_problems",
    "pod_state",
    "privileged_problem",
]

MAIN_CONTAINER = "main"
_STROEM_CONTAINER = "step"

_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")

# Waiting reasons that never recover by themselves: fail at once.
TERMINAL_WAITING = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)
# Image pulls that are failing; the kubelet retries with backoff, so allow a grace.
PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "RegistryUnavailable"})


def label_value(text: str) -> str:
    """A valid Kubernetes label value (≤ 63 characters, alphanumeric at both ends)."""
    value = _LABEL_BAD.sub("-", text)[:63]
    return value.strip("-_.")


def _managed_labels(spec: StepSpec, identity: ProcessIdentity) -> dict[str, str]:
    labels = {key: label_value(value) for key, value in spec.labels.items()}
    labels[MANAGED_LABEL] = "true"
    labels[HOST_LABEL] = label_value(identity.host)
    return labels


def build_pod(spec: StepSpec, identity: ProcessIdentity, name: str) -> dict[str, Any]:
    """The pod for ``spec``, ``manifest`` included (see the module docstring). Raises
    ``StartError`` for a script the container cannot run."""
    assert spec.image is not None
    entrypoint, cmd = container_argv(spec)
    container: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "image": spec.image,
        "env": [{"name": key, "value": value} for key, value in step_env(spec).items()],
    }
    if entrypoint is not None:
        container["command"] = list(entrypoint)
    if cmd is not None:
        container["args"] = list(cmd)
    if spec.resources:
        amounts = dict(spec.resources)
        # The same amounts a docker step gets as limits; requesting them too makes the
        # scheduler place the pod where they fit (a manifest can still set either).
        container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    labels = _managed_labels(spec, identity)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "headwater.job": spec.job_id,
                "headwater.step": spec.step,
                WORKER_LABEL: identity.token,
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": seconds(spec.kill_grace),
            "containers": [container],
        },
    }
    if spec.manifest:
        pod = deep_merge(pod, _stroem_alias(spec.manifest))
        pod["apiVersion"], pod["kind"] = "v1", "Pod"
        metadata = pod.setdefault("metadata", {})
        metadata["name"] = name
        metadata.pop("namespace", None)
        metadata.setdefault("labels", {}).update(labels)
        pod.setdefault("spec", {})["restartPolicy"] = "Never"
    return pod


def _stroem_alias(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = manifest.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    if not isinstance(containers, list):
        return manifest
    names = [c.get("name") for c in containers if isinstance(c, Mapping)]
    if MAIN_CONTAINER in names or _STROEM_CONTAINER not in names:
        return manifest
    renamed = [
        {**c, "name": MAIN_CONTAINER}
        if isinstance(c, Mapping) and c.get("name") == _STROEM_CONTAINER
        else c
        for c in containers
    ]
    return {**manifest, "spec": {**manifest["spec"], "containers": renamed}}


def deep_merge(base: Any, override: Any, key: str | None = None) -> Any:
    """``override`` merged into a copy of ``base`` (rules in the module docstring)."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = {k: copy.deepcopy(v) for k, v in base.items()}
        for k, v in override.items():
            if v is None:
                merged.pop(k, None)
            elif k in merged:
                merged[k] = deep_merge(merged[k], v, k)
            else:
                merged[k] = _fresh(v)
        return merged
    if _named(base) and _named(override):
        merged_list = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in override:
            i = index.get(item["name"])
            if i is None:
                index[item["name"]] = len(merged_list)
                merged_list.append(_fresh(item))
            elif key == "env":
                merged_list[i] = _fresh(item)
            else:
                merged_list[i] = deep_merge(merged_list[i], item)
        return merged_list
    return _fresh(override)


def _fresh(value: Any) -> Any:
    """A new value: a copy, where a ``null`` inside an object means "absent" as well."""
    return deep_merge({}, value) if isinstance(value, Mapping) else copy.deepcopy(value)


def privileged_problem(pod: Mapping[str, Any]) -> str | None:
    """Why the pod would get host-level access, or None. Checked unless the worker allows it."""
    spec = pod.get("spec") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            return f"`spec.{key}: true`"
    for volume in spec.get("volumes") or ():
        if isinstance(volume, Mapping) and "hostPath" in volume:
            return f"the hostPath volume {volume.get('name')!r}"
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(group) or ():
            if not isinstance(container, Mapping):
                continue
            context = container.get("securityContext") or {}
            for key in ("privileged", "allowPrivilegeEscalation"):
                if context.get(key) is True:
                    return f"`{key}: true` on container {container.get('name')!r}"
            for mount in container.get("volumeMounts") or ():
                if isinstance(mount, Mapping) and mount.get("mountPath") == "/var/run/docker.sock":
                    return f"the Docker socket mounted in container {container.get('name')!r}"
    return None


@dataclass(frozen=True, slots=True)
class PodState:
    """What a runner needs to know from one pod snapshot."""

    phase: str
    started: bool  # the main container is running or has terminated
    exit_code: int | None  # the main container's, once it terminated
    reason: str | None  # why it terminated (OOMKilled, Error) or why the pod failed
    waiting: tuple[str, str] | None  # (reason, message) of a container stuck waiting
    unschedulable: str | None  # the scheduler's message while it cannot place the pod

    @property
    def finished(self) -> bool:
        return self.exit_code is not None or self.phase in ("Succeeded", "Failed")


def pod_state(pod: Mapping[str, Any]) -> PodState:
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    started, exit_code, reason, waiting = False, None, None, None
    for cs in _statuses(status, "initContainerStatuses"):
        found = _waiting(cs)
        if found is not None:
            waiting = found
    for cs in _statuses(status, "containerStatuses"):
        state = cs.get("state") or {}
        if cs.get("name") == MAIN_CONTAINER:
            if "running" in state:
                started = True
            terminated = state.get("terminated")
            if isinstance(terminated, Mapping):
                started = True
                code = terminated.get("exitCode")
                exit_code = int(code) if isinstance(code, int) else None
                reason = terminated.get("reason")
        found = _waiting(cs)
        if found is not None and waiting is None:
            waiting = found
    if phase == "Failed" and exit_code is None:
        parts = (status.get("reason"), status.get("message"))
        reason = " ".join(str(x) for x in parts if x) or None
    unschedulable = None
    for condition in status.get("conditions") or ():
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
        ):
            unschedulable = str(condition.get("message") or condition.get("reason") or "")
    return PodState(phase, started, exit_code, reason, waiting, unschedulable)


def _statuses(status: Mapping[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    value = status.get(key)
    return [cs for cs in value if isinstance(cs, Mapping)] if isinstance(value, list) else []


def _waiting(cs: Mapping[str, Any]) -> tuple[str, str] | None:
    waiting = (cs.get("state") or {}).get("waiting")
    if not isinstance(waiting, Mapping):
        return None
    reason = str(waiting.get("reason") or "")
    if reason in TERMINAL_WAITING or reason in PULL_WAITING:
        return reason, str(waiting.get("message") or f"container {cs.get('name')!r} {reason}")
    return None
