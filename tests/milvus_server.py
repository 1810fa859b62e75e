"""A throw-away Milvus 2.3.5 standalone server for tests, from the PyPI wheel ``milvus`` (``milvus-server``).

The wheel unpacks the server binaries into the data dir (~300 MB) and starts ``milvus run standalone``
with embedded etcd and rocksmq. Its launcher picks free ports from the defaults on; etcd binds
127.0.0.1, every component advertises 127.0.0.1 (``*.ip`` below), but Milvus 2.3.5's gRPC and
metrics listeners bind all interfaces and have no setting to change that (documented in the README).
Its /healthz answers before the proxy's gRPC accepts requests: readiness is a real client call.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def milvus_server_bin() -> str | None:
    beside = Path(sys.executable).parent / "milvus-server"
    return str(beside) if beside.exists() else shutil.which("milvus-server")


def require_milvus_server() -> str:
    """The launcher; a clear skip locally when it is missing, a failure on CI (CI=true)."""
    found = milvus_server_bin()
    if found is None:
        reason = 'milvus-server not installed (pip install -e ".[dev]" brings milvus==2.3.5)'
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MilvusServer:
    data_dir: Path
    port: int
    time_tick_ms: int = 200
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "launcher.log"

    def start(self, timeout_s: float = 120.0) -> None:
        launcher = require_milvus_server()
        extra = [f"{c}.ip=127.0.0.1" for c in COMPONENTS] + [f"proxy.timeTickInterval={self.time_tick_ms}"]
        args = [launcher, "--data", str(self.data_dir), "--proxy-port", str(self.port)]
        for item in extra:
            args += ["--extra-config", item]
        with self.log.open("ab") as log:
            # Its own process group: the launcher does not stop the server binary on SIGTERM.
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        from pymilvus import MilvusClient, MilvusException

        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"milvus-server exited:\n{self._logs()}")
            try:
                client = MilvusClient(uri=self.uri, timeout=5)
                client.list_collections()
                client.close()
                return
            except (MilvusException, OSError) as exc:  # health may answer before gRPC does
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"milvus-server not ready in {timeout_s}s ({last}):\n{self._logs()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._wait_binary_gone()
        self.process = None

    def _wait_binary_gone(self) -> None:
        """The server binary is in the launcher's group: wait until nothing of it holds the port."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            assert self.process is not None
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            time.sleep(0.2)

    def _logs(self) -> str:
        text = self.log.read_text(errors="replace")[-2000:]
        stderr = self.data_dir / "logs" / "milvus-stderr.log"
        if stderr.exists():
            text += "\n--- milvus-stderr.log ---\n" + stderr.read_text(errors="replace")[-3000:]
        return text


@contextmanager
def milvus_server(data_dir: Path, time_tick_ms: int = 200) -> Iterator[MilvusServer]:
    server = MilvusServer(data_dir, free_port(), time_tick_ms)
    server.start()
    try:
        yield server
    finally:
        server.stop()
