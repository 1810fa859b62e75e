"""Logging set-up and Prometheus metrics, each built once per process/app (no module-level state)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def configure_logging(level: str) -> None:
    """Called once by the entry point."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


class _IndexSizeCollector(Collector):
    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "faces_index_size", "Vectors in the search index, per collection", labels=["collection"]
        )
        for name, size in self._sizes().items():
            gauge.add_metric([name], float(size))
        yield gauge


class Metrics:
    """The app's Prometheus registry and instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_latency = Histogram(
            "faces_http_request_duration_seconds",
            "HTTP request latency by route template",
            labelnames=("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embeddings = Counter(
            "faces_embeddings_computed", "Face embeddings computed", registry=self.registry
        )
        self.embedding_batches = Histogram(
            "faces_embedding_batch_size",
            "Crops per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.faces_detected = Counter("faces_detected", "Faces detected in requests", registry=self.registry)

    def record_batch(self, size: int) -> None:
        self.embeddings.inc(size)
        self.embedding_batches.observe(size)

    def watch_index(self, sizes: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_IndexSizeCollector(sizes))
