"""A real ``faces serve`` process on 127.0.0.1 in a throw-away data directory, for the HTTP/memory benches.

The process itself (start, readiness, SIGINT stop) is service/testing/server.py, shared with the
tests; here are the benchmarks' settings, RSS and Prometheus readings, and the synthetic seeding.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from bench.common import random_unit_vectors, rss_bytes
from service.storage.store import FaceStore
from service.testing.server import ServerProcess
from service.testing.synthetic import bulk_insert_synthetic

SYNTHETIC_COLLECTION = "synthetic"


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

    def env(self) -> dict[str, str]:
        """The FACES_* settings of this configuration (the data directory's are added by the process)."""
        env = {
            "FACES_DATABASE_URL": self.database_url,
            "FACES_BATCHING_ENABLED": "true" if self.batching else "false",
            "FACES_EXECUTION_PROVIDER": "cuda" if self.device == "gpu" else "cpu",
            "FACES_USE_GPU_INDEX": "true" if self.device == "gpu" else "false",
            "FACES_INTRA_OP_THREADS": str(self.threads),
        }
        env.update(self.extra_env or {})
        return env


class ServiceProcess(ServerProcess):
    """``python -m service.cli serve`` (or ``bench.experiments NAME serve``); ``url`` once ready."""

    def __init__(self, config: ServerConfig) -> None:
        # An experiment runs the same CLI with a bench.experiments patch applied first.
        entry = ("bench.experiments", config.experiment) if config.experiment else ("service.cli",)
        super().__init__(config.data_dir, env=config.env(), entry=entry, repo_root=config.repo_root)
        self.config = config

    def start(self, timeout_s: float = 600.0) -> None:
        super().start(timeout_s)

    def rss(self) -> tuple[int, int]:
        """(current, peak) resident bytes of the server process."""
        return rss_bytes(self.pid)

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
    try:
        server.start()
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
