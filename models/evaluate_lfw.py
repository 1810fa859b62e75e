"""LFW View 2 (6000 pairs, 10 folds) end to end through the service's own decode → detect → align → embed.

    python -m models.evaluate_lfw --model-dir models/artifacts [--update-card] [--out DIR]

Face choice: LFW centres its subject but many images hold several faces, so the detected face whose
box centre is nearest the image centre is used (the service itself takes the largest). Images where
the detector finds nothing at its normal threshold are retried with a very low threshold (highest
score wins); if that finds nothing either, the median landmarks of all detected LFW images are used
(a fixed centre crop). The counts of both fallbacks go into the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from models.lfw import (
    LfwPair,
    evaluate_verification,
    plot_histogram,
    plot_roc,
    read_pairs,
    save_npz_atomic,
)
from service.runtime.alignment import AlignmentTemplate
from service.runtime.analyzer import AnalyzedFace, FaceAnalyzer
from service.runtime.detector import YuNetDetector, load_detector
from service.runtime.embedder import OnnxEmbedder, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.model_card import LfwResult, ModelCard
from service.runtime.onnx_session import ExecutionProvider, active_provider
from service.runtime.quality import QualityConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LFW_DIR = REPO_ROOT.parent / "shared" / "data" / "lfw"
DEFAULT_OUT = REPO_ROOT / "runs" / "lfw"
FALLBACK_SCORE = 0.05
MAX_PIXELS = 40_000_000


@dataclass(frozen=True, slots=True)
class FaceChoice:
    landmarks: NDArray[np.float32] | None  # None: no face even at the low threshold
    method: str  # "centre_face", "low_score_face" or "median_landmarks"
    faces_found: int


def nearest_centre(faces: list[AnalyzedFace], width: int, height: int) -> AnalyzedFace:
    centre = np.array([width / 2.0, height / 2.0])

    def distance(face: AnalyzedFace) -> float:
        x, y, w, h = face.face.box
        return float(np.hypot(x + w / 2.0 - centre[0], y + h / 2.0 - centre[1]))

    return min(faces, key=distance)


def choose_face(image: NDArray[np.uint8], analyzer: FaceAnalyzer, fallback: YuNetDetector) -> FaceChoice:
    height, width = image.shape[:2]
    faces = analyzer.analyze(image)
    if faces:
        chosen = nearest_centre(faces, width, height)
        return FaceChoice(chosen.face.landmarks, "centre_face", len(faces))
    weak = fallback.detect(image)
    if weak:
        best = max(weak, key=lambda face: face.score)
        return FaceChoice(best.landmarks, "low_score_face", 0)
    return FaceChoice(None, "median_landmarks", 0)


def alignment_label(alignment: AlignmentTemplate) -> str:
    names = {cv2.INTER_CUBIC: "bicubic", cv2.INTER_LINEAR: "bilinear"}
    return f"{alignment.name}, {names.get(alignment.interpolation, str(alignment.interpolation))}"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def embed_images(
    paths: list[Path],
    analyzer: FaceAnalyzer,
    fallback: YuNetDetector,
    embedder: OnnxEmbedder,
    batch_size: int,
) -> tuple[dict[Path, NDArray[np.float32]], dict[Path, str]]:
    """Choose a face per image and embed aligned crops in batches, streaming (LFW never sits in memory)."""
    embeddings: dict[Path, NDArray[np.float32]] = {}
    methods: dict[Path, str] = {}
    pending: list[tuple[Path, tuple[NDArray[np.uint8], ...]]] = []
    faceless: dict[Path, NDArray[np.uint8]] = {}
    found: list[NDArray[np.float32]] = []

    def flush() -> None:
        if pending:
            # one array per model input (the card's alignments), rows in ``pending`` order
            per_input = zip(*(crops for _, crops in pending), strict=True)
            vectors = embedder.embed(tuple(np.stack(crops) for crops in per_input))
            embeddings.update(zip([path for path, _ in pending], vectors, strict=True))
            pending.clear()

    for path in tqdm(paths, desc="detect+align+embed", unit="img"):
        image = decode_image(path.read_bytes(), max_pixels=MAX_PIXELS)
        choice = choose_face(image, analyzer, fallback)
        methods[path] = choice.method
        if choice.landmarks is None:
            faceless[path] = image
            continue
        found.append(choice.landmarks)
        pending.append((path, analyzer.align(image, choice.landmarks)))
        if len(pending) >= batch_size:
            flush()
    if faceless:
        if not found:
            raise RuntimeError("no face detected in any image")
        median = np.median(np.stack(found), axis=0).astype(np.float32)
        logger.warning("%d images without any detection: median landmarks used", len(faceless))
        for path, image in faceless.items():
            pending.append((path, analyzer.align(image, median)))
    flush()
    return embeddings, methods


def load_cache(cache: Path, key: str) -> tuple[dict[str, NDArray[np.float32]], dict[str, str]]:
    if not cache.is_file():
        return {}, {}
    with np.load(cache, allow_pickle=False) as data:
        if str(data["key"]) != key:
            return {}, {}
        names = [str(n) for n in data["names"]]
        vectors = data["embeddings"].astype(np.float32)
        methods = [str(m) for m in data["methods"]]
    return dict(zip(names, vectors, strict=True)), dict(zip(names, methods, strict=True))


def save_cache(
    cache: Path, key: str, vectors: dict[str, NDArray[np.float32]], methods: dict[str, str]
) -> None:
    names = sorted(vectors)
    save_npz_atomic(
        cache,
        key=np.array(key),
        names=np.array(names),
        embeddings=np.stack([vectors[n] for n in names]),
        methods=np.array([methods[n] for n in names]),
    )


@dataclass(frozen=True, slots=True)
class LfwEmbeddings:
    """One embedding per LFW image (keyed by ``Person/Person_NNNN.jpg``) and how its face was chosen."""

    vectors: dict[str, NDArray[np.float32]]
    methods: dict[str, str]
    embedder: OnnxEmbedder
    card: ModelCard


def embed_lfw_images(args: argparse.Namespace, paths: list[Path], cache_name: str) -> LfwEmbeddings:
    """``paths`` through the service's pipeline (decode → YuNet → face choice → card's alignments →
    embed), cached in ``args.out / cache_name`` under a key of everything that changes the vectors.

    Shared by the verification (``evaluate_lfw``) and open-set (``evaluate_openset``) evaluations; it
    reads ``model_dir``, ``card``, ``detector``, ``provider``, ``threads``, ``score_threshold``,
    ``max_side``, ``min_side``, ``batch_size``, ``lfw_dir``, ``out`` and ``no_cache`` from ``args``.
    """
    provider: ExecutionProvider = args.provider
    embedder, card = load_embedder(args.model_dir, args.card, provider, args.threads)
    images_dir = args.lfw_dir / "images"
    key = json.dumps(
        {
            "embedder": file_digest(args.model_dir / card.onnx_file),
            "detector": file_digest(args.model_dir / args.detector),
            "input": [spec.model_dump() for spec in card.model_inputs],
            "score_threshold": args.score_threshold,
            "max_side": args.max_side,
            "min_side": args.min_side,
            "align_interpolation": [a.interpolation for a in embedder.alignments],
            "method": "centre_face/low_score_face/median_landmarks v1",
        },
        sort_keys=True,
    )
    cache = args.out / cache_name
    names = [str(p.relative_to(images_dir)) for p in paths]
    cached, cached_methods = ({}, {}) if args.no_cache else load_cache(cache, key)
    if all(n in cached for n in names):
        logger.info("all %d embeddings from %s", len(names), cache)
        return LfwEmbeddings(
            {n: cached[n] for n in names}, {n: cached_methods[n] for n in names}, embedder, card
        )
    detector = load_detector(
        args.model_dir / args.detector,
        provider,
        args.threads,
        args.score_threshold,
        args.max_side,
        min_side=args.min_side,
    )
    # Same session, near-zero threshold: only consulted when the real detector finds nothing.
    fallback = YuNetDetector(
        detector.session, score_threshold=FALLBACK_SCORE, max_side=args.max_side, min_side=args.min_side
    )
    analyzer = FaceAnalyzer(detector, embedder.alignments, QualityConfig())
    by_path, methods_by_path = embed_images(paths, analyzer, fallback, embedder, args.batch_size)
    vectors = {str(p.relative_to(images_dir)): v for p, v in by_path.items()}
    methods = {str(p.relative_to(images_dir)): m for p, m in methods_by_path.items()}
    save_cache(cache, key, vectors, methods)
    return LfwEmbeddings(vectors, methods, embedder, card)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``embed_lfw_images`` reads (model, detector, LFW location, runtime, cache), shared
    by the verification and open-set evaluations; each adds its own ``--out`` and protocol options."""
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "artifacts")
    parser.add_argument("--card", default="embedder.json", help="model card file inside --model-dir")
    parser.add_argument(
        "--detector", default="yunet_2023mar_fp32.onnx", help="detector file inside --model-dir"
    )
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_DIR)
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    parser.add_argument("--score-threshold", type=float, default=0.6, help="detector score threshold")
    parser.add_argument("--max-side", type=int, default=640, help="detection downscale limit")
    parser.add_argument(
        "--min-side",
        type=int,
        default=0,
        help="upscale smaller images to this shorter side before detection (0: off; the service's "
        "FACES_DETECTION_MIN_SIDE)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-cache", action="store_true", help="ignore and overwrite the embedding cache")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_pipeline_arguments(parser)
    parser.add_argument("--pairs", default="pairs.txt", help="pairs file inside --lfw-dir")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="report, ROC/histogram PNGs, embedding cache"
    )
    parser.add_argument(
        "--update-card", action="store_true", help="write metrics and threshold into the card"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raw_argv = sys.argv[1:] if argv is None else argv
    command = "python -m models.evaluate_lfw " + shlex.join(raw_argv)

    pairs: list[LfwPair] = read_pairs(args.lfw_dir / args.pairs, args.lfw_dir / "images")
    images_dir = args.lfw_dir / "images"
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    embedded = embed_lfw_images(args, paths, "embeddings_cache.npz")
    vectors, methods, embedder, card = embedded.vectors, embedded.methods, embedded.embedder, embedded.card

    a = np.stack([vectors[str(p.path_a.relative_to(images_dir))] for p in pairs]).astype(np.float64)
    b = np.stack([vectors[str(p.path_b.relative_to(images_dir))] for p in pairs]).astype(np.float64)
    distances = np.clip(((a - b) ** 2).sum(axis=1), 0.0, 4.0)
    same = np.array([p.same for p in pairs], dtype=np.bool_)
    folds = np.array([p.fold for p in pairs], dtype=np.int64)
    report = evaluate_verification(distances, same, folds)

    method_counts = {m: sum(1 for v in methods.values() if v == m) for m in sorted(set(methods.values()))}
    result: dict[str, Any] = {
        "model": card.name,
        "onnx_file": card.onnx_file,
        "detector": args.detector,
        "protocol": f"LFW View 2 {args.pairs}: {report.n_pairs} pairs, 10 person-disjoint folds",
        "pipeline": f"decode_image -> YuNet (score >= {args.score_threshold:.2f}, max side {args.max_side}, "
        f"min side {args.min_side}) "
        f"-> face nearest the centre -> 5-point similarity alignment "
        f"({', '.join(alignment_label(a) for a in embedder.alignments)}) -> {card.name}",
        "images": len(paths),
        "face_choice": method_counts,
        "provider": active_provider(embedder.session),
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **report.to_dict(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / f"lfw_{card.name}.json"
    report_path.write_text(json.dumps(result, indent=2) + "\n")
    roc_path = plot_roc(
        distances, same, args.out / f"lfw_{card.name}_roc.png", title=f"LFW ROC — {card.name}"
    )
    plot_histogram(
        distances,
        same,
        report.threshold_mean,
        args.out / f"lfw_{card.name}_hist.png",
        title=f"LFW d² — {card.name}",
    )

    print(f"LFW {report.n_pairs} pairs, {len(paths)} images, face choice {method_counts}")
    print(f"accuracy  {100 * report.accuracy_mean:.2f}% ± {100 * report.accuracy_std:.2f}")
    print(f"ROC AUC   {report.roc_auc:.5f}")
    print(f"TAR@FAR=1e-3  {100 * report.tar_at_far_1e3:.2f}% (d² < {report.threshold_at_far_1e3:.4f})")
    print(
        f"threshold d²  {report.threshold_mean:.4f} (fold thresholds {min(report.fold_thresholds):.4f}"
        f"..{max(report.fold_thresholds):.4f})"
    )
    print(f"report {report_path}\nroc    {roc_path}")

    if args.update_card:
        update_card(args.model_dir / args.card, card, report.threshold_mean, result)
        print(f"card   {args.model_dir / args.card} (threshold {report.threshold_mean:.4f})")
    return 0


def update_card(path: Path, card: ModelCard, threshold: float, result: dict[str, Any]) -> None:
    lfw = LfwResult(
        accuracy_mean=result["accuracy_mean"],
        accuracy_std=result["accuracy_std"],
        roc_auc=result["roc_auc"],
        tar_at_far_1e3=result["tar_at_far_1e3"],
        threshold_mean=result["threshold_mean"],
        command=result["command"],
        threshold_at_far_1e3=result["threshold_at_far_1e3"],
        fold_thresholds=result["fold_thresholds"],
        fold_accuracies=result["fold_accuracies"],
        protocol=result["protocol"],
        pipeline=result["pipeline"],
        face_choice=result["face_choice"],
        date=result["date"],
    )
    metrics = dict(card.metrics)
    metrics["lfw"] = lfw.model_dump()
    updated = card.model_copy(update={"threshold": round(threshold, 6), "metrics": metrics})
    updated.save(path)


if __name__ == "__main__":
    sys.exit(main())
