"""Which runners a worker offers, and how it reaches Docker and Kubernetes."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.errors import ConfigError
from headwater.runners import close_runners, open_runners, runner_tags
from headwater.runners.config import DockerConfig, KubeConfig, PullPolicy, RunnersConfig
from headwater.runners.docker import DockerRunner
from headwater.workspace.models import RunnerKind


def kinds(env: dict[str, str]) -> set[str]:
    return {k.value for k in RunnersConfig.from_env(env).kinds}


def test_auto_offers_what_is_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.setattr("headwater.runners.config.DEFAULT_DOCKER_SOCKET", tmp_path / "no.sock")
    assert kinds({}) == {"local"}
    assert kinds({"DOCKER_HOST": "tcp://10.0.0.5:2375"}) == {"local", "docker"}
    kubeconfig = tmp_path / "kube.yaml"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    assert kinds({"KUBECONFIG": str(kubeconfig)}) == {"local", "pod"}
    # A developer's own ~/.kube/config could point at any cluster: not without asking.
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    assert kinds({}) == {"local"}
    assert kinds({"HEADWATER_RUNNERS": "local,pod"}) == {"local", "pod"}
    (tmp_path / "sock").touch()
    monkeypatch.setattr("headwater.runners.config.DEFAULT_DOCKER_SOCKET", tmp_path / "sock")
    assert kinds({}) == {"local", "docker"}


def test_auto_says_why_a_runner_is_not_offered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("headwater.runners.config.DEFAULT_DOCKER_SOCKET", tmp_path / "no.sock")
    why = RunnersConfig.from_env({}).not_offered
    no_sock = tmp_path / "no.sock"
    assert why[RunnerKind.DOCKER] == f"DOCKER_HOST is not set and {no_sock} does not exist"
    assert "KUBECONFIG is not set" in why[RunnerKind.POD]
    assert "~/.kube/config alone does not count" in why[RunnerKind.POD]
    monkeypatch.setattr("headwater.runners.config._installed", lambda package: False)
    why = RunnersConfig.from_env({"DOCKER_HOST": "tcp://docker:2375"}).not_offered
    assert why[RunnerKind.DOCKER] == (
        "the 'docker' package is not installed: pip install 'headwater[runners]'"
    )
    assert "'kubernetes' package is not installed" in why[RunnerKind.POD]
    assert RunnersConfig.from_env({"HEADWATER_RUNNERS": "local"}).not_offered == {}


def test_an_explicit_list_is_taken_as_written() -> None:
    assert kinds({"HEADWATER_RUNNERS": "docker, pod"}) == {"docker", "pod"}
    with pytest.raises(ConfigError, match="unknown runner 'k8s'; choose from local, docker, pod"):
        RunnersConfig.from_env({"HEADWATER_RUNNERS": "local,k8s"})


def test_engine_settings_come_from_the_docker_and_kube_variables() -> None:
    config = RunnersConfig.from_env(
        {
            "DOCKER_HOST": "tcp://docker:2376",
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": "/certs",
            "HEADWATER_DOCKER_PULL": "always",
            "KUBECONFIG": "/etc/kube/config",
            "HEADWATER_KUBE_CONTEXT": "prod",
            "HEADWATER_POD_NAMESPACE": "jobs",
            "HEADWATER_POD_START_TIMEOUT": "120",
        }
    )
    assert config.docker == DockerConfig(
        base_url="tcp://docker:2376", tls_verify=True, cert_path="/certs", pull=PullPolicy.ALWAYS
    )
    assert config.kube == KubeConfig(
        namespace="jobs", kubeconfig="/etc/kube/config", context="prod", start_timeout=120
    )
    assert DockerConfig.from_json(config.docker.to_json()) == config.docker
    assert KubeConfig.from_json(config.kube.to_json()) == config.kube
    with pytest.raises(ConfigError, match="HEADWATER_DOCKER_PULL='sometimes'"):
        RunnersConfig.from_env({"HEADWATER_DOCKER_PULL": "sometimes"})
    with pytest.raises(ConfigError, match="HEADWATER_POD_START_TIMEOUT='soon'"):
        RunnersConfig.from_env({"HEADWATER_POD_START_TIMEOUT": "soon"})


async def test_an_unreachable_engine_still_gets_its_runner() -> None:
    config = RunnersConfig(
        frozenset({RunnerKind.LOCAL, RunnerKind.DOCKER}),
        docker=DockerConfig(base_url="http://127.0.0.1:9", timeout=1),
    )
    runners = await open_runners(config)
    try:
        assert set(runners) == {RunnerKind.LOCAL, RunnerKind.DOCKER}
        assert isinstance(runners[RunnerKind.DOCKER], DockerRunner)
        assert runner_tags(runners) == {"script", "docker"}
    finally:
        await close_runners(runners)
