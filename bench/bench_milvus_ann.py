"""Approximate Milvus indexes (HNSW, IVF_FLAT) against exact FLAT, on real face embeddings.

The gallery is real faces, not random vectors: every LFW image (13,233 photos of 5,749 people) through
the service's own front end (YuNet, the face nearest the centre, ArcFace 5-point alignment) and the
shipped SFace model, nine times per photo: the aligned crop as the service makes it, its mirror image,
and seven small perturbations of the alignment (shifted 3 px right / down, zoomed 0.94x / 1.06x,
rotated -5 / +5 degrees, mirrored and zoomed 1.06x), each crop embedded by SFace. Variants of one
photo are close but not equal, as several enrollment photos of one person are. ``--queries`` photos
(of people with at least two photos) are held out: their plain crops are the identify probes, none of
their variants is in the gallery, so each probe's person is there only through other photos.

Each index is built by the service's ``MilvusIndex`` on a real Milvus 2.3.5 server (the PyPI wheel,
started here) and searched one probe per call for the top-40 hits, what ``Gallery.search`` asks for a
top-5 answer. Recall@k = share of the exact top-k (numpy, float64) found in the index's top-k. The
identify columns compare the answer at the model card's ``identify_threshold``: the top subject (the
person of the nearest face) and the match decision (its squared distance within the threshold).

    python -m bench.bench_milvus_ann                      # 110,097 faces, 1,000 probes
    python -m bench.bench_milvus_ann --milvus-uri http://host:19530   # an existing server instead

The embeddings are computed once (~119k SFace runs) and cached under ``runs/ann/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from pymilvus import MilvusClient
from tqdm import tqdm

from bench.common import (
    DEFAULT_LFW_ROOT,
    REPO_ROOT,
    LatencyStats,
    NoStore,
    Table,
    finish_report,
    fmt,
    fmt_count,
    start_report,
)
from models.evaluate_lfw import FALLBACK_SCORE, choose_face, file_digest
from service.index.milvus_index import AnnIndex, MilvusIndex
from service.runtime.alignment import AlignmentTemplate
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.detector import YuNetDetector, load_detector
from service.runtime.embedder import load_embedder
from service.runtime.imaging import decode_image
from service.runtime.model_card import ModelCard
from service.runtime.quality import QualityConfig
from service.testing.milvus_server import MilvusServer, free_port

logger = logging.getLogger(__name__)

MODEL_DIR = REPO_ROOT / "models" / "artifacts"
MAX_PIXELS = 40_000_000
CACHE_DIR = REPO_ROOT / "runs" / "ann"
DIM = 128
K = 40  # what Gallery.search asks the index for a top-5 answer
COLLECTION_PK = 1


@dataclass(frozen=True, slots=True)
class Variant:
    """A perturbation of the aligned crop: zoom and rotation about the crop centre, shift, mirror."""

    name: str
    shift: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    degrees: float = 0.0
    mirror: bool = False


VARIANTS = (
    Variant("crop"),
    Variant("mirror", mirror=True),
    Variant("shift x+3px", shift=(3.0, 0.0)),
    Variant("shift y+3px", shift=(0.0, 3.0)),
    Variant("zoom 0.94", zoom=0.94),
    Variant("zoom 1.06", zoom=1.06),
    Variant("rotate -5", degrees=-5.0),
    Variant("rotate +5", degrees=5.0),
    Variant("mirror zoom 1.06", zoom=1.06, mirror=True),
)


@dataclass(frozen=True, slots=True)
class FaceSet:
    embeddings: NDArray[np.float32]  # (images, variants, 128)
    people: NDArray[np.int64]  # (images,) person index
    names: list[str]  # person names


def variant_crop(
    image: NDArray[np.uint8], landmarks: NDArray[np.float32], template: AlignmentTemplate, variant: Variant
) -> NDArray[np.uint8]:
    """The service's aligned crop perturbed by ``variant``, warped once from the full image."""
    width, height = template.size
    to_crop = np.vstack([template.matrix(landmarks), [0.0, 0.0, 1.0]])
    around = cv2.getRotationMatrix2D((width / 2, height / 2), variant.degrees, variant.zoom)
    around[:, 2] += np.asarray(variant.shift, dtype=np.float64)
    matrix = np.vstack([around, [0.0, 0.0, 1.0]]) @ to_crop
    crop = cv2.warpAffine(
        image,
        matrix[:2],
        (width, height),
        flags=template.interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return np.ascontiguousarray(crop[:, ::-1] if variant.mirror else crop, dtype=np.uint8)


def _digest(key: object) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def lfw_landmarks(paths: list[Path], threads: int) -> NDArray[np.float32]:
    """The five landmarks of each photo's face, chosen as models/evaluate_lfw.py does (cached)."""
    detector_file = MODEL_DIR / "yunet_2023mar_fp32.onnx"
    cache = CACHE_DIR / f"landmarks_{_digest([file_digest(detector_file), len(paths)])}.npy"
    if cache.is_file():
        return np.asarray(np.load(cache), dtype=np.float32)
    embedder, _ = load_embedder(MODEL_DIR, "embedder.json", "cpu", threads)
    detector = load_detector(detector_file, "cpu", threads, 0.6, 640)
    fallback = YuNetDetector(detector.session, score_threshold=FALLBACK_SCORE, max_side=640)
    analyzer = FaceAnalyzer(detector, embedder.alignments, QualityConfig())
    out = np.full((len(paths), 5, 2), np.nan, dtype=np.float32)
    for i, path in enumerate(tqdm(paths, desc="detect", unit="img")):
        landmarks = choose_face(decode_image(path.read_bytes(), max_pixels=MAX_PIXELS), analyzer, fallback)
        if landmarks.landmarks is not None:
            out[i] = landmarks.landmarks
    faceless = np.isnan(out).any(axis=(1, 2))
    out[faceless] = np.median(out[~faceless], axis=0)  # as models/evaluate_lfw.py does
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, out)
    return out


def embed_variant(
    paths: list[Path], landmarks: NDArray[np.float32], variant: Variant, threads: int, batch: int = 64
) -> NDArray[np.float32]:
    """SFace embeddings of every photo's ``variant`` crop (cached per variant)."""
    embedder, card = load_embedder(MODEL_DIR, "embedder.json", "cpu", threads)
    key = [
        file_digest(MODEL_DIR / card.onnx_file),
        hashlib.sha256(landmarks.tobytes()).hexdigest(),
        asdict(variant),
    ]
    cache = CACHE_DIR / f"sface_{variant.name.replace(' ', '_')}_{_digest(key)}.npy"
    if cache.is_file():
        return np.asarray(np.load(cache), dtype=np.float32)
    (template,) = embedder.alignments
    out = np.zeros((len(paths), DIM), dtype=np.float32)
    for start in tqdm(range(0, len(paths), batch), desc=f"embed {variant.name}", unit="batch"):
        crops = [
            variant_crop(
                decode_image(paths[i].read_bytes(), max_pixels=MAX_PIXELS), landmarks[i], template, variant
            )
            for i in range(start, min(start + batch, len(paths)))
        ]
        out[start : start + len(crops)] = np.asarray(embedder.embed(np.stack(crops)), dtype=np.float32)
    np.save(cache, out)
    return out


def embed_lfw_variants(lfw_root: Path, n_variants: int, threads: int) -> FaceSet:
    """Every LFW photo's embeddings for the first ``n_variants`` variants."""
    paths = sorted((lfw_root / "images").glob("*/*.jpg"))
    names = sorted({p.parent.name for p in paths})
    person = {name: i for i, name in enumerate(names)}
    people = np.array([person[p.parent.name] for p in paths], dtype=np.int64)
    landmarks = lfw_landmarks(paths, threads)
    vectors = [embed_variant(paths, landmarks, v, threads) for v in VARIANTS[:n_variants]]
    return FaceSet(np.ascontiguousarray(np.stack(vectors, axis=1)), people, names)


def split(faces: FaceSet, n_queries: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Held-out probe photos (people with 2+ photos, one photo each at most) and the gallery photos."""
    counts = np.bincount(faces.people)
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(counts[faces.people] >= 2)
    rng.shuffle(candidates)
    probes, seen = [], set()
    for i in candidates:
        if int(faces.people[i]) not in seen:
            probes.append(int(i))
            seen.add(int(faces.people[i]))
        if len(probes) == n_queries:
            break
    gallery = np.setdiff1d(np.arange(len(faces.people)), probes)
    return np.asarray(sorted(probes), dtype=np.int64), gallery


@dataclass(frozen=True, slots=True)
class Build:
    index: str
    insert_s: float
    build_s: float  # flush, index build, and reload with the index


@dataclass(frozen=True, slots=True)
class Row:
    index: str
    params: str
    recall_at_1: float
    recall_at_10: float
    recall_at_40: float
    same_top_subject: float
    same_decision: float
    same_answer: float
    correct_top_subject: float
    search: LatencyStats


def build(
    uri: str, ann: AnnIndex, ids: NDArray[np.int64], vectors: NDArray[np.float32]
) -> tuple[MilvusIndex, Build]:
    name = f"ann_{ann.kind.lower()}"
    index = MilvusIndex(NoStore(), DIM, uri=uri, collection=name, ann=ann, search_consistency="Bounded")
    t0 = time.perf_counter()
    index.add(COLLECTION_PK, ids, vectors)
    t1 = time.perf_counter()
    index.flush()
    client = MilvusClient(uri=uri, timeout=60)
    (index_name,) = client.list_indexes(name)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        state = client.describe_index(name, index_name)
        if int(state.get("indexed_rows", 0)) >= len(ids) and int(state.get("pending_index_rows", 0)) == 0:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"index {ann.kind} not built in time: {state}")
    client.release_collection(name)  # reload: the query node then serves the indexed sealed segments
    client.load_collection(name)
    client.close()
    return index, Build(ann.kind, round(t1 - t0, 2), round(time.perf_counter() - t1, 2))


def measure(
    index: MilvusIndex,
    params: str,
    probes: NDArray[np.float32],
    gallery_people: NDArray[np.int64],
    probe_people: NDArray[np.int64],
    exact: NDArray[np.int64],
    exact_d2: NDArray[np.float64],
    threshold: float,
) -> Row:
    samples, hits = [], []
    for probe in probes[:20]:  # warm-up
        index.search(COLLECTION_PK, probe[None, :], K)
    for probe in probes:
        t0 = time.perf_counter()
        sims, pks = index.search(COLLECTION_PK, probe[None, :], K)
        samples.append(time.perf_counter() - t0)
        hits.append((sims[0], pks[0]))
    got = np.stack([np.pad(p, (0, K - len(p)), constant_values=-1) for _, p in hits])
    top_d2 = np.array([2.0 - 2.0 * float(s[0]) for s, _ in hits])

    def recall(k: int) -> float:
        found = [len(set(exact[i, :k]) & set(got[i, :k])) / k for i in range(len(probes))]
        return float(np.mean(found))

    exact_subject, got_subject = gallery_people[exact[:, 0]], gallery_people[got[:, 0]]
    exact_match, got_match = exact_d2[:, 0] <= threshold, top_d2 <= threshold
    same_answer = (exact_match == got_match) & (~exact_match | (exact_subject == got_subject))
    return Row(
        index=index.ann.kind,
        params=params,
        recall_at_1=recall(1),
        recall_at_10=recall(10),
        recall_at_40=recall(K),
        same_top_subject=float(np.mean(exact_subject == got_subject)),
        same_decision=float(np.mean(exact_match == got_match)),
        same_answer=float(np.mean(same_answer)),
        correct_top_subject=float(np.mean(got_subject == probe_people)),
        search=LatencyStats.from_seconds(samples),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument("--queries", type=int, default=1000, help="held-out probe photos")
    parser.add_argument(
        "--variants",
        type=int,
        default=len(VARIANTS),
        choices=range(1, len(VARIANTS) + 1),
        help="crop variants per photo in the gallery (the first N of VARIANTS)",
    )
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads for the embeddings")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construction", type=int, default=200)
    parser.add_argument("--hnsw-ef", type=int, nargs="+", default=[40, 64, 128, 256])
    parser.add_argument("--ivf-nlist", type=int, default=1024)
    parser.add_argument("--ivf-nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--milvus-uri", default="", help="use this server instead of starting one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    report = start_report("bench_milvus_ann", argv, tag=args.tag)
    faces = embed_lfw_variants(args.lfw_dir, args.variants, args.threads)
    variants = VARIANTS[: args.variants]
    probe_rows, gallery_rows = split(faces, args.queries, args.seed)
    vectors = np.ascontiguousarray(faces.embeddings[gallery_rows].reshape(-1, DIM), dtype=np.float32)
    gallery_people = np.repeat(faces.people[gallery_rows], len(variants))
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    probes = np.ascontiguousarray(faces.embeddings[probe_rows, 0], dtype=np.float32)
    probe_people = faces.people[probe_rows]
    sims = probes.astype(np.float64) @ vectors.astype(np.float64).T
    nearest = np.argpartition(-sims, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(sims, nearest, axis=1), axis=1, kind="stable")
    exact_cols = np.take_along_axis(nearest, order, axis=1)
    exact_d2 = 2.0 - 2.0 * np.take_along_axis(sims, exact_cols, axis=1)
    exact = ids[exact_cols]
    gallery_people_by_pk = np.concatenate([[-1], gallery_people])  # pk → person (pk 0 unused)
    card = ModelCard.model_validate_json((MODEL_DIR / "embedder.json").read_text())
    threshold = float(card.identify_threshold if card.identify_threshold is not None else card.threshold)
    print(
        f"gallery {fmt_count(len(vectors))} faces of {len(np.unique(gallery_people))} people, "
        f"{len(probes)} probes; identify threshold {threshold}",
        flush=True,
    )

    workdir = Path(tempfile.mkdtemp(prefix="faces-bench-ann-"))
    server = None
    rows: list[Row] = []
    builds: list[Build] = []
    try:
        uri = args.milvus_uri
        if not uri:
            server = MilvusServer(workdir / "milvus", free_port())
            server.data_dir.mkdir()
            server.start()
            uri = server.uri
        plans: list[tuple[AnnIndex, list[tuple[str, AnnIndex]]]] = [
            (AnnIndex("FLAT"), [("exact", AnnIndex("FLAT"))]),
        ]
        hnsw = AnnIndex("HNSW", hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction)
        plans.append(
            (
                hnsw,
                [
                    (
                        f"M={args.hnsw_m} efConstruction={args.hnsw_ef_construction} ef={ef}",
                        AnnIndex("HNSW", args.hnsw_m, args.hnsw_ef_construction, hnsw_ef=ef),
                    )
                    for ef in args.hnsw_ef
                ],
            )
        )
        ivf = AnnIndex("IVF_FLAT", ivf_nlist=args.ivf_nlist)
        plans.append(
            (
                ivf,
                [
                    (
                        f"nlist={args.ivf_nlist} nprobe={n}",
                        AnnIndex("IVF_FLAT", ivf_nlist=args.ivf_nlist, ivf_nprobe=n),
                    )
                    for n in args.ivf_nprobe
                ],
            )
        )
        for ann, searches in plans:
            print(f"building {ann.kind} {ann.build_params() or ''} ...", flush=True)
            index, built = build(uri, ann, ids, vectors)
            builds.append(built)
            index.close()
            for params, search_ann in searches:
                searcher = MilvusIndex(
                    NoStore(),
                    DIM,
                    uri=uri,
                    collection=f"ann_{ann.kind.lower()}",
                    ann=search_ann,
                    search_consistency="Bounded",
                )
                row = measure(
                    searcher, params, probes, gallery_people_by_pk, probe_people, exact, exact_d2, threshold
                )
                rows.append(row)
                print(
                    f"  {params}: recall@1 {row.recall_at_1:.4f} recall@10 {row.recall_at_10:.4f} "
                    f"p50 {row.search.p50_ms:.2f} ms",
                    flush=True,
                )
                searcher.close()
            cleanup = MilvusIndex(NoStore(), DIM, uri=uri, collection=f"ann_{ann.kind.lower()}", ann=ann)
            cleanup.destroy()
            cleanup.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    build_s = {b.index: b for b in builds}
    table = Table(
        title=(
            f"Milvus 2.3.5 indexes on real faces: {fmt_count(len(vectors))} SFace embeddings of LFW "
            f"(13,233 photos minus {len(probes)} held-out probes, x{len(variants)} crop variants), "
            f"top-{K} per search"
        ),
        columns=[
            "index",
            "search params",
            "recall@1",
            "recall@10",
            "same top subject",
            "same match decision",
            "same identify answer",
            "probe's person on top",
            "search p50 ms",
            "search p99 ms",
            "index build s",
        ],
    )
    for r in rows:
        table.add(
            r.index,
            r.params,
            f"{r.recall_at_1:.4f}",
            f"{r.recall_at_10:.4f}",
            f"{100 * r.same_top_subject:.1f}%",
            f"{100 * r.same_decision:.1f}%",
            f"{100 * r.same_answer:.1f}%",
            f"{100 * r.correct_top_subject:.1f}%",
            fmt(r.search.p50_ms),
            fmt(r.search.p99_ms),
            fmt(build_s[r.index].build_s),
        )
    table.notes += [
        "recall@k: share of the exact top-k (numpy float64 over the same vectors) in the index's top-k; "
        f"identify columns vs exact at the card's identify_threshold {threshold} (d²)",
        "search: one probe per MilvusIndex.search call (loopback gRPC, Bounded consistency, 1 "
        f"collection of {fmt_count(len(vectors))}); index build: flush, build and reload after the "
        "insert (insert: " + ", ".join(f"{b.index} {b.insert_s} s" for b in builds) + ")",
        "gallery variants per photo: " + ", ".join(v.name for v in variants),
    ]
    report.tables.append(table)
    report.raw = {
        "gallery": len(vectors),
        "people": len(np.unique(gallery_people)),
        "probes": len(probes),
        "variants": [asdict(v) for v in variants],
        "identify_threshold": threshold,
        "k": K,
        "builds": [asdict(b) for b in builds],
        "rows": [asdict(r) for r in rows],
        "correct_top_subject": {f"{r.index} {r.params}": r.correct_top_subject for r in rows},
    }
    finish_report(report, started)


if __name__ == "__main__":
    main()
