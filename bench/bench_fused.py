"""The fused SFace + dlib model beside SFace alone: detect + align + embed images/s, same images, one run.

Each model runs the service's own pipeline (``FaceAnalyzer``: YuNet → one aligned crop per model input →
quality; then the ONNX embedder), largest face of each of the same decoded LFW images, batch 1 and 32,
best of ``--repeats`` runs interleaved between the two models after a warm-up. The flip rows add
horizontal-flip test-time averaging (each face also embedded mirrored, the two unit vectors
averaged): its cost, beside its accuracy in ``models/train/results/fusion``.

    python -m bench.bench_fused --fused-dir models/artifacts/fused_sface_dlib
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.bench_pipeline import pick_images
from bench.common import DEFAULT_LFW_ROOT, Report, Table, finish_report, fmt, start_report
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.embedder import OnnxEmbedder, load_detector, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.onnx_session import active_provider
from service.runtime.quality import QualityConfig
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Row:
    model: str
    stage: str
    batch: int
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def embed_faces(embedder: OnnxEmbedder, faces: list[tuple[NDArray[np.uint8], ...]], flip: bool) -> None:
    """One embedder call for these faces (and their mirrors, averaged, when ``flip``)."""
    per_input = [np.stack([face[i] for face in faces]) for i in range(len(faces[0]))]
    vectors = embedder.embed(per_input)
    if flip:
        mirrored = embedder.embed([np.ascontiguousarray(a[:, :, ::-1]) for a in per_input])
        merged = vectors + mirrored
        merged /= np.linalg.norm(merged, axis=1, keepdims=True)


def pipeline(
    images: list[NDArray[np.uint8]], analyzer: FaceAnalyzer, embedder: OnnxEmbedder, batch: int, flip: bool
) -> Callable[[], int]:
    def run() -> int:
        pending: list[tuple[NDArray[np.uint8], ...]] = []
        for image in images:
            faces = analyzer.analyze(image, max_faces=1)
            if faces:
                pending.append(faces[0].crops)
            if len(pending) >= batch:
                embed_faces(embedder, pending, flip)
                pending.clear()
        if pending:
            embed_faces(embedder, pending, flip)
        return len(images)

    return run


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument("--base-dir", type=Path, default=REPO_ROOT / "models" / "artifacts")
    parser.add_argument(
        "--fused-dir", type=Path, default=REPO_ROOT / "models" / "artifacts" / "fused_sface_dlib"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = start_report("bench_fused", argv)
    settings = Settings()
    paths = pick_images(args.lfw_dir, args.images)
    images = [decode_image(p.read_bytes(), max_pixels=settings.max_image_pixels) for p in paths]
    providers: dict[str, str] = {}
    setups: list[tuple[str, FaceAnalyzer, OnnxEmbedder]] = []
    for model_dir in (args.base_dir, args.fused_dir):
        embedder, card = load_embedder(model_dir, settings.embedder_card, "cpu", args.threads)
        detector = load_detector(
            model_dir / settings.detector_model,
            "cpu",
            args.threads,
            settings.detector_score_threshold,
            settings.detection_max_side,
        )
        setups.append((card.name, FaceAnalyzer(detector, embedder.alignments, QualityConfig()), embedder))
        providers[card.name] = active_provider(embedder.session)
    rows: list[Row] = []
    for flip in (False, True):
        for batch in (1, 32):
            stage = "detect+align+embed" + (" + flip TTA" if flip else "")
            runs = [
                (name, pipeline(images, analyzer, embedder, batch, flip))
                for name, analyzer, embedder in setups
            ]
            for _, run in runs:
                run()  # warm-up
            # Interleaved: SFace, fused, SFace, fused, ... so both see the same background load.
            best = {name: float("inf") for name, _ in runs}
            for _ in range(args.repeats):
                for name, run in runs:
                    began = time.perf_counter()
                    run()
                    best[name] = min(best[name], time.perf_counter() - began)
            for name, _ in runs:
                rows.append(Row(name, stage, batch, len(images), best[name]))
                print(f"{name} {stage} batch {batch}: {len(images) / best[name]:.1f} images/s", flush=True)

    base = rows[0].model
    base_rate = {(r.stage, r.batch): r.images_per_s for r in rows if r.model == base}
    table = Table(
        title=f"Fused model vs SFace: detect + align + embed, {len(images)} LFW images (250×250), CPU",
        columns=["model", "stage", "batch", "images/s", "ms/image", f"÷ {base} (same stage)"],
    )
    for r in rows:
        table.add(
            r.model,
            r.stage,
            str(r.batch),
            fmt(r.images_per_s),
            fmt(1000.0 * r.seconds / r.images),
            fmt(r.images_per_s / base_rate[(r.stage, r.batch)]) + "×",
        )
    table.notes.append(
        f"same decoded images, largest face, service pipeline (FaceAnalyzer + OnnxEmbedder, CPU graph "
        f"rewrites on), ORT threads {args.threads or 'all'}, best of {args.repeats} interleaved runs "
        "(SFace, fused, SFace, ...) after a warm-up; flip TTA embeds each face and its mirror"
    )
    report.tables.append(table)
    report.raw = {
        "results": [asdict(r) | {"images_per_s": r.images_per_s} for r in rows],
        "images": [str(p.relative_to(args.lfw_dir)) for p in paths],
        "providers": providers,
    }
    finish_report(report, started)
    return report


if __name__ == "__main__":
    main()
