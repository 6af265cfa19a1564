"""Pieces of distributed mode that need no service: tokens, the workspace bundle, the
wire format, tag matching and the worker config file."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.cli.worker_config import load_worker_config
from headwater.distributed.bundle import build_bundle, revision_of, unpack_bundle
from headwater.distributed.tokens import issue_token, parse_token, secret_digest
from headwater.distributed.wire import (
    job_from_wire,
    job_to_wire,
    log_from_wire,
    log_to_wire,
    step_from_wire,
    step_to_wire,
)
from headwater.errors import ConfigError, HeadwaterError
from headwater.server.worker_service import WorkerService
from headwater.store.base import (
    JobRecord,
    JobStatus,
    LogLine,
    LogStream,
    StepRecord,
    StepStatus,
    StepUpdate,
)
from headwater.workspace import load_workspace

T = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


# -- tokens ------------------------------------------------------------------------------


def test_a_token_is_random_parses_back_and_only_its_digest_is_kept() -> None:
    a, b = issue_token("a"), issue_token("a")
    assert a.token != b.token and a.record.id != b.record.id
    parsed = parse_token(a.token)
    assert parsed is not None and parsed[0] == a.record.id
    assert a.record.secret_sha256 == secret_digest(parsed[1])
    assert parsed[1] not in repr(a.record)


@pytest.mark.parametrize(
    "token",
    ["", "hwt", "hwt__", "xyz_000000000000_" + "0" * 64, "hwt_00000000000_" + "0" * 64,
     "hwt_000000000000_" + "0" * 63, "hwt_00000000000G_" + "0" * 64, "hwt_" + "0" * 500],
)  # fmt: skip
def test_malformed_tokens_do_not_parse(token: str) -> None:
    assert parse_token(token) is None


# -- bundle ------------------------------------------------------------------------------


def _workspace(tmp_path: Path) -> Path:
    root = tmp_path / "orders"
    (root / "scripts").mkdir(parents=True)
    (root / "ws.yaml").write_text(
        "actions:\n  run:\n    type: script\n    source: scripts/run.sh\n"
        "tasks:\n  go:\n    flow:\n      s: { action: run }\n"
    )
    (root / "scripts" / "run.sh").write_text("echo hi\n")
    (root / ".headwater").mkdir()
    (root / ".headwater" / "headwater.db").write_bytes(b"x" * 100)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"x")
    return root


def test_the_bundle_is_deterministic_and_leaves_out_databases_and_caches(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    ws = load_workspace(root)
    first = build_bundle(root, ws)
    (root / "scripts" / "run.sh").touch()  # a new mtime changes nothing
    second = build_bundle(root, ws)
    assert first.archive == second.archive and first.sha256 == second.sha256
    with tarfile.open(fileobj=io.BytesIO(first.archive)) as tar:
        assert sorted(tar.getnames()) == ["scripts/run.sh", "ws.yaml"]
    assert revision_of(first, {"a": "1"}) != revision_of(first, {"a": "2"})

    loaded = unpack_bundle(first.archive, first.sha256, tmp_path / "cache", "orders", ".")
    assert loaded.name == "orders" and set(loaded.tasks) == {"go"}
    assert (loaded.root / "scripts" / "run.sh").read_text() == "echo hi\n"
    again = unpack_bundle(None, first.sha256, tmp_path / "cache", "orders", ".")  # cached
    assert again.root == loaded.root


def test_an_archive_cannot_write_outside_its_folder_nor_lie_about_its_checksum(
    tmp_path: Path,
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.yaml")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    archive = buffer.getvalue()
    import hashlib

    sha = hashlib.sha256(archive).hexdigest()
    with pytest.raises(tarfile.TarError):
        unpack_bundle(archive, sha, tmp_path / "cache", "x", ".")
    assert not (tmp_path / "escaped.yaml").exists()
    with pytest.raises(HeadwaterError, match="checksum"):
        unpack_bundle(archive, "0" * 64, tmp_path / "cache", "x", ".")


# -- wire --------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(output=_json, text=st.text(max_size=50), tags=st.frozensets(st.text(min_size=1, max_size=8)))
def test_records_survive_the_wire(output: Any, text: str, tags: frozenset[str]) -> None:
    step = StepRecord("j1", "s", "a", StepStatus.COMPLETED, 0, output, None, 1, T, T)
    job = JobRecord(
        id="j1", workspace="w", task="t", status=JobStatus.RUNNING, input={"x": output},
        output=output, error=text or None, source_type="api", source_id=None, dedup_key=None,
        tags=tags, parent_job_id=None, worker_id="w1", attempt=2, max_attempts=3,
        cancel_requested=False, created_at=T, started_at=T, finished_at=None, steps=(step,),
    )  # fmt: skip
    assert job_from_wire(job_to_wire(job)) == job
    update = StepUpdate("s", None, StepStatus.RUNNING, None, output, text, 1, T, None)
    assert step_from_wire(step_to_wire("j1", update)) == ("j1", update)
    line = LogLine("j1", None, LogStream.STDERR, text, T)
    assert log_from_wire(log_to_wire(line)) == line


def test_a_timestamp_without_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        log_from_wire(["j", None, "stdout", "x", "2025-01-01T00:00:00"])


# -- tags --------------------------------------------------------------------------------


def test_a_worker_claims_only_jobs_whose_every_tag_it_has(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(
        "actions:\n"
        "  sh: { type: script, script: 'true' }\n"
        "  gpu: { type: script, script: 'true', tags: [gpu] }\n"
        "  img: { type: docker, image: alpine }\n"
        "tasks:\n"
        "  a: { flow: { s: { action: sh } } }\n"
        "  b: { flow: { s: { action: gpu } } }\n"
        "  c: { flow: { s: { action: img }, t: { action: sh } } }\n"
    )
    node: Any = SimpleNamespace(holder=SimpleNamespace(workspace=load_workspace(path)))
    service = WorkerService(node)
    assert service.eligible_signatures(frozenset({"script"})) == ["", "script"]
    assert service.eligible_signatures(frozenset({"script", "gpu"})) == ["", "gpu,script", "script"]
    # A job carries its first steps' tags, or one step's once handed on (c's step s).
    assert service.eligible_signatures(frozenset({"script", "docker"})) == [
        "", "docker", "docker,script", "script"
    ]  # fmt: skip
    assert service.eligible_signatures(frozenset({"docker"})) == ["", "docker"]


# -- worker config -----------------------------------------------------------------------


def test_the_seed_worker_config_reads_and_a_typo_is_named(tmp_path: Path) -> None:
    good = tmp_path / "worker-config.yaml"
    good.write_text('worker_token: "hwt_abc"\ntags:\n  - script\n  - docker\n')
    cfg = load_worker_config(good)
    assert (cfg.worker_token, cfg.tags, cfg.concurrency) == ("hwt_abc", ["script", "docker"], 8)
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker_tokn: x\n")
    with pytest.raises(ConfigError, match=r"worker_tokn.*known keys: server, worker_token"):
        load_worker_config(bad)
