"""Where an identify request spends its time, stage by stage, in-process (no HTTP), by gallery size.

Runs the service's own objects the way ``domain.search.identify`` chains them: collection lookup,
decode, detect+align+quality, embed, then ``Gallery.search`` (lookup again, FAISS top-k, owners of
the hits from the store). The gallery is synthetic vectors stored through ``FaceStore`` and indexed
by ``IndexRegistry`` exactly as at server start-up. Every stage is timed on every probe,
interleaved, so machine noise hits all stages alike. Beside the shipped stages: the old counting
lookup (``get_collection``, before ``collection_pk``) and a batch-1 FAISS search on one OpenMP
thread (proposed).

    python -m bench.bench_stages                 # 1k and 100k faces
    python -m bench.bench_stages --full          # + 1M faces (minutes of SQLite inserts)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import faiss
import numpy as np

from bench.bench_pipeline import pick_images
from bench.common import (
    DEFAULT_LFW_ROOT,
    LatencyStats,
    Report,
    Table,
    finish_report,
    fmt,
    fmt_count,
    parse_counts,
    start_report,
)
from bench.server import SYNTHETIC_COLLECTION, seed_synthetic
from service.bootstrap import load_face_models
from service.domain.gallery import Gallery
from service.index.faiss_index import IndexRegistry
from service.runtime.imaging import decode_image
from service.settings import Settings
from service.storage.store import FaceStore

T = TypeVar("T")
P = ParamSpec("P")

STAGES = [
    "collection lookup (store.collection_pk)",
    "decode",
    "detect+align+quality",
    "embed",
    "Gallery.search total",
    "  of which collection lookup",
    "  of which FAISS top-k",
    "  of which faces_by_pk",
    "lookup with COUNT(*)s (store.get_collection, before the fix)",
    "FAISS top-k, 1 OpenMP thread (proposed)",
]


@dataclass(frozen=True, slots=True)
class StageCase:
    faces: int
    probes: int
    stages: dict[str, LatencyStats]
    request_ms_before_fix: float
    request_ms_shipped: float
    request_ms_proposed: float


def clock(into: list[float], fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    into.append(time.perf_counter() - t0)
    return result


def measure(
    faces: int, workdir: Path, probes: list[bytes], settings: Settings, top_k: int, repeats: int
) -> StageCase:
    url = f"sqlite:///{workdir / f'stages-{faces}.db'}"
    if faces:
        seed_synthetic(url, faces)
    else:
        seed = FaceStore.from_url(url)
        seed.create_collection(SYNTHETIC_COLLECTION)
        seed.close()
    store = FaceStore.from_url(url)
    registry = IndexRegistry(store, 128, workdir / f"index-{faces}", use_gpu=False)
    registry.load_all([c.pk for c in store.list_collections()])
    gallery = Gallery(store, registry)

    embedder, _, analyzer = load_face_models(settings)
    coll_pk = store.get_collection(SYNTHETIC_COLLECTION).pk
    index = registry.get(coll_pk)
    k = max(top_k * 8, 32)  # what Gallery._rank_subjects asks FAISS for first

    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    threads = faiss.omp_get_max_threads()
    warm = decode_image(probes[0], max_pixels=settings.max_image_pixels)
    embedder.embed(np.stack([f.crop for f in analyzer.analyze(warm)] or [np.zeros((112, 112, 3), np.uint8)]))
    for _ in range(repeats):
        for data in probes:
            clock(samples[STAGES[0]], store.collection_pk, SYNTHETIC_COLLECTION)
            image = clock(samples[STAGES[1]], decode_image, data, max_pixels=settings.max_image_pixels)
            found = clock(samples[STAGES[2]], analyzer.analyze, image, max_faces=settings.default_max_faces)
            if not found:
                continue
            crops = np.ascontiguousarray(np.stack([f.crop for f in found]))
            queries = clock(samples[STAGES[3]], embedder.embed, crops)
            clock(samples[STAGES[4]], gallery.search, SYNTHETIC_COLLECTION, queries, top_k)
            # The parts of Gallery.search, timed again on their own.
            clock(samples[STAGES[5]], store.collection_pk, SYNTHETIC_COLLECTION)
            _, hit_pks = clock(samples[STAGES[6]], index.search, queries[:1], k)
            clock(samples[STAGES[7]], store.faces_by_pk, [int(pk) for pk in hit_pks[0] if pk >= 0])
            clock(samples[STAGES[8]], store.get_collection, SYNTHETIC_COLLECTION)
            faiss.omp_set_num_threads(1)
            clock(samples[STAGES[9]], index.search, queries[:1], k)
            faiss.omp_set_num_threads(threads)
    store.close()

    stats = {stage: LatencyStats.from_seconds(values) for stage, values in samples.items()}
    lookup = stats[STAGES[0]].mean_ms
    counting_lookup = stats[STAGES[8]].mean_ms
    shipped_total = sum(stats[s].mean_ms for s in STAGES[:5])
    before_fix = shipped_total - 2 * lookup + 2 * counting_lookup
    faiss_saving = stats[STAGES[6]].mean_ms - stats[STAGES[9]].mean_ms
    return StageCase(faces, len(probes), stats, before_fix, shipped_total, shipped_total - faiss_saving)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1k,100k", help="gallery sizes, e.g. 1k,100k,1M")
    parser.add_argument("--full", action="store_true", help="add the 1M gallery")
    parser.add_argument("--probes", type=int, default=32, help="LFW probe photos")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the probes")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_ROOT)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = start_report("bench_stages", argv)
    settings = Settings(execution_provider="cpu")
    sizes = parse_counts(args.sizes)
    if args.full and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    probes = [p.read_bytes() for p in pick_images(args.lfw_dir, args.probes)]

    cases: list[StageCase] = []
    with tempfile.TemporaryDirectory(prefix="faces-bench-stages-") as tmp:
        for faces in sizes:
            print(f"{fmt_count(faces)} faces ...", flush=True)
            cases.append(measure(faces, Path(tmp), probes, settings, args.top_k, args.repeats))

    columns = ["stage"]
    for case in cases:
        columns += [f"{fmt_count(case.faces)} mean ms", f"{fmt_count(case.faces)} p99 ms"]
    table = Table(
        title=(
            f"Identify request, stage by stage (in-process, CPU, {args.probes} LFW probes × {args.repeats})"
        ),
        columns=columns,
    )
    for stage in STAGES:
        row = [stage]
        for case in cases:
            row += [fmt(case.stages[stage].mean_ms), fmt(case.stages[stage].p99_ms)]
        table.add(*row)
    totals = {
        "request total, before the lookup fix (2 × get_collection)": "request_ms_before_fix",
        "request total, as shipped (2 lookups + decode + detect + embed + search)": "request_ms_shipped",
        "request total, + FAISS on 1 OpenMP thread (proposed)": "request_ms_proposed",
    }
    for label, attr in totals.items():
        row = [label]
        for case in cases:
            row += [fmt(float(getattr(case, attr))), ""]
        table.add(*row)
    table.notes.append(
        "identify() resolves the collection once itself and once more inside Gallery.search; "
        "before the fix each lookup ran COUNT(*) over the collection's subjects and faces"
    )
    report.tables.append(table)
    report.raw = {
        "cases": [asdict(c) | {"stages": {s: asdict(v) for s, v in c.stages.items()}} for c in cases]
    }
    finish_report(report, started)
    return report


if __name__ == "__main__":
    main()
