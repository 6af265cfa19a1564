"""Artifacts: kept per job from a step's folder, listed and downloaded over the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from headwater.artifacts import ArtifactStore
from headwater.errors import ArtifactError
from headwater.server.app import create_app
from headwater.store.base import JobStatus
from tests.fakes import FakeRuntime

JOB = "01a24ed1-d56d-77c2-b94c-9073a7e6aef7"


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    src.mkdir(exist_ok=True)
    return src


def test_files_are_kept_with_their_folders_and_a_later_step_replaces_a_name(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path / "kept")
    store.collect(JOB, "build", folder(tmp_path, {"a/b.txt": "one", "report.html": "<h1>"}))
    (tmp_path / "src" / "a" / "b.txt").write_text("second")
    (tmp_path / "src" / "report.html").unlink()
    store.collect(JOB, "test", tmp_path / "src")
    listed = {a.name: a for a in store.artifacts_of(JOB)}
    assert sorted(listed) == ["a/b.txt", "report.html"]
    assert (listed["a/b.txt"].step_name, listed["a/b.txt"].size_bytes) == ("test", 6)
    assert listed["report.html"].content_type == "text/html"
    found = store.open(JOB, "a/b.txt")
    assert found is not None and found[1].read_text() == "second"


def test_symlinks_are_skipped_and_unknown_names_are_not_found(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not keep")
    src = folder(tmp_path, {"ok.txt": "ok"})
    (src / "link.txt").symlink_to(secret)
    (src / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    store = ArtifactStore(tmp_path / "kept")
    assert [a.name for a in store.collect(JOB, "s", src)] == ["ok.txt"]
    assert store.open(JOB, "../secret.txt") is None
    assert store.open(JOB, "link.txt") is None
    assert store.artifacts_of("../etc") == []


def test_the_limits_fail_the_collection(tmp_path: Path) -> None:
    src = folder(tmp_path, {"big.bin": "x" * 10})
    with pytest.raises(ArtifactError, match="limit for one file"):
        ArtifactStore(tmp_path / "k1", max_file_bytes=9).collect(JOB, "s", src)
    folder(tmp_path, {"more.bin": "y" * 10})
    with pytest.raises(ArtifactError, match="job's artifacts are over"):
        ArtifactStore(tmp_path / "k2", max_job_bytes=15).collect(JOB, "s", src)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    runtime = FakeRuntime()
    job = runtime.store.add_job("report", JobStatus.COMPLETED)
    store = ArtifactStore(tmp_path / "kept")
    store.collect(job.id, "make", folder(tmp_path, {"r/q 1.txt": "q1", "page.html": "<b>"}))
    runtime.artifacts = store  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        yield c, job.id


async def test_the_api_lists_and_downloads_them(served: tuple[httpx.AsyncClient, str]) -> None:
    client, job_id = served
    resp = await client.get(f"/api/jobs/{job_id}/artifacts")
    assert resp.status_code == 200
    listed = {a["name"]: a for a in resp.json()}  # a JSON array, as Strøm's
    assert set(listed) == {"page.html", "r/q 1.txt"}
    text = await client.get(listed["r/q 1.txt"]["url"])
    assert (text.status_code, text.text) == (200, "q1")
    assert text.headers["content-type"].startswith("text/plain")
    page = await client.get(listed["page.html"]["url"])
    # HTML could run scripts in the browser: downloaded, never rendered.
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"].startswith("attachment")
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_unknown_jobs_and_names_are_404(served: tuple[httpx.AsyncClient, str]) -> None:
    client, job_id = served
    assert (await client.get(f"/api/jobs/{job_id}/artifacts/nope.txt")).status_code == 404
    assert (await client.get(f"/api/jobs/{job_id}/artifacts/..%2Fx")).status_code == 404
    assert (await client.get("/api/jobs/missing/artifacts")).status_code == 404


async def test_a_runtime_that_keeps_none_lists_none(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    job = runtime.store.add_job("report", JobStatus.COMPLETED)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        assert (await client.get(f"/api/jobs/{job.id}/artifacts")).json() == []


async def test_the_sweep_deletes_the_artifacts_of_deleted_jobs(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    kept = runtime.store.add_job("report", JobStatus.COMPLETED)
    store = ArtifactStore(tmp_path / "kept")
    src = folder(tmp_path, {"a.txt": "a"})
    store.collect(kept.id, "s", src)
    store.collect(JOB, "s", src)  # a job retention has deleted
    assert await store.sweep(runtime.store, batch=1) == 1
    assert [a.name for a in store.artifacts_of(kept.id)] == ["a.txt"]
    assert store.artifacts_of(JOB) == []
    assert not (tmp_path / "kept" / JOB).exists()
