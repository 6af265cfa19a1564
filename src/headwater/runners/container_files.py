"""Folders into and out of a container (Strøm's ``/artifacts`` and state folders).

Into: one tar of the host folders, extracted at ``/`` of the container before it starts
(so the folders exist whatever the image holds). Out: each folder's tar from the engine,
after the step's process ended, unpacked into its host folder: regular files and
folders only, nothing outside it, at most ``MAX_COPY_OUT_BYTES`` in all.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MAX_COPY_OUT_BYTES", "CopyOutError", "pack_folders", "unpack_folder"]

MAX_COPY_OUT_BYTES = 1024 * 1024 * 1024


class CopyOutError(Exception):
    pass


def pack_folders(folders: Iterable[tuple[str, Path]]) -> bytes:
    """A tar whose entries put each host folder at its container path."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for container_path, host in folders:
            tar.add(host, arcname=container_path.strip("/"), recursive=True)
    return buffer.getvalue()


def read_limited(chunks: Iterable[bytes], limit: int = MAX_COPY_OUT_BYTES) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise CopyOutError(f"the folder is over the {limit}-byte limit")
    return bytes(data)


def unpack_folder(archive: bytes, host: Path) -> None:
    """The engine's tar of a folder (its entries under the folder's name) into ``host``."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        members = []
        for member in tar.getmembers():
            _, _, rest = member.name.partition("/")
            if not rest:
                continue  # the folder itself
            if not (member.isfile() or member.isdir()):
                continue  # links and devices stay in the container
            member.name = rest
            members.append(member)
        tar.extractall(host, members=members, filter="data")
