"""Restart a broker running on this machine, as a real broker restart does to a client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path


def _server_pid(name: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and Path(cmd[0].decode(errors="replace")).name == name:
            return int(proc.name)
    return None


async def restart_local_server(name: str, port: int) -> None:
    """SIGTERM the server (it saves its state on the way out), start it again with the
    same command line, and wait until ``port`` answers."""
    pid = _server_pid(name)
    if pid is None:
        raise RuntimeError(f"no {name} process to restart")
    cmdline = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not Path(f"/proc/{pid}").exists():
            break
        await asyncio.sleep(0.05)
    started = subprocess.Popen(
        cmdline, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        started.poll()  # a server that daemonized (-d) left its parent: reap it
        return
    raise RuntimeError(f"{name} did not come back on port {port}")
