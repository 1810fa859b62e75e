"""Milvus next to in-process FAISS, in one run: identify latency, enroll throughput, consistency cost.

Both engines are driven through the service's own ``VectorIndex`` implementations
(``IndexRegistry`` and ``MilvusIndex``) with the same vectors and the same queries, the way
``Gallery.search`` calls them (top-40 hits for a top-5 answer). Milvus is a real 2.3.5 standalone
server started from the PyPI wheel on this machine (FLAT index: exact, like FAISS).

    python -m bench.bench_milvus --sizes 100k,1M --time-tick-ms 20   # as deploy/ configures Milvus
    python -m bench.bench_milvus --time-tick-ms 200 --tag tick200   # Milvus's default time tick
    python -m bench.bench_milvus --milvus-uri http://host:19530   # an existing server instead
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.common import (
    LatencyStats,
    NoStore,
    Report,
    Table,
    finish_report,
    fmt,
    fmt_count,
    parse_counts,
    random_unit_vectors,
    start_report,
)
from service.index.base import VectorIndex
from service.index.faiss_index import IndexRegistry
from service.index.milvus_index import Consistency, MilvusIndex
from service.testing.milvus_server import MilvusServer, free_port

DIM = 128
K = 40  # what Gallery.search asks the index for a top-5 answer
COLLECTION_PK = 1
LEVELS: tuple[Consistency, ...] = ("Customized", "Strong", "Bounded", "Eventually")


@dataclass(frozen=True, slots=True)
class EngineRow:
    engine: str
    gallery: int
    consistency: str
    bulk_load_s: float
    bulk_vectors_per_s: float
    enroll_one: LatencyStats  # one face per call, as one enrollment request writes it
    identify: LatencyStats
    top1_ok: bool


@dataclass(frozen=True, slots=True)
class FreshRead:
    """A face written through one client, searched at once through another (another replica)."""

    consistency: str
    found: int
    trials: int
    search: LatencyStats


def time_search(
    index: VectorIndex, queries: NDArray[np.float32], visible_after: int = 0
) -> tuple[LatencyStats, NDArray[np.int64]]:
    samples, tops = [], []
    for query in queries:
        t0 = time.perf_counter()
        _, pks = index.search(COLLECTION_PK, query[None, :], K, visible_after=visible_after)
        samples.append(time.perf_counter() - t0)
        tops.append(int(pks[0, 0]))
    return LatencyStats.from_seconds(samples), np.asarray(tops, dtype=np.int64)


def time_enroll_one(index: VectorIndex, first_pk: int, n: int, seed: int) -> LatencyStats:
    vectors = random_unit_vectors(n, DIM, seed)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        index.add(COLLECTION_PK, np.array([first_pk + i], dtype=np.int64), vectors[i : i + 1])
        samples.append(time.perf_counter() - t0)
    return LatencyStats.from_seconds(samples)


def fresh_reads(
    writer: MilvusIndex, reader: MilvusIndex, level: str, first_pk: int, trials: int, seed: int
) -> FreshRead:
    vectors = random_unit_vectors(trials, DIM, seed)
    found, samples = 0, []
    for i in range(trials):
        # The timestamp travels from the writing replica to the reading one through the store.
        written = writer.add(COLLECTION_PK, np.array([first_pk + i], dtype=np.int64), vectors[i : i + 1])
        t0 = time.perf_counter()
        _, pks = reader.search(COLLECTION_PK, vectors[i : i + 1], 1, visible_after=written)
        samples.append(time.perf_counter() - t0)
        found += int(pks.size > 0 and pks[0, 0] == first_pk + i)
    return FreshRead(level, found, trials, LatencyStats.from_seconds(samples))


def settle(index: MilvusIndex, query: NDArray[np.float32]) -> None:
    """Wait until the query node has consumed the bulk load (Strong searches stop waiting on it), so the
    first consistency level measured does not pay for the load's catch-up."""
    strong = MilvusIndex(NoStore(), DIM, uri=index.uri, collection=index.name, search_consistency="Strong")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        strong.search(COLLECTION_PK, query[None, :], K)
        if time.perf_counter() - t0 < 0.5:
            break
    strong.close()
    time.sleep(2)


def queries_for(
    vectors: NDArray[np.float32], n: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Noisy copies of gallery rows: the expected top-1 is known, so exactness is checked too."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(vectors), size=n)
    queries = vectors[picks] + rng.normal(0, 0.05, size=(n, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(queries, dtype=np.float32), picks.astype(np.int64) + 1


def run_size(
    gallery: int, uri: str, n_queries: int, n_enroll: int, seed: int, workdir: Path
) -> tuple[list[EngineRow], list[FreshRead]]:
    vectors = random_unit_vectors(gallery, DIM, seed)
    ids = np.arange(1, gallery + 1, dtype=np.int64)
    queries, expected = queries_for(vectors, n_queries, seed + 1)
    rows: list[EngineRow] = []

    faiss_index = IndexRegistry(NoStore(), DIM, workdir / "faiss", use_gpu=False)
    t0 = time.perf_counter()
    faiss_index.add(COLLECTION_PK, ids, vectors)
    load_s = time.perf_counter() - t0
    time_search(faiss_index, queries[:10])  # warm-up
    stats, tops = time_search(faiss_index, queries)
    enroll = time_enroll_one(faiss_index, gallery + 1, n_enroll, seed + 2)
    rows.append(
        EngineRow(
            "faiss", gallery, "-", load_s, gallery / load_s, enroll, stats, bool(np.all(tops == expected))
        )
    )
    del faiss_index

    name = f"bench_{gallery}_{free_port()}"
    milvus = MilvusIndex(NoStore(), DIM, uri=uri, collection=name, timeout_s=120)
    t0 = time.perf_counter()
    loaded_at = milvus.add(COLLECTION_PK, ids, vectors)
    milvus.flush()  # seal the segments (FLAT-indexed) as a long-running server would have them
    load_s = time.perf_counter() - t0
    settle(milvus, queries[0])
    del vectors
    engines = {
        level: MilvusIndex(NoStore(), DIM, uri=uri, collection=name, search_consistency=level)
        for level in LEVELS
    }
    # Customized searches as of the last acknowledged write: here the bulk load, seconds ago. The
    # levels take turns query by query, so that whatever Milvus does meanwhile hits all of them.
    for engine in engines.values():
        time_search(engine, queries[:10], loaded_at)
    samples: dict[str, list[float]] = {level: [] for level in LEVELS}
    top1: dict[str, list[int]] = {level: [] for level in LEVELS}
    for query in queries:
        for level, engine in engines.items():
            t0 = time.perf_counter()
            _, pks = engine.search(COLLECTION_PK, query[None, :], K, visible_after=loaded_at)
            samples[level].append(time.perf_counter() - t0)
            top1[level].append(int(pks[0, 0]))
    for n, (level, engine) in enumerate(engines.items(), start=1):
        enroll = time_enroll_one(engine, gallery + 1_000_000 * n, n_enroll, seed + 3)
        rows.append(
            EngineRow(
                "milvus",
                gallery,
                level,
                load_s,
                gallery / load_s,
                enroll,
                LatencyStats.from_seconds(samples[level]),
                top1[level] == expected.tolist(),
            )
        )
        engine.close()
    fresh = []
    for level in LEVELS:
        reader = MilvusIndex(NoStore(), DIM, uri=uri, collection=name, search_consistency=level)
        n = LEVELS.index(level) + 1  # new vectors per level: an earlier level's copy would win the tie
        fresh.append(fresh_reads(milvus, reader, level, 10_000_000 * n, 20, seed + 4 + n))
        reader.close()
    milvus.destroy()
    milvus.close()
    return rows, fresh


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100k", help="gallery sizes, e.g. 100k,1M")
    parser.add_argument("--queries", type=int, default=200, help="identify searches per engine and level")
    parser.add_argument("--enrolls", type=int, default=100, help="one-face writes timed per engine")
    parser.add_argument("--milvus-uri", default="", help="use this server instead of starting one")
    parser.add_argument(
        "--time-tick-ms", type=int, default=200, help="proxy.timeTickInterval of the started server"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="save as bench_milvus-<tag>.json beside the default run")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = start_report("bench_milvus", argv, tag=args.tag)
    workdir = Path(tempfile.mkdtemp(prefix="faces-bench-milvus-"))
    server = None
    try:
        uri = args.milvus_uri
        if not uri:
            server = MilvusServer(workdir / "milvus", free_port(), time_tick_ms=args.time_tick_ms)
            server.data_dir.mkdir()
            server.start()
            uri = server.uri
        rows: list[EngineRow] = []
        fresh: list[tuple[int, FreshRead]] = []
        for gallery in parse_counts(args.sizes):
            print(f"gallery {fmt_count(gallery)} ...", flush=True)
            size_rows, size_fresh = run_size(gallery, uri, args.queries, args.enrolls, args.seed, workdir)
            rows += size_rows
            fresh += [(gallery, f) for f in size_fresh]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    tick = f"proxy.timeTickInterval {args.time_tick_ms} ms" if server is not None else "server as configured"
    table = Table(
        title=(
            f"Identify and enroll: in-process FAISS vs Milvus 2.3.5 standalone (FLAT, exact), dim {DIM}, "
            f"top-{K}"
        ),
        columns=[
            "engine",
            "gallery",
            "consistency",
            "identify p50 ms",
            "identify p99 ms",
            "p50 vs FAISS",
            "exact top-1",
            "enroll 1 face p50 ms",
            "enroll faces/s (1 per call)",
            "bulk load vectors/s",
        ],
    )
    faiss_p50 = {r.gallery: r.identify.p50_ms for r in rows if r.engine == "faiss"}
    for r in rows:
        table.add(
            r.engine,
            fmt_count(r.gallery),
            r.consistency,
            fmt(r.identify.p50_ms),
            fmt(r.identify.p99_ms),
            f"{r.identify.p50_ms / faiss_p50[r.gallery]:.2f}×",
            "yes" if r.top1_ok else "NO",
            fmt(r.enroll_one.p50_ms),
            fmt(1000.0 / r.enroll_one.mean_ms),
            fmt(r.bulk_vectors_per_s),
        )
    table.notes.append(
        f"Milvus: one server on this machine ({tick}), pymilvus over loopback gRPC; FAISS: the service's "
        "IndexRegistry in this process, FACES_SEARCH_THREADS=1; same vectors, same queries"
    )
    table.notes.append("identify = one VectorIndex.search of one query; enroll = one add of one face")
    fresh_table = Table(
        title=(
            "Read-your-writes across replicas: insert through one Milvus client, "
            "search at once through another"
        ),
        columns=["gallery", "consistency", "found at once", "search p50 ms", "search p99 ms"],
    )
    for gallery, f in fresh:
        fresh_table.add(
            fmt_count(gallery),
            f.consistency,
            f"{f.found}/{f.trials}",
            fmt(f.search.p50_ms),
            fmt(f.search.p99_ms),
        )
    fresh_table.notes.append(
        "Customized (the service's default) searches as of the last acknowledged write's timestamp, "
        "carried between replicas by the store: it waits only right after a write; Strong waits for the "
        "proxy's next time tick on every search; Bounded/Eventually answer at once but may miss a face "
        "enrolled a moment ago through another replica"
    )
    report.tables += [table, fresh_table]
    report.raw = {
        "time_tick_ms": args.time_tick_ms if server is not None else None,
        "rows": [asdict(r) for r in rows],
        "fresh_reads": [{"gallery": g, **asdict(f)} for g, f in fresh],
    }
    finish_report(report, started)
    return report


if __name__ == "__main__":
    main()
