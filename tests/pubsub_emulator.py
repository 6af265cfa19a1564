"""Google's Pub/Sub emulator for tests and benchmarks (the ``google-cloud-cli-pubsub-
emulator`` package, a Java server), started once per process and stopped at exit.

``HEADWATER_PUBSUB_EMULATOR`` names its launcher when it is not where the package puts it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_lock = threading.Lock()
_emulator: PubsubEmulator | None = None
_LAUNCHER = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
_SDK_ROOTS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk")


@dataclass(frozen=True)
class PubsubEmulator:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def emulator_launcher() -> str | None:
    """The emulator's launcher script, or None when it is not installed."""
    explicit = os.environ.get("HEADWATER_PUBSUB_EMULATOR")
    if explicit:
        return explicit
    roots = list(_SDK_ROOTS)
    gcloud = shutil.which("gcloud")
    if gcloud:  # <sdk>/bin/gcloud
        roots.insert(0, str(Path(gcloud).resolve().parent.parent))
    for root in roots:
        launcher = Path(root) / _LAUNCHER
        if launcher.is_file() and shutil.which("java"):
            return str(launcher)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_emulator() -> PubsubEmulator:
    """The process's emulator, started on first use (a JVM: a few seconds)."""
    global _emulator
    with _lock:
        if _emulator is not None and _emulator.process.poll() is None:
            return _emulator
        launcher = emulator_launcher()
        if launcher is None:
            raise FileNotFoundError("the Pub/Sub emulator (google-cloud-cli-pubsub-emulator)")
        port = _free_port()
        process = subprocess.Popen(
            [launcher, "--host=127.0.0.1", f"--port={port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its JVM is a child of the launcher: stop the group
        )
        atexit.register(_stop, process)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _stop(process)
                    raise RuntimeError("the Pub/Sub emulator did not start") from None
                time.sleep(0.1)
        _emulator = PubsubEmulator(port, process)
        return _emulator


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, 15)
            process.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)
