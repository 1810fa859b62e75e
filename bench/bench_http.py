"""End-to-end HTTP load: a real ``faces serve`` (uvicorn) on 127.0.0.1 driven by locust (headless).

For each batcher setting (on/off) a fresh server in a temp directory gets ``--faces`` real LFW
people enrolled, then closed-loop locust users hammer identify, then enroll, for ``--duration``
seconds each. Embeddings/s and the mean model batch come from the server's own /metrics. A second
server with ``--synthetic`` vectors pre-loaded through the store (index rebuilt at start-up, as
after a restart) measures identify against a large gallery.

    python -m bench.bench_http                          # 100 faces, 4 users, 20 s per run, 100k synthetic
    python -m bench.bench_http --users 8 --duration 60 --synthetic 1M
    python -m bench.bench_http --device gpu             # CUDA provider + GPU FAISS in the server
    python -m bench.bench_http --faces 0 --batching "" --synthetic 1M \
        --experiments main,exact,main,exact --before ../main      # before/after, interleaved

Experiment names beyond bench/experiments.py: ``main`` runs the server from the ``--before``
checkout (PYTHONPATH there), ``exact`` runs this checkout with the compressed index off
(FACES_COMPRESSED_INDEX_MIN_FACES=0), so both scan the same gallery exactly.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.common import (
    DEFAULT_LFW_ROOT,
    REPO_ROOT,
    Report,
    Table,
    finish_report,
    fmt,
    fmt_count,
    parse_count,
    start_report,
)
from bench.server import SYNTHETIC_COLLECTION, ServerConfig, ServiceProcess, running, seed_synthetic
from models.lfw import read_pairs

LOCUSTFILE = REPO_ROOT / "bench" / "locustfile.py"
COLLECTION = "bench"


@dataclass(frozen=True, slots=True)
class LoadResult:
    scenario: str
    experiment: str
    operation: str
    batching: bool
    gallery: int
    users: int
    duration_s: float
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    embeddings_per_s: float
    mean_batch: float


def enrollment_people(lfw_dir: Path, count: int) -> list[tuple[str, Path, Path]]:
    """(person, enrollment photo, probe photo) from the LFW same-person pairs, one per person."""
    chosen: dict[str, tuple[str, Path, Path]] = {}
    for pair in read_pairs(lfw_dir / "pairs.txt", lfw_dir / "images"):
        if pair.same and pair.person_a not in chosen:
            chosen[pair.person_a] = (pair.person_a, pair.path_a, pair.path_b)
            if len(chosen) >= count:
                break
    return list(chosen.values())


def enroll_people(url: str, people: list[tuple[str, Path, Path]]) -> tuple[int, float]:
    """Sequential enrollment over HTTP (one image per request); (faces enrolled, seconds)."""
    enrolled = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60.0) as client:
        client.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
        for person, photo, _probe in people:
            response = client.post(
                f"/v1/collections/{COLLECTION}/subjects/{person}/faces",
                params={"create_subject": "true", "face_selection": "largest"},
                files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))],
            )
            if response.status_code == 201:
                enrolled += int(response.json()["enrolled"])
    return enrolled, time.perf_counter() - started


def run_locust(
    server: ServiceProcess,
    *,
    user_class: str,
    operation: str,
    users: int,
    duration_s: int,
    images: list[Path],
    collection: str,
    workdir: Path,
) -> dict[str, float]:
    """One headless locust run; its aggregate row for ``operation`` plus the server's embedding counters."""
    listing = workdir / f"images-{user_class}.txt"
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    prefix = workdir / f"locust-{user_class}-{server.port}"
    env = dict(os.environ, BENCH_IMAGES=str(listing), BENCH_COLLECTION=collection)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--stop-timeout", "30",
        "--host", server.url, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
        "--exit-code-on-error", "0", user_class,
    ]  # fmt: skip
    before = server.metrics()
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, timeout=duration_s + 180, capture_output=True)
    after = server.metrics()
    row = _stats_row(Path(f"{prefix}_stats.csv"), operation)
    embeddings = after.get("faces_embedding_batch_size_sum", 0.0) - before.get(
        "faces_embedding_batch_size_sum", 0.0
    )
    batches = after.get("faces_embedding_batch_size_count", 0.0) - before.get(
        "faces_embedding_batch_size_count", 0.0
    )
    row["embeddings_per_s"] = embeddings / duration_s
    row["mean_batch"] = embeddings / batches if batches else float("nan")
    return row


def _stats_row(path: Path, name: str) -> dict[str, float]:
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            if record["Name"] == name:
                return {
                    "requests": float(record["Request Count"]),
                    "failures": float(record["Failure Count"]),
                    "rps": float(record["Requests/s"]),
                    "p50_ms": float(record["50%"]),
                    "p90_ms": float(record["90%"]),
                    "p99_ms": float(record["99%"]),
                    "mean_ms": float(record["Average Response Time"]),
                }
    raise RuntimeError(f"{path}: no row for {name!r} (did locust reach the server?)")


def to_result(row: dict[str, float], **fields: object) -> LoadResult:
    return LoadResult(
        requests=int(row["requests"]),
        failures=int(row["failures"]),
        rps=row["rps"],
        p50_ms=row["p50_ms"],
        p90_ms=row["p90_ms"],
        p99_ms=row["p99_ms"],
        mean_ms=row["mean_ms"],
        embeddings_per_s=row["embeddings_per_s"],
        mean_batch=row["mean_batch"],
        **fields,  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", type=int, default=100, help="real LFW people enrolled before the load")
    parser.add_argument("--users", type=int, default=4, help="concurrent closed-loop locust users")
    parser.add_argument("--duration", type=int, default=20, help="seconds per locust run")
    parser.add_argument("--batching", default="on,off", help="batcher settings to run: on,off")
    parser.add_argument(
        "--synthetic", default="100k", help="synthetic gallery for the large identify run (0: skip)"
    )
    parser.add_argument(
        "--experiments",
        default="none,prelu-kept,faiss-all-threads,counting-lookup,ort-1-thread",
        help="server variants for the synthetic run, 'none' = as shipped (see bench/experiments.py)",
    )
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="FACES_INTRA_OP_THREADS (0 = all cores)")
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument("--tag", default="", help="save as bench_http-TAG.json (kept beside the default run)")
    parser.add_argument("--before", type=Path, default=None, help="checkout the 'main' experiment runs from")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = start_report("bench_http", argv, tag=args.tag)
    people = enrollment_people(args.lfw_dir, max(args.faces, 100))  # the identify probes
    probes = [probe for _, _, probe in people]
    enroll_photos = [photo for _, photo, _ in people]
    modes = [part.strip() == "on" for part in args.batching.split(",") if part.strip()]
    results: list[LoadResult] = []
    startup: dict[str, float] = {}
    sequential_enroll: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="faces-bench-http-") as tmp:
        workdir = Path(tmp)
        for batching in modes:
            label = "on" if batching else "off"
            config = ServerConfig(
                workdir / f"batching-{label}", batching=batching, device=args.device, threads=args.threads
            )
            with running(config) as server:
                print(f"batcher {label}: enrolling {len(people)} people ...", flush=True)
                enrolled, seconds = enroll_people(server.url, people)
                sequential_enroll[label] = enrolled / seconds
                for user_class, operation in (("IdentifyUser", "identify"), ("EnrollUser", "enroll")):
                    print(
                        f"batcher {label}: locust {operation}, {args.users} users, {args.duration}s ...",
                        flush=True,
                    )
                    row = run_locust(
                        server,
                        user_class=user_class,
                        operation=operation,
                        users=args.users,
                        duration_s=args.duration,
                        images=probes if operation == "identify" else enroll_photos,
                        collection=COLLECTION,
                        workdir=workdir,
                    )
                    results.append(
                        to_result(
                            row,
                            scenario="LFW gallery",
                            experiment="none",
                            operation=operation,
                            batching=batching,
                            gallery=enrolled,
                            users=args.users,
                            duration_s=float(args.duration),
                        )
                    )

        synthetic = parse_count(args.synthetic)
        if synthetic:
            data_dir = workdir / "synthetic"
            print(f"synthetic: storing {fmt_count(synthetic)} vectors through the store ...", flush=True)
            startup["synthetic_insert_s"] = seed_synthetic(f"sqlite:///{data_dir / 'faces.db'}", synthetic)
            for experiment in [e.strip() for e in args.experiments.split(",") if e.strip()]:
                config = ServerConfig(
                    data_dir,
                    batching=True,
                    device=args.device,
                    threads=args.threads,
                    experiment=None if experiment in ("none", "main", "exact") else experiment,
                    repo_root=args.before.resolve() if experiment == "main" and args.before else None,
                    extra_env={"FACES_COMPRESSED_INDEX_MIN_FACES": "0"} if experiment == "exact" else None,
                )
                with running(config) as server:
                    startup[f"synthetic_{experiment}"] = server.startup_s
                    print(
                        f"synthetic ({experiment}): ready in {server.startup_s:.1f}s; locust ...", flush=True
                    )
                    row = run_locust(
                        server,
                        user_class="IdentifyUser",
                        operation="identify",
                        users=args.users,
                        duration_s=args.duration,
                        images=probes,
                        collection=SYNTHETIC_COLLECTION,
                        workdir=workdir,
                    )
                results.append(
                    to_result(
                        row,
                        scenario="synthetic gallery",
                        experiment=experiment,
                        operation="identify",
                        batching=True,
                        gallery=synthetic,
                        users=args.users,
                        duration_s=float(args.duration),
                    )
                )

    table = Table(
        title=(
            f"HTTP load, uvicorn on 127.0.0.1, locust closed loop "
            f"({args.users} users, {args.duration} s per row), {args.device}"
        ),
        columns=[
            "operation", "gallery", "batcher", "server", "requests", "failures", "req/s",
            "p50 ms", "p90 ms", "p99 ms", "embeddings/s", "mean batch",
        ],
    )  # fmt: skip
    for r in results:
        table.add(
            r.operation,
            fmt_count(r.gallery) + (" synthetic" if r.scenario == "synthetic gallery" else " LFW"),
            "on" if r.batching else "off",
            "as shipped" if r.experiment == "none" else f"+ {r.experiment}",
            r.requests,
            r.failures,
            fmt(r.rps),
            fmt(r.p50_ms),
            fmt(r.p90_ms),
            fmt(r.p99_ms),
            fmt(r.embeddings_per_s),
            fmt(r.mean_batch),
        )
    table.notes.append("locust rounds latencies above 100 ms to 2 significant digits")
    for label, rate in sequential_enroll.items():
        table.notes.append(f"sequential enrollment before the load (batcher {label}): {rate:.1f} faces/s")
    if "synthetic_insert_s" in startup:
        table.notes.append(
            f"synthetic gallery: {startup['synthetic_insert_s']:.0f} s to insert through the store; "
            "the server rebuilds its index from SQLite at start-up: "
            + ", ".join(
                f"{k.removeprefix('synthetic_')} ready in {v:.1f} s"
                for k, v in startup.items()
                if k != "synthetic_insert_s"
            )
        )
    if any(r.experiment != "none" for r in results):
        table.notes.append(
            "'+ name' rows: the server with one change undone or proposed (bench/experiments.py): "
            "prelu-kept = ONNX graphs as shipped (before the CPU PRelu rewrite), faiss-all-threads = "
            "before search_threads=1, counting-lookup = the collection lookup before the COUNT(*) fix, "
            "ort-1-thread = FACES_INTRA_OP_THREADS=1 (proposed)"
        )
    report.tables.append(table)
    report.raw = {
        "results": [asdict(r) for r in results],
        "startup": startup,
        "sequential_enroll": sequential_enroll,
    }
    finish_report(report, started)
    return report


if __name__ == "__main__":
    main()
