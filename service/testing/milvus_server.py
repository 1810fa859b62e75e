"""A Milvus 2.3.5 standalone server from the PyPI wheel ``milvus`` (``milvus-server``): tests, benchmarks.

Standard library only (pymilvus for readiness): the smoke test's Milvus image runs it alone.

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


class ServerDied(RuntimeError):
    """The server binary exited during start-up, or never became ready."""


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

    def start(self, timeout_s: float = 90.0, attempts: int = 3) -> None:
        """Start and wait until a client call succeeds.

        A restart on an existing data dir sometimes never becomes ready (its coordinators keep
        calling the previous run's sessions in etcd; ``common.session.ttl`` is 10 s here), or its
        binary exits; a second launch on the same data then starts in ~10 s, so it is retried.
        """
        for attempt in range(1, attempts + 1):
            self._launch()
            try:
                self.wait_ready(timeout_s)
                return
            except ServerDied:
                self.stop()
                if attempt == attempts:
                    raise
                time.sleep(12)  # let the stale sessions expire

    def _launch(self) -> None:
        launcher = milvus_server_bin()
        if launcher is None:
            raise RuntimeError("milvus-server not found: pip install milvus==2.3.5 (in the dev extra)")
        extra = [f"{c}.ip=127.0.0.1" for c in COMPONENTS]
        extra += [
            f"proxy.timeTickInterval={self.time_tick_ms}",
            "common.gracefulStopTimeout=10",
            "common.session.ttl=10",
        ]
        args = [launcher, "--data", str(self.data_dir), "--proxy-port", str(self.port)]
        for item in extra:
            args += ["--extra-config", item]
        with self.log.open("ab") as log:
            # Its own process group: the launcher does not stop the server binary on SIGTERM.
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout_s: float) -> None:
        from pymilvus import MilvusClient, MilvusException

        started = time.monotonic()
        last: Exception | None = None
        seen_binary = False
        while time.monotonic() < started + timeout_s:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"milvus-server exited:\n{self._logs()}")
            # The launcher first unpacks ~300 MB of lzma'd binaries (tens of seconds on a loaded box):
            # the binary counts as dead only once it has run and gone, or never came within a minute.
            if self._binary_alive(self.process.pid):
                seen_binary = True
            elif seen_binary or time.monotonic() > started + 60:
                raise ServerDied(f"the milvus binary exited while starting:\n{self._logs()}")
            try:
                client = MilvusClient(uri=self.uri, timeout=5)
                client.list_collections()
                client.close()
                return
            except (MilvusException, OSError) as exc:  # health may answer before gRPC does
                last = exc
                time.sleep(0.5)
        raise ServerDied(
            f"milvus-server not ready in {timeout_s}s ({last}); note that Milvus 2.3.5 standalone locks "
            f"/run/milvus/standalone.pid: one server per machine at a time.\n{self._logs()}"
        )

    @staticmethod
    def _binary_alive(group: int) -> bool:
        """Whether a process of the launcher's group other than the launcher runs (not a zombie)."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid = int(stat.parent.name)
            if pid != group and int(fields[2]) == group and fields[0] != "Z":
                return True
        return False

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 60.0) -> None:
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
