"""A Milvus 2.3.5 standalone server from the PyPI wheel ``milvus`` (``milvus-server``): tests, benchmarks.

The wheel unpacks the server binaries into the data dir (~300 MB) and starts ``milvus run standalone``
with embedded etcd and rocksmq. Its launcher picks free ports from the defaults on; etcd binds
127.0.0.1, every component advertises 127.0.0.1 (``*.ip`` below), but Milvus 2.3.5's gRPC and
metrics listeners bind all interfaces and have no setting to change that (documented in the README).
Its /healthz answers before the proxy's gRPC accepts requests: readiness is a real client call.
The server binary locks /run/milvus/standalone.pid (hard-coded): one such server per machine at a time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def milvus_server_bin() -> str | None:
    beside = Path(sys.executable).parent / "milvus-server"
    return str(beside) if beside.exists() else shutil.which("milvus-server")


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
        launcher = milvus_server_bin()
        if launcher is None:
            raise RuntimeError("milvus-server not found: pip install milvus==2.3.5 (in the dev extra)")
        extra = [f"{c}.ip=127.0.0.1" for c in COMPONENTS]
        extra += [f"proxy.timeTickInterval={self.time_tick_ms}", "common.gracefulStopTimeout=5"]
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
        raise RuntimeError(
            f"milvus-server not ready in {timeout_s}s ({last}); note that Milvus 2.3.5 standalone locks "
            f"/run/milvus/standalone.pid: one server per machine at a time.\n{self._logs()}"
        )

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
        """Signal the launcher's whole process group and wait for the server binary to exit.

        A clean stop lets Milvus revoke its etcd sessions; after a SIGKILL the next start waits for
        the old sessions to expire.
        """
        if self.process is None:
            return
        group = self.process.pid
        with suppress(ProcessLookupError):
            os.killpg(group, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._group_alive(group):
            self.process.poll()  # reap the launcher
            time.sleep(0.1)
        if self._group_alive(group):
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._group_alive(group):
            time.sleep(0.1)
        self.process = None

    @staticmethod
    def _group_alive(group: int) -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True

    def _logs(self) -> str:
        text = self.log.read_text(errors="replace")[-2000:]
        stderr = self.data_dir / "logs" / "milvus-stderr.log"
        if stderr.exists():
            text += "\n--- milvus-stderr.log ---\n" + stderr.read_text(errors="replace")[-3000:]
        return text
