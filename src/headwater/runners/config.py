"""How a worker reaches a Docker engine and a Kubernetes cluster.

Read from the environment by ``RunnersConfig.from_env`` (a worker config file can build
the same dataclasses):

``HEADWATER_RUNNERS``
    ``auto`` (default) or a comma-separated list of ``local``, ``docker``, ``pod``.
    ``auto`` offers ``docker`` when the Docker SDK is installed and ``DOCKER_HOST`` is
    set or ``/var/run/docker.sock`` exists, and ``pod`` when the Kubernetes client is
    installed and the process runs in a cluster or ``KUBECONFIG`` is set. A personal
    ``~/.kube/config`` alone does not count: a developer's current context could be any
    cluster, so pods there need ``HEADWATER_RUNNERS=local,pod``. Naming a runner whose
    SDK is missing is an error.
``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``
    The engine, as for the ``docker`` CLI (default: the local socket).
``HEADWATER_DOCKER_PULL``
    ``missing`` (default: pull an image the engine does not have), ``always``, ``never``.
``KUBECONFIG``, ``HEADWATER_KUBE_CONTEXT``
    The kubeconfig file and context; inside a cluster the pod's service account is
    used instead.
``HEADWATER_POD_NAMESPACE``
    Where step pods are created (default: the worker pod's own namespace in a cluster,
    else the context's namespace, else ``default``).
``HEADWATER_POD_START_TIMEOUT``
    Seconds a pod may take to start (scheduling and image pull) before the step fails
    (default 600).

Nothing here holds a secret: the values are host names and file paths, so a config
can be handed to the watchdog process as JSON.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from headwater.errors import ConfigError
from headwater.workspace.models import RunnerKind

__all__ = ["DockerConfig", "KubeConfig", "PullPolicy", "RunnersConfig"]

DEFAULT_DOCKER_SOCKET = Path("/var/run/docker.sock")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class PullPolicy(StrEnum):
    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class DockerConfig:
    # None: DOCKER_HOST / the local socket, like the docker CLI.
    base_url: str | None = None
    tls_verify: bool = False
    cert_path: str | None = None
    api_version: str | None = None  # None: negotiated with the engine
    pull: PullPolicy = PullPolicy.MISSING
    timeout: float = 60.0  # per API call (streams have none)
    init: bool = True  # an init process as PID 1 forwards SIGTERM and reaps zombies
    api_threads: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DockerConfig:
        pull = env.get("HEADWATER_DOCKER_PULL", PullPolicy.MISSING.value).strip().lower()
        try:
            policy = PullPolicy(pull)
        except ValueError:
            choices = ", ".join(p.value for p in PullPolicy)
            raise ConfigError(f"HEADWATER_DOCKER_PULL={pull!r}: choose one of {choices}") from None
        return cls(
            base_url=env.get("DOCKER_HOST") or None,
            tls_verify=env.get("DOCKER_TLS_VERIFY", "") not in ("", "0"),
            cert_path=env.get("DOCKER_CERT_PATH") or None,
            pull=policy,
        )

    def client(self) -> Any:
        """A ``docker.DockerClient`` (blocking: call it from a thread)."""
        import docker

        env = {"DOCKER_HOST": self.base_url or ""}
        if self.tls_verify:
            env["DOCKER_TLS_VERIFY"] = "1"
        if self.cert_path:
            env["DOCKER_CERT_PATH"] = self.cert_path
        kwargs = docker.utils.kwargs_from_env(environment=env)
        if not self.base_url:
            kwargs.pop("base_url", None)
        return docker.DockerClient(
            **kwargs, version=self.api_version or "auto", timeout=round(self.timeout)
        )

    @property
    def where(self) -> str:
        return self.base_url or f"unix://{DEFAULT_DOCKER_SOCKET}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DockerConfig:
        return cls(**{**data, "pull": PullPolicy(data.get("pull", "missing"))})


@dataclass(frozen=True, slots=True)
class KubeConfig:
    namespace: str | None = None  # None: see resolve_namespace
    kubeconfig: str | None = None  # None: KUBECONFIG, else ~/.kube/config
    context: str | None = None
    in_cluster: bool = False
    host: str | None = None  # an API server without authentication (kubectl proxy, tests)
    start_timeout: float = 600.0
    image_pull_grace: float = 60.0  # how long failing image pulls are retried
    exit_status_timeout: float = 60.0  # after the logs end, wait this long for the exit code
    allow_privileged: bool = False  # manifests may ask for host access (hostPath, privileged…)
    api_threads: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KubeConfig:
        timeout = env.get("HEADWATER_POD_START_TIMEOUT")
        try:
            start_timeout = float(timeout) if timeout else 600.0
        except ValueError:
            raise ConfigError(
                f"HEADWATER_POD_START_TIMEOUT={timeout!r} is not a number of seconds"
            ) from None
        in_cluster = (
            bool(env.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT / "token").exists()
        )
        return cls(
            namespace=env.get("HEADWATER_POD_NAMESPACE") or None,
            kubeconfig=env.get("KUBECONFIG") or None,
            context=env.get("HEADWATER_KUBE_CONTEXT") or None,
            in_cluster=in_cluster and not env.get("KUBECONFIG"),
            start_timeout=start_timeout,
        )

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` of its own (the client's global default
        configuration is never touched). Blocking: call it from a thread."""
        from kubernetes import client, config

        if self.host is not None:
            configuration = client.Configuration(host=self.host)
            return client.ApiClient(configuration)
        if self.in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=self.kubeconfig, context=self.context)

    def resolve_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        if self.in_cluster:
            try:
                return (SERVICE_ACCOUNT / "namespace").read_text().strip() or "default"
            except OSError:
                return "default"
        if self.host is None:
            try:
                from kubernetes import config

                _, active = config.list_kube_config_contexts(config_file=self.kubeconfig)
                if self.context:
                    contexts, _ = config.list_kube_config_contexts(config_file=self.kubeconfig)
                    active = next((c for c in contexts if c.get("name") == self.context), active)
                namespace = (active or {}).get("context", {}).get("namespace")
                if namespace:
                    return str(namespace)
            except Exception:  # no kubeconfig, or a broken one: api_client will say so
                return "default"
        return "default"

    @property
    def where(self) -> str:
        if self.host is not None:
            return self.host
        if self.in_cluster:
            return "the cluster's API (in-cluster service account)"
        context = f" (context {self.context})" if self.context else ""
        return f"{self.kubeconfig or os.environ.get('KUBECONFIG') or '~/.kube/config'}{context}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KubeConfig:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class RunnersConfig:
    """Which runners a worker offers, and how to reach their engines."""

    kinds: frozenset[RunnerKind] = frozenset({RunnerKind.LOCAL})
    docker: DockerConfig = dataclasses.field(default_factory=DockerConfig)
    kube: KubeConfig = dataclasses.field(default_factory=KubeConfig)
    # With HEADWATER_RUNNERS=auto: why a runner is not offered (logged at start, so that
    # "no worker has the tag pod" has its reason next to it).
    not_offered: Mapping[RunnerKind, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunnersConfig:
        env = os.environ if env is None else env
        docker = DockerConfig.from_env(env)
        kube = KubeConfig.from_env(env)
        wanted = env.get("HEADWATER_RUNNERS", "auto").strip().lower() or "auto"
        if wanted == "auto":
            kinds = {RunnerKind.LOCAL}
            why: dict[RunnerKind, str] = {}
            if not _installed("docker"):
                why[RunnerKind.DOCKER] = _NOT_INSTALLED.format("docker")
            elif not (docker.base_url or DEFAULT_DOCKER_SOCKET.exists()):
                why[RunnerKind.DOCKER] = (
                    f"DOCKER_HOST is not set and {DEFAULT_DOCKER_SOCKET} does not exist"
                )
            else:
                kinds.add(RunnerKind.DOCKER)
            if not _installed("kubernetes"):
                why[RunnerKind.POD] = _NOT_INSTALLED.format("kubernetes")
            elif not (kube.in_cluster or kube.kubeconfig):
                why[RunnerKind.POD] = (
                    "not inside a cluster and KUBECONFIG is not set"
                    " (~/.kube/config alone does not count)"
                )
            else:
                kinds.add(RunnerKind.POD)
            return cls(frozenset(kinds), docker, kube, why)
        kinds = set()
        for word in (w.strip() for w in wanted.split(",")):
            if not word:
                continue
            try:
                kind = RunnerKind(word)
            except ValueError:
                raise ConfigError(
                    f"HEADWATER_RUNNERS: unknown runner {word!r}; choose from local, docker, pod"
                    " (or auto)"
                ) from None
            package = {RunnerKind.DOCKER: "docker", RunnerKind.POD: "kubernetes"}.get(kind)
            if package is not None and not _installed(package):
                raise ConfigError(
                    f"HEADWATER_RUNNERS asks for the {kind.value} runner, but the {package!r}"
                    " package is not installed: pip install 'headwater[runners]'"
                )
            kinds.add(kind)
        return cls(frozenset(kinds), docker, kube)


_NOT_INSTALLED = "the {!r} package is not installed: pip install 'headwater[runners]'"


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None
