"""Where an identify request spends its time, stage by stage, in-process (no HTTP), by gallery size.

Runs the service's own objects the way ``domain.search.identify`` chains them: collection lookup,
decode, detect+align+quality, embed, then ``Gallery.search`` (FAISS top-k, owners of the hits from
the store). The gallery is synthetic vectors stored through ``FaceStore`` and indexed by
``IndexRegistry`` exactly as at server start-up. Every stage is timed on every probe, interleaved,
so machine noise hits all stages alike. Beside each shipped stage, what it was before the change
that made it faster (same probes, same loop), and the request totals with each change undone:

* embed with SFace's PRelu as shipped in the ONNX file (before the CPU graph rewrite);
* FAISS top-k on all OpenMP threads (before ``search_threads=1``);
* two collection lookups that each ran ``COUNT(*)`` (before ``collection_pk`` and the single lookup).

    python -m bench.bench_stages                 # 1k and 100k faces
    python -m bench.bench_stages --full          # + 1M faces (minutes of SQLite inserts)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

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
from service.index.flat_index import CollectionIndex
from service.runtime.embedder import load_embedder
from service.runtime.imaging import decode_image
from service.settings import Settings
from service.storage.store import FaceStore

T = TypeVar("T")
P = ParamSpec("P")

LOOKUP = "collection lookup (store.collection_pk)"
DECODE = "decode"
DETECT = "detect+align+quality"
EMBED = "embed"
SEARCH = "Gallery.search total"
SEARCH_FAISS = "  of which FAISS top-k"
SEARCH_OWNERS = "  of which faces_by_pk"
EMBED_BEFORE = "embed, PRelu as shipped (before the CPU graph rewrite)"
FAISS_BEFORE = "FAISS top-k, all OpenMP threads (before search_threads=1)"
LOOKUP_BEFORE = "lookup with COUNT(*)s (store.get_collection, before collection_pk)"
STAGES = [
    LOOKUP, DECODE, DETECT, EMBED, SEARCH, SEARCH_FAISS, SEARCH_OWNERS,
    EMBED_BEFORE, FAISS_BEFORE, LOOKUP_BEFORE,
]  # fmt: skip
SHIPPED = (LOOKUP, DECODE, DETECT, EMBED, SEARCH)
TOTALS = {
    "request total, as shipped (lookup + decode + detect + embed + search)": "request_ms_shipped",
    "request total, PRelu as shipped (before the rewrite)": "request_ms_before_rewrite",
    "request total, + FAISS on all threads (before search_threads=1)": "request_ms_before_faiss_threads",
    "request total, + 2 counting lookups (before the lookup fixes)": "request_ms_before_lookup_fixes",
}


@dataclass(frozen=True, slots=True)
class StageCase:
    faces: int
    probes: int
    stages: dict[str, LatencyStats]
    request_ms_shipped: float
    request_ms_before_rewrite: float
    request_ms_before_faiss_threads: float
    request_ms_before_lookup_fixes: float


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
        seed.collections.create_collection(SYNTHETIC_COLLECTION)
        seed.close()
    store = FaceStore.from_url(url)
    registry = IndexRegistry(store.faces, 128, workdir / f"index-{faces}", use_gpu=False)
    registry.load_all([c.pk for c in store.collections.list_collections()])
    gallery = Gallery(store, registry)
    coll_pk = store.collections.collection_pk(SYNTHETIC_COLLECTION)
    index = registry.get(coll_pk)
    # The same vectors behind an index that lets FAISS use every OpenMP thread (the old default).
    all_threads = CollectionIndex(128, search_threads=os.cpu_count() or 1)
    for ids, vectors in store.faces.iter_embeddings(coll_pk):
        all_threads.add(ids, vectors)

    embedder, _, analyzer = load_face_models(settings)
    embedder_before, _ = load_embedder(
        settings.model_dir,
        settings.embedder_card,
        settings.execution_provider,
        settings.intra_op_threads,
        cpu_graph_rewrites=False,
    )
    k = max(top_k * 8, 32)  # what ranking.search_subjects asks FAISS for first

    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    warm = decode_image(probes[0], max_pixels=settings.max_image_pixels)
    warm_crops = np.stack([f.crop for f in analyzer.analyze(warm)] or [np.zeros((112, 112, 3), np.uint8)])
    embedder.embed(warm_crops)
    embedder_before.embed(warm_crops)
    for _ in range(repeats):
        for data in probes:
            pk = clock(samples[LOOKUP], store.collections.collection_pk, SYNTHETIC_COLLECTION)
            image = clock(samples[DECODE], decode_image, data, max_pixels=settings.max_image_pixels)
            found = clock(samples[DETECT], analyzer.analyze, image, max_faces=settings.default_max_faces)
            if not found:
                continue
            crops = np.ascontiguousarray(np.stack([f.crop for f in found]))
            queries = clock(samples[EMBED], embedder.embed, crops)
            clock(samples[SEARCH], gallery.search, pk, queries, top_k)
            # The parts of Gallery.search, timed again on their own.
            _, hit_pks = clock(samples[SEARCH_FAISS], index.search, queries[:1], k)
            clock(samples[SEARCH_OWNERS], store.faces.faces_by_pk, [int(pk) for pk in hit_pks[0] if pk >= 0])
            # The same work before each speed-up.
            clock(samples[EMBED_BEFORE], embedder_before.embed, crops)
            clock(samples[FAISS_BEFORE], all_threads.search, queries[:1], k)
            clock(samples[LOOKUP_BEFORE], store.collections.get_collection, SYNTHETIC_COLLECTION)
    store.close()

    stats = {stage: LatencyStats.from_seconds(values) for stage, values in samples.items()}
    mean = {stage: stats[stage].mean_ms for stage in STAGES}
    shipped = sum(mean[s] for s in SHIPPED)
    before_rewrite = shipped - mean[EMBED] + mean[EMBED_BEFORE]
    before_faiss = before_rewrite - mean[SEARCH_FAISS] + mean[FAISS_BEFORE]
    before_lookups = before_faiss - mean[LOOKUP] + 2 * mean[LOOKUP_BEFORE]
    return StageCase(faces, len(probes), stats, shipped, before_rewrite, before_faiss, before_lookups)


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
    for label, attr in TOTALS.items():
        row = [label]
        for case in cases:
            row += [fmt(float(getattr(case, attr))), ""]
        table.add(*row)
    table.notes.append(
        "each 'before' total undoes one more change, cumulatively: the PRelu rewrite (embed), then the "
        "1-thread FAISS default (top-k), then the lookup fixes (identify used to resolve its collection "
        "twice, each time with COUNT(*) over the collection's subjects and faces)"
    )
    report.tables.append(table)
    report.raw = {
        "cases": [asdict(c) | {"stages": {s: asdict(v) for s, v in c.stages.items()}} for c in cases]
    }
    finish_report(report, started)
    return report


if __name__ == "__main__":
    main()
