"""Self-calibration cost (``POST /v1/collections/{c}/calibrate``) on synthetic collections in SQLite.

The same domain call the endpoint makes (``calibrate_collection``): read every embedding of the
collection from the store, then each sampled probe face against all the other subjects' faces
(leave-one-subject-out, batched matrix products), and the threshold for the target FPIR. Synthetic
subjects have 5 faces each around a random centre, so both distributions (strangers and genuine
faces) exist.

    python -m bench.bench_calibrate                  # 10k, 100k faces
    python -m bench.bench_calibrate --full           # + 1M
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.common import (
    Report,
    Table,
    cpu_busy_fraction,
    finish_report,
    fmt,
    fmt_count,
    load_average,
    parse_counts,
    start_report,
)
from service.domain.calibration import MAX_PROBES, CalibrationSlot, calibrate_collection, load_embeddings
from service.domain.gallery import Gallery
from service.domain.thresholds import ThresholdInForce, ThresholdPolicy
from service.index.faiss_index import IndexRegistry
from service.storage.store import FaceStore
from service.testing.synthetic import bulk_insert_synthetic

DIM = 128
FACES_PER_SUBJECT = 5
COLLECTION = "calibration"
TARGET_FPIR = 0.01
# Face-to-centre noise: genuine d² around 0.8, strangers around 2 (the shipped model's LFW picture).
NOISE = 1.0


@dataclass(frozen=True, slots=True)
class CalibrationCase:
    faces: int
    subjects: int
    probes: int
    sampled: bool
    seed_s: float
    load_s: float
    compute_s: float
    endpoint_s: list[float]  # calibrate_collection end to end, each repeat
    endpoint_best_s: float
    recommended: float
    estimated_fpir: float
    genuine_accept_rate: float | None
    peak_rss_mib: float


def synthetic_faces(n: int, seed: int) -> NDArray[np.float32]:
    """``n`` unit vectors, FACES_PER_SUBJECT consecutive rows per subject around its own centre."""
    rng = np.random.default_rng(seed)
    subjects = (n + FACES_PER_SUBJECT - 1) // FACES_PER_SUBJECT
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, subjects, 20_000):
        stop = min(subjects, start + 20_000)
        centres = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        faces = np.repeat(centres, FACES_PER_SUBJECT, axis=0)
        faces += NOISE * rng.standard_normal(faces.shape, dtype=np.float32) / np.sqrt(DIM)
        faces /= np.linalg.norm(faces, axis=1, keepdims=True)
        lo = start * FACES_PER_SUBJECT
        hi = min(n, stop * FACES_PER_SUBJECT)
        out[lo:hi] = faces[: hi - lo]
    return out


def measure(faces: int, workdir: Path, repeats: int) -> CalibrationCase:
    url = f"sqlite:///{workdir / f'calibrate-{faces}.db'}"
    store = FaceStore.from_url(url)
    started = time.perf_counter()
    store.collections.create_collection(COLLECTION)
    vectors = synthetic_faces(faces, seed=faces)
    for start in range(0, faces, 100_000):
        bulk_insert_synthetic(
            store, COLLECTION, f"s{start}-", vectors[start : start + 100_000], FACES_PER_SUBJECT
        )
    del vectors
    gc.collect()
    seed_s = time.perf_counter() - started
    pk = store.collections.collection_pk(COLLECTION)
    # Calibration reads the store through the gallery; its (unloaded) index is never searched.
    gallery = Gallery(store, IndexRegistry(store.faces, DIM, workdir / "index"))

    t0 = time.perf_counter()
    loaded, _ = load_embeddings(gallery, pk)
    load_s = time.perf_counter() - t0
    del loaded
    gc.collect()

    policy = ThresholdPolicy(ThresholdInForce(1.4, "model_card"), ThresholdInForce(1.4, "model_card"))
    slot = CalibrationSlot()
    endpoint: list[float] = []
    outcome = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        outcome = calibrate_collection(
            gallery, policy, slot, COLLECTION, target_fpir=TARGET_FPIR, apply=False
        )
        endpoint.append(time.perf_counter() - t0)
    assert outcome is not None
    result = outcome.result
    store.close()
    return CalibrationCase(
        faces=faces,
        subjects=result.subjects,
        probes=result.impostor_probes,
        sampled=result.sampled,
        seed_s=seed_s,
        load_s=load_s,
        compute_s=result.seconds,
        endpoint_s=endpoint,
        endpoint_best_s=min(endpoint),
        recommended=result.recommended.threshold,
        estimated_fpir=result.recommended.estimated_fpir,
        genuine_accept_rate=result.recommended.genuine_accept_rate,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=parse_counts, default=None, help="faces, e.g. 10k,100k")
    parser.add_argument("--full", action="store_true", help="add 1M faces")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="SQLite files (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = args.sizes or ([10_000, 100_000, 1_000_000] if args.full else [10_000, 100_000])
    report: Report = start_report("bench_calibrate", argv)
    report.machine["loadavg_start"] = load_average()
    report.machine["cpu_busy_at_start"] = cpu_busy_fraction()
    started = time.perf_counter()
    cases: list[CalibrationCase] = []
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-", dir=args.workdir) as tmp:
        for faces in sizes:
            print(f"calibrate at {fmt_count(faces)} faces ...", flush=True)
            cases.append(measure(faces, Path(tmp), args.repeats))
    table = Table(
        title=f"Self-calibration (target FPIR {TARGET_FPIR:g}), SQLite store, synthetic {FACES_PER_SUBJECT} "
        "faces per subject",
        columns=[
            "faces",
            "subjects",
            "probes",
            "read embeddings s",
            "leave-one-subject-out s",
            "endpoint s (best of repeats)",
            "recommended d²",
            "est. FPIR",
            "genuine accept",
            "peak RSS MiB",
        ],
    )
    for c in cases:
        table.add(
            fmt_count(c.faces),
            fmt_count(c.subjects),
            f"{c.probes}{' (sampled)' if c.sampled else ''}",
            fmt(c.load_s),
            fmt(c.compute_s),
            fmt(c.endpoint_best_s),
            f"{c.recommended:.4f}",
            f"{c.estimated_fpir:.4f}",
            f"{c.genuine_accept_rate:.4f}" if c.genuine_accept_rate is not None else "n/a",
            fmt(c.peak_rss_mib),
        )
    table.notes.append(
        f"probes sampled beyond {MAX_PROBES} faces; endpoint = read embeddings + compute + collection "
        f"lookup, {args.repeats} repeats"
    )
    report.tables.append(table)
    report.raw = {"target_fpir": TARGET_FPIR, "cases": [asdict(c) for c in cases]}
    finish_report(report, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
