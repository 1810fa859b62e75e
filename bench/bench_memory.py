"""Resident memory of the service process by gallery size.

For each size a fresh data directory gets that many synthetic unit vectors through the store
(SQLite), then a real ``faces serve`` starts: its index is rebuilt from the store as after any
restart. RSS (``/proc/<pid>/status`` VmRSS) is read once ready and again after a few identify
requests (ONNX Runtime arenas grown), with the peak (VmHWM). The server is then restarted to time
the snapshot load path as well.

    python -m bench.bench_memory               # 0 and 100k faces
    python -m bench.bench_memory --full        # + 1M faces (several minutes of SQLite inserts)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.common import (
    DEFAULT_LFW_ROOT,
    Report,
    Table,
    finish_report,
    fmt,
    fmt_count,
    parse_counts,
    start_report,
)
from bench.server import SYNTHETIC_COLLECTION, ServerConfig, running, seed_synthetic
from service.storage.store import FaceStore

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MemoryCase:
    faces: int
    insert_s: float
    db_mib: float
    rebuild_startup_s: float
    rss_ready_mib: float
    rss_after_requests_mib: float
    peak_mib: float
    snapshot_startup_s: float
    rss_after_snapshot_load_mib: float
    index_floor_mib: float


def directory_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MIB


def warm_requests(url: str, probes: list[Path], count: int) -> None:
    with httpx.Client(base_url=url, timeout=120.0) as client:
        for i in range(count):
            probe = probes[i % len(probes)]
            client.post(
                f"/v1/collections/{SYNTHETIC_COLLECTION}/identify",
                files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
            )


def measure(faces: int, workdir: Path, probes: list[Path], requests: int, device: str) -> MemoryCase:
    config = ServerConfig(workdir / f"faces-{faces}", batching=True, device=device)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if faces:
        insert_s = seed_synthetic(config.database_url, faces)
    else:
        store = FaceStore.from_url(config.database_url)
        store.collections.create_collection(SYNTHETIC_COLLECTION, "benchmark: empty")
        store.close()
        insert_s = 0.0
    db_mib = directory_mib(config.data_dir)

    with running(config) as server:
        rebuild_s = server.startup_s
        ready, _ = server.rss()
        warm_requests(server.url, probes, requests)
        after, peak = server.rss()
    with running(config) as server:  # the clean stop above wrote snapshots: this start loads them
        snapshot_s = server.startup_s
        after_snapshot, _ = server.rss()
    return MemoryCase(
        faces=faces,
        insert_s=insert_s,
        db_mib=db_mib,
        rebuild_startup_s=rebuild_s,
        rss_ready_mib=ready / MIB,
        rss_after_requests_mib=after / MIB,
        peak_mib=peak / MIB,
        snapshot_startup_s=snapshot_s,
        rss_after_snapshot_load_mib=after_snapshot / MIB,
        index_floor_mib=faces * 128 * 4 / MIB,
    )


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="0,100k", help="enrolled faces per run, e.g. 0,100k,1M")
    parser.add_argument("--full", action="store_true", help="add the 1M gallery")
    parser.add_argument(
        "--requests", type=int, default=20, help="identify requests before the second reading"
    )
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_ROOT)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = start_report("bench_memory", argv)
    sizes = parse_counts(args.sizes)
    if args.full and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    probes = sorted((args.lfw_dir / "images").glob("A*/*_0001.jpg"))[:10]

    cases: list[MemoryCase] = []
    with tempfile.TemporaryDirectory(prefix="faces-bench-mem-") as tmp:
        for faces in sizes:
            print(f"{fmt_count(faces)} faces ...", flush=True)
            cases.append(measure(faces, Path(tmp), probes, args.requests, args.device))

    table = Table(
        title=f"Service memory (RSS of the `faces serve` process) by enrolled faces, {args.device}",
        columns=[
            "faces", "SQLite MiB", "insert s", "start (rebuild) s", "RSS ready MiB",
            f"RSS after {args.requests} identify MiB", "peak MiB", "start (snapshot) s",
            "RSS (snapshot) MiB", "vectors MiB",
        ],
    )  # fmt: skip
    for c in cases:
        table.add(
            fmt_count(c.faces),
            fmt(c.db_mib),
            fmt(c.insert_s),
            fmt(c.rebuild_startup_s),
            fmt(c.rss_ready_mib),
            fmt(c.rss_after_requests_mib),
            fmt(c.peak_mib),
            fmt(c.snapshot_startup_s),
            fmt(c.rss_after_snapshot_load_mib),
            fmt(c.index_floor_mib),
        )
    table.notes.append(
        "vectors MiB = faces × 128 × 4 bytes, the flat index's floor; start times include model loading"
    )
    report.tables.append(table)
    report.raw = {"cases": [asdict(c) for c in cases]}
    finish_report(report, started)
    return report


if __name__ == "__main__":
    main()
