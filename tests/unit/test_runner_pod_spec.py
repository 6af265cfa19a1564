"""The pod a step becomes: manifest merge rules, protected fields, status reading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.runners.base import StepSpec
from headwater.runners.containers import StartError, container_argv, object_name
from headwater.runners.identity import ProcessIdentity
from headwater.runners.pod_spec import (
    build_pod,
    deep_merge,
    label_value,
    manifest_problems,
    pod_state,
    privileged_problem,
)
from headwater.workspace.models import Language

ME = ProcessIdentity("host-1", 42, "boot/7")
_LABEL = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def spec(**kw: Any) -> StepSpec:
    kw.setdefault("image", "img:1")
    kw.setdefault("env", {"A": "1"})
    kw.setdefault("labels", {"headwater.job": "j", "headwater.step": "s"})
    return StepSpec(job_id="job-1", step="s", workdir=Path("."), **kw)


def test_objects_merge_recursively_and_scalars_are_replaced() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": "x"}
    assert deep_merge(base, {"a": {"c": 3, "e": 4}, "d": "y"}) == {
        "a": {"b": 1, "c": 3, "e": 4},
        "d": "y",
    }
    assert base == {"a": {"b": 1, "c": 2}, "d": "x"}  # the inputs are not changed


def test_named_lists_merge_by_name_and_append_new_names() -> None:
    base = {"containers": [{"name": "main", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}
    override = {
        "containers": [
            {"name": "main", "resources": {"requests": {"cpu": "1"}}},
            {"name": "sidecar", "image": "s"},
        ]
    }
    assert deep_merge(base, override) == {
        "containers": [
            {
                "name": "main",
                "image": "i",
                "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
            },
            {"name": "sidecar", "image": "s"},
        ]
    }


def test_env_entries_are_replaced_whole() -> None:
    base = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    override = {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a"}}}]}
    assert deep_merge(base, override)["env"] == [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a"}}},
        {"name": "B", "value": "2"},
    ]


def test_other_lists_are_replaced_and_null_removes() -> None:
    base = {"args": ["a", "b"], "tolerations": [{"key": "x"}], "keep": 1, "drop": 2}
    merged = deep_merge(base, {"args": ["c"], "tolerations": [{"key": "y"}], "drop": None})
    assert merged == {"args": ["c"], "tolerations": [{"key": "y"}], "keep": 1}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
_objects = st.dictionaries(st.text(max_size=3), _json, max_size=4)


@given(_objects)
def test_merging_nothing_changes_nothing(base: dict[str, Any]) -> None:
    assert deep_merge(base, {}) == base


@given(_objects, _objects)
def test_merging_twice_is_merging_once(base: dict[str, Any], override: dict[str, Any]) -> None:
    once = deep_merge(base, override)
    assert deep_merge(once, override) == once


def test_the_pod_carries_the_step_and_headwater_owns_its_fields() -> None:
    manifest = {
        "apiVersion": "v2",
        "metadata": {"labels": {"app": "x", "headwater.job": "forged"}, "namespace": "other"},
        "spec": {"restartPolicy": "Always", "nodeSelector": {"gpu": "true"}},
    }
    pod = build_pod(spec(manifest=manifest, cmd=("run",), kill_grace=7.6), ME, "hw-s-1")
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert pod["metadata"]["name"] == "hw-s-1"
    assert "namespace" not in pod["metadata"]
    assert pod["metadata"]["labels"] == {
        "app": "x",
        "headwater.job": "j",
        "headwater.step": "s",
        "headwater.managed": "true",
        "headwater.host": "host-1",
    }
    assert pod["metadata"]["annotations"] == {
        "headwater.job": "job-1",
        "headwater.step": "s",
        "headwater.worker": "host-1:42:boot/7",
    }
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["nodeSelector"] == {"gpu": "true"}
    assert pod["spec"]["terminationGracePeriodSeconds"] == 8
    (main,) = pod["spec"]["containers"]
    assert main["args"] == ["run"] and "command" not in main


def test_a_script_runs_through_its_language_in_the_container() -> None:
    assert container_argv(spec(script="echo hi")) == (("sh", "-c"), ("echo hi",))
    assert container_argv(spec(script="x", language=Language.BASH)) == (("bash", "-c"), ("x",))
    assert container_argv(spec(script="x", language=Language.PYTHON)) == (
        ("python", "-c"),
        ("x",),
    )
    assert container_argv(spec(script="x", interpreter="python3.12 -u")) == (
        ("python3.12", "-u", "-c"),
        ("x",),
    )


def test_script_args_follow_the_script_as_its_arguments() -> None:
    # sh -c: a name for $0 first, so the args are $1, $2; python -c: sys.argv[1:] as is
    assert container_argv(spec(script='echo "$1"', args=("a b", "c"))) == (
        ("sh", "-c"),
        ('echo "$1"', "s", "a b", "c"),
    )
    assert container_argv(spec(script="x", language=Language.PYTHON, args=("a",))) == (
        ("python", "-c"),
        ("x", "a"),
    )


def test_a_source_file_is_read_on_the_worker(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo from file\n")
    step = StepSpec(
        job_id="j", step="s", workdir=tmp_path, env={}, image="i", source=Path("run.sh")
    )
    assert container_argv(step) == (("sh", "-c"), ("echo from file\n",))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"script": "x", "dependencies": ("pandas",)}, "build them into the image"),
        ({"script": "x" * 100_001}, "longer than 100000 bytes"),
        ({"source": Path("/nonexistent/run.sh")}, "cannot read script file /nonexistent/run.sh"),
    ],
)
def test_scripts_a_container_cannot_run_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(StartError, match=re.escape(message)):
        container_argv(spec(**kw))


def test_manifest_problems_point_at_the_fields_headwater_owns() -> None:
    manifest = {
        "kind": "Pod",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"restartPolicy": "OnFailure", "containers": [{"image": "z"}]},
    }
    assert [path for path, _ in manifest_problems(manifest)] == [
        ("kind",),
        ("metadata", "name"),
        ("metadata", "namespace"),
        ("spec", "restartPolicy"),
        ("spec", "containers"),
    ]
    (only,) = manifest_problems({"spec": {"restartPolicy": "Never", "containers": []}})
    assert only[0] == ("spec", "containers")
    assert manifest_problems({"metadata": {"labels": {"a": "b"}}, "spec": {}}) == []


@pytest.mark.parametrize(
    ("spec_part", "expected"),
    [
        ({"hostNetwork": True}, "`spec.hostNetwork: true`"),
        ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "the hostPath volume 'root'"),
        (
            {"initContainers": [{"name": "i", "securityContext": {"privileged": True}}]},
            "`privileged: true` on container 'i'",
        ),
        (
            {
                "containers": [
                    {"name": "m", "volumeMounts": [{"mountPath": "/var/run/docker.sock"}]}
                ]
            },
            "the Docker socket mounted in container 'm'",
        ),
        ({"hostNetwork": False, "containers": [{"name": "m"}]}, None),
    ],
)
def test_host_access_is_detected(spec_part: dict[str, Any], expected: str | None) -> None:
    assert privileged_problem({"spec": spec_part}) == expected


def _pod(phase: str, main: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "status": {"phase": phase, "containerStatuses": [{"name": "main", "state": main}], **status}
    }


def test_pod_states_are_read_from_the_main_container() -> None:
    assert pod_state({}).phase == "Pending" and not pod_state({}).started
    running = pod_state(_pod("Running", {"running": {}}))
    assert running.started and not running.finished
    done = pod_state(_pod("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    assert (done.exit_code, done.reason, done.finished) == (137, "OOMKilled", True)
    pulling = pod_state(
        _pod("Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "m"}})
    )
    assert pulling.waiting == ("ImagePullBackOff", "m")
    creating = pod_state(_pod("Pending", {"waiting": {"reason": "ContainerCreating"}}))
    assert creating.waiting is None
    evicted = pod_state({"status": {"phase": "Failed", "reason": "Evicted", "message": "low disk"}})
    assert (evicted.exit_code, evicted.reason, evicted.finished) == (None, "Evicted low disk", True)
    unscheduled = pod_state(
        {
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes"}],
            }
        }
    )
    assert unscheduled.unschedulable == "0/3 nodes"


@given(st.text())
def test_label_values_are_always_valid(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63 and _LABEL.match(value)


@given(st.text(), st.text(min_size=1))
def test_object_names_are_dns_labels(job: str, step: str) -> None:
    name = object_name(job, step)
    assert len(name) <= 63 and _DNS_LABEL.match(name), name
