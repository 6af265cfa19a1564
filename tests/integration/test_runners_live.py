"""The docker and pod runners against a real engine, where one answers.

Neither a Docker engine nor a Kubernetes cluster is one of CI's services, so these
tests skip when none answers, also with HEADWATER_REQUIRE_SERVICES=1; everything up to
the API call is covered against recorded responses (test_docker_runner.py,
test_pod_runner.py). Point them at an engine with DOCKER_HOST / KUBECONFIG.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from headwater.runners.base import StepOutcome, StepSpec
from headwater.runners.config import DockerConfig, KubeConfig
from headwater.runners.docker import DockerRunner
from headwater.runners.pod import PodRunner
from headwater.store.base import LogStream

IMAGE = os.environ.get("HEADWATER_LIVE_IMAGE", "busybox:1.36")
_NOT_IN_CI = (
    "; the Docker engine and Kubernetes are not among CI's services, so this skips even"
    " with HEADWATER_REQUIRE_SERVICES=1"
)


def _docker_config() -> DockerConfig:
    config = DockerConfig.from_env(os.environ)
    try:
        config.client().ping()
    except Exception as exc:
        pytest.skip(
            f"no Docker engine answers at {config.where} ({type(exc).__name__}){_NOT_IN_CI}"
        )
    return config


def _kube_config() -> KubeConfig:
    config = KubeConfig.from_env(os.environ)
    try:
        from kubernetes.client import VersionApi

        VersionApi(config.api_client()).get_code(_request_timeout=3)
    except Exception as exc:
        pytest.skip(
            f"no Kubernetes cluster answers at {config.where} ({type(exc).__name__}){_NOT_IN_CI}"
        )
    return config


class Sink:
    def __init__(self) -> None:
        self.lines: list[tuple[LogStream, str]] = []

    async def __call__(self, stream: LogStream, line: str, truncated: bool) -> None:
        self.lines.append((stream, line))


def spec(script: str, **kw: Any) -> StepSpec:
    job = str(uuid.uuid4())
    return StepSpec(
        job_id=job,
        step="live",
        workdir=Path("."),
        env={"GREETING": "hello"},
        image=IMAGE,
        entrypoint=("/bin/sh", "-c"),
        cmd=(script,),
        labels={"headwater.job": job, "headwater.step": "live"},
        kill_grace=1.0,
        **kw,
    )


async def test_docker_runs_a_real_container_and_removes_it() -> None:
    config = _docker_config()
    runner = DockerRunner(config)
    sink = Sink()
    step = spec('echo "$GREETING"; echo oops >&2; exit 3')
    try:
        result = await asyncio.wait_for(runner.run(step, sink, asyncio.Event()), 300)
        api = await runner.api()
        left = api.containers(all=True, filters={"label": f"headwater.job={step.job_id}"})
    finally:
        await runner.aclose()
    assert (result.outcome, result.exit_code) == (StepOutcome.FAILED, 3)
    assert sink.lines[-2:] == [(LogStream.STDOUT, "hello"), (LogStream.STDERR, "oops")]
    assert left == []


async def test_docker_stops_a_container_at_its_timeout() -> None:
    config = _docker_config()
    runner = DockerRunner(config)
    try:
        result = await asyncio.wait_for(
            runner.run(spec("echo up; sleep 60", timeout=2), Sink(), asyncio.Event()), 300
        )
    finally:
        await runner.aclose()
    assert result.outcome is StepOutcome.TIMED_OUT


async def test_a_pod_runs_and_is_deleted() -> None:
    config = _kube_config()
    runner = PodRunner(config)
    sink = Sink()
    step = spec('echo "$GREETING"; exit 4')
    try:
        result = await asyncio.wait_for(runner.run(step, sink, asyncio.Event()), 600)
    finally:
        await runner.aclose()
    assert (result.outcome, result.exit_code) == (StepOutcome.FAILED, 4)
    assert (LogStream.STDOUT, "hello") in sink.lines
