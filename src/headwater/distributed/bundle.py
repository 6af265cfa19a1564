"""The workspace as shipped to remote workers: a deterministic tar.gz plus its metadata.

A server packs the workspace root (the YAML files, script ``source:`` files and anything
a step's ``workdir`` may read), leaving out what is never part of a workspace (dot
folders such as ``.git``/``.headwater``/``.venv``, ``__pycache__``, ``node_modules``,
SQLite files). The archive is byte-for-byte the same for the same files (sorted, no
times, no owners), so servers loading the same workspace announce the same revision and a
worker that fails over from one to another does not download it again.

Secrets never go into the archive: the server resolves them and sends them separately,
only to authenticated workers, who keep them in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from headwater.errors import ConfigError, HeadwaterError
from headwater.workspace import load_workspace
from headwater.workspace.models import Workspace

__all__ = [
    "MAX_BUNDLE_BYTES",
    "WorkspaceBundle",
    "build_bundle",
    "is_cached",
    "revision_of",
    "unpack_bundle",
]

MAX_BUNDLE_BYTES = 64 * 1024 * 1024
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
_SKIP_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".pyc")
_KEEP_DOT_DIRS = frozenset({".workflows"})  # Strøm's folder of workflow files


@dataclass(frozen=True, slots=True)
class WorkspaceBundle:
    name: str  # the workspace name workers must use (a folder's name, a file's stem)
    entry: str  # what to load inside the archive: "." (a folder) or the file's name
    archive: bytes  # tar.gz of the workspace root
    sha256: str  # of ``archive``


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.iterdir()):
        if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            continue  # a link out of the workspace would ship foreign files
        if path.is_dir():
            if path.name in _SKIP_DIRS or (
                path.name.startswith(".") and path.name not in _KEEP_DOT_DIRS
            ):
                continue
            yield from _files(path)
        elif path.is_file() and not path.name.endswith(_SKIP_SUFFIXES):
            yield path


def build_bundle(path: Path, workspace: Workspace) -> WorkspaceBundle:
    """Pack the workspace loaded from ``path`` (a file or a folder)."""
    root = workspace.root.resolve()
    entry = "." if path.is_dir() else path.resolve().relative_to(root).as_posix()
    buffer = io.BytesIO()
    total = 0
    # mtime=0 in the gzip header and in every member: the same files, the same bytes.
    with (
        _gzip_writer(buffer) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for file in _files(root):
            data = file.read_bytes()
            total += len(data)
            if total > MAX_BUNDLE_BYTES:
                raise ConfigError(
                    f"the workspace folder {root} holds more than {MAX_BUNDLE_BYTES >> 20} MiB "
                    "of files to ship to workers; move data files out of it"
                )
            info = tarfile.TarInfo(file.relative_to(root).as_posix())
            info.size = len(data)
            info.mode = 0o755 if file.stat().st_mode & 0o100 else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    archive = buffer.getvalue()
    return WorkspaceBundle(workspace.name, entry, archive, hashlib.sha256(archive).hexdigest())


def _gzip_writer(buffer: io.BytesIO) -> io.BufferedIOBase:
    import gzip

    return gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6)


def revision_of(bundle: WorkspaceBundle, secrets: Mapping[str, str]) -> str:
    """What a worker compares to know whether its copy (files and secrets) is current."""
    digest = hashlib.sha256(bundle.sha256.encode())
    digest.update(bundle.name.encode() + b"\0" + bundle.entry.encode() + b"\0")
    digest.update(json.dumps(dict(secrets), sort_keys=True).encode())
    return digest.hexdigest()[:32]


def is_cached(cache_dir: Path, sha256: str) -> bool:
    return (cache_dir / sha256 / ".complete").exists()


def unpack_bundle(
    archive: bytes | None, sha256: str, cache_dir: Path, name: str, entry: str
) -> Workspace:
    """Unpack into ``cache_dir/<sha256>`` (unless already there: ``archive`` may then be
    None) and load the workspace from there under the server's ``name``."""
    target = cache_dir / sha256
    if not is_cached(cache_dir, sha256):
        if archive is None or hashlib.sha256(archive).hexdigest() != sha256:
            raise HeadwaterError("the workspace archive does not match its checksum")
        staging = cache_dir / f".{sha256}.partial"
        if staging.exists():
            _remove_tree(staging)
        staging.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            # The "data" filter refuses absolute paths, "..", links out of the folder and
            # device files: an archive cannot write outside its folder.
            tar.extractall(staging, filter="data")
        (staging / ".complete").write_text(sha256)
        if target.exists():
            _remove_tree(target)
        staging.rename(target)
    workspace = load_workspace(target if entry == "." else target / entry)
    return workspace.model_copy(update={"name": name})


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
