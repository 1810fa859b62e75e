"""A real ``faces serve`` process on 127.0.0.1 in a throw-away data directory, for the HTTP/memory benches.

The server is configured only through FACES_* variables, exactly as an operator would, and is
stopped with SIGINT so its lifespan shutdown (index snapshots) runs as in production.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from bench.common import REPO_ROOT, random_unit_vectors, rss_bytes
from service.storage.store import FaceStore
from service.testing.synthetic import bulk_insert_synthetic

SYNTHETIC_COLLECTION = "synthetic"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    batching: bool = True
    device: str = "cpu"  # "gpu": CUDA execution provider and the GPU FAISS index
    threads: int = 0
    experiment: str | None = None  # a bench.experiments patch applied to the server process
    extra_env: Mapping[str, str] | None = None
    # Another checkout to run the server from (a before/after comparison); None: this one.
    repo_root: Path | None = None

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'faces.db'}"

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACES_")}
        env.update(
            {
                "FACES_DATABASE_URL": self.database_url,
                "FACES_INDEX_DIR": str(self.data_dir / "index"),
                "FACES_BATCHING_ENABLED": "true" if self.batching else "false",
                "FACES_EXECUTION_PROVIDER": "cuda" if self.device == "gpu" else "cpu",
                "FACES_USE_GPU_INDEX": "true" if self.device == "gpu" else "false",
                "FACES_INTRA_OP_THREADS": str(self.threads),
                "FACES_HOST": "127.0.0.1",
                "FACES_PORT": str(port),
                "FACES_LOG_LEVEL": "WARNING",
            }
        )
        if self.repo_root is not None:
            env["PYTHONPATH"] = str(self.repo_root)
        env.update(self.extra_env or {})
        return env


class ServiceProcess:
    """``python -m service.cli serve`` (or ``bench.experiments NAME serve``); ``url`` once ready."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config.data_dir / f"server-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_s = float("nan")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout_s: float = 600.0) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # An experiment runs the same CLI with a bench.experiments patch applied first.
        entry = ["bench.experiments", self.config.experiment] if self.config.experiment else ["service.cli"]
        command = [sys.executable, "-m", *entry, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        started = time.perf_counter()
        self._process = subprocess.Popen(
            command,
            cwd=self.config.repo_root or REPO_ROOT,
            env=self.config.env(self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = started + timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.perf_counter() < deadline:
                if self._process.poll() is not None:
                    tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
                    raise RuntimeError(f"server exited with {self._process.returncode}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        self.startup_s = time.perf_counter() - started
                        return
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout_s:.0f}s; see {self.log_path}")

    def rss(self) -> tuple[int, int]:
        """(current, peak) resident bytes of the server process."""
        return rss_bytes(self.pid)

    def stop(self, timeout_s: float = 60.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def metrics(self) -> dict[str, float]:
        """Prometheus samples of the running server (name{labels} → value)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10.0).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                match = re.match(r"^(\S+)\s+(\S+)$", line)
                if match:
                    with contextlib.suppress(ValueError):
                        samples[match.group(1)] = float(match.group(2))
        return samples


@contextlib.contextmanager
def running(config: ServerConfig) -> Iterator[ServiceProcess]:
    server = ServiceProcess(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def seed_synthetic(
    database_url: str, count: int, *, seed: int = 0, chunk: int = 50_000, faces_per_subject: int = 1
) -> float:
    """Store ``count`` synthetic unit vectors in the ``synthetic`` collection before the server starts.

    They go through the store (not the index), so the server rebuilds its index from SQLite at
    start-up as after any restart. Returns the seconds spent inserting.
    """
    store = FaceStore.from_url(database_url)
    try:
        store.collections.create_collection(SYNTHETIC_COLLECTION, "benchmark: synthetic embeddings")
        started = time.perf_counter()
        starts = range(0, count, chunk)
        for start in tqdm(
            starts, desc=f"store {count} synthetic faces", unit="chunk", disable=len(starts) < 2
        ):
            size = min(chunk, count - start)
            vectors = random_unit_vectors(size, 128, seed + start)
            bulk_insert_synthetic(store, SYNTHETIC_COLLECTION, f"syn{start}-", vectors, faces_per_subject)
        return time.perf_counter() - started
    finally:
        store.close()
