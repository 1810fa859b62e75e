"""Evaluate an exported model (ONNX + card) on the LFW folds held out from its training.

Verification: the View 2 protocol restricted to the held-out folds; each fold's threshold is chosen on
the other held-out folds (the people the model trained on never calibrate anything). Identification:
among the held-out people, the first image of each person is the gallery and the rest are probes.
Embeddings come from the service's own OnnxEmbedder, crops from the training crop cache (same aligner).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from models.lfw import LfwPair, evaluate_verification, plot_histogram, plot_roc, read_pairs
from models.train.data import CropCache, fill_missing_with_median, images_root, scan_identities
from service.runtime.embedder import OnnxEmbedder, load_embedder
from service.runtime.model_card import LfwResult, ModelCard
from service.runtime.onnx_session import ExecutionProvider

logger = logging.getLogger(__name__)

CARD_METRICS_KEY = "lfw_holdout"


@dataclass(frozen=True)
class IdentificationResult:
    rank1: float
    gallery: int
    probes: int


def select_pairs(pairs: list[LfwPair], folds: list[int], pairs_per_fold: int | None) -> list[LfwPair]:
    """Pairs of the 1-based ``folds``; optionally only the first n/2 same and n/2 different of each."""
    chosen: list[LfwPair] = []
    for fold in folds:
        in_fold = [p for p in pairs if p.fold == fold - 1]
        if not in_fold:
            raise ValueError(f"no pairs in fold {fold}")
        if pairs_per_fold is not None:
            half = pairs_per_fold // 2
            in_fold = [p for p in in_fold if p.same][:half] + [p for p in in_fold if not p.same][:half]
        chosen.extend(in_fold)
    return chosen


def embed_all(
    embedder: OnnxEmbedder, crops: NDArray[np.uint8], batch_size: int, progress: bool
) -> NDArray[np.float32]:
    parts = [
        embedder.embed(crops[start : start + batch_size])
        for start in tqdm(range(0, len(crops), batch_size), desc="embed", unit="batch", disable=not progress)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def rank1_identification(embeddings: NDArray[np.float32], people: list[str]) -> IdentificationResult:
    """First image of each person (in the given order) is the gallery; the others probe it (1:N, rank 1)."""
    gallery_rows: dict[str, int] = {}
    probe_rows: list[int] = []
    for row, person in enumerate(people):
        if person in gallery_rows:
            probe_rows.append(row)
        else:
            gallery_rows[person] = row
    if not probe_rows:
        return IdentificationResult(float("nan"), len(gallery_rows), 0)
    names = list(gallery_rows)
    gallery = embeddings[[gallery_rows[n] for n in names]].astype(np.float64)
    probes = embeddings[probe_rows].astype(np.float64)
    # Unit vectors: d² = 2 − 2·cos, so the nearest gallery entry is the highest dot product.
    nearest = np.argmax(probes @ gallery.T, axis=1)
    hits = sum(names[int(n)] == people[row] for n, row in zip(nearest, probe_rows, strict=True))
    return IdentificationResult(hits / len(probe_rows), len(names), len(probe_rows))


def evaluate(
    model_dir: Path,
    card_file: str,
    lfw_dir: Path,
    folds: list[int],
    cache: CropCache,
    out_dir: Path,
    command: str,
    pairs_per_fold: int | None = None,
    provider: ExecutionProvider = "auto",
    threads: int = 0,
    batch_size: int = 64,
    update_card: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run both protocols, write ``report.json`` and the ROC/histogram PNGs into ``out_dir``."""
    if len(folds) < 2:
        raise ValueError("evaluate at least two held-out folds: each fold's threshold comes from the others")
    root = images_root(lfw_dir)
    pairs = select_pairs(read_pairs(lfw_dir / "pairs.txt", root), folds, pairs_per_fold)
    people = sorted({p.person_a for p in pairs} | {p.person_b for p in pairs})
    identity_files = scan_identities(root)
    gallery_paths = [path for person in people for path in identity_files[person]]
    paths = sorted(set(gallery_paths) | {p.path_a for p in pairs} | {p.path_b for p in pairs})
    crop_set = cache.load(paths, progress=progress, desc="align evaluation images")
    median_aligned = fill_missing_with_median(crop_set)

    embedder, card = load_embedder(model_dir, card_file, provider, threads)
    embeddings = embed_all(embedder, crop_set.crops, batch_size, progress)
    row_of = {path: row for row, path in enumerate(paths)}
    a = embeddings[[row_of[p.path_a] for p in pairs]].astype(np.float64)
    b = embeddings[[row_of[p.path_b] for p in pairs]].astype(np.float64)
    distances = np.clip(((a - b) ** 2).sum(axis=1), 0.0, 4.0)
    same = np.array([p.same for p in pairs], dtype=np.bool_)
    fold_ids = np.array([p.fold for p in pairs], dtype=np.int64)
    verification = evaluate_verification(distances, same, fold_ids)

    gallery_rows = [row_of[path] for path in gallery_paths]
    identification = rank1_identification(
        embeddings[gallery_rows], [path.parent.name for path in gallery_paths]
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    roc = plot_roc(distances, same, out_dir / "roc.png", title=f"LFW folds {folds} — {card.name}")
    hist = plot_histogram(
        distances, same, verification.threshold_mean, out_dir / "distances.png", title=f"d² — {card.name}"
    )
    report: dict[str, Any] = {
        "model": card.name,
        "card": str(model_dir / card_file),
        "protocol": f"LFW View 2 folds {folds} (1-based) only, thresholds chosen on the other held-out folds",
        "folds": folds,
        "pairs_per_fold": pairs_per_fold,
        "images": len(paths),
        "aligned_on_median_landmarks": median_aligned,
        "verification": verification.to_dict(),
        "identification": {
            "rank1": identification.rank1,
            "gallery": identification.gallery,
            "probes": identification.probes,
            "protocol": "held-out people; first image (sorted) of each in the gallery, the rest probe it",
        },
        "mean_d2_same": float(distances[same].mean()),
        "mean_d2_different": float(distances[~same].mean()),
        "plots": {"roc": str(roc), "histogram": str(hist)},
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if update_card:
        write_card_metrics(model_dir / card_file, card, report)
    return report


def write_card_metrics(path: Path, card: ModelCard, report: dict[str, Any]) -> None:
    """The calibrated threshold (mean of the per-fold choices) and the numbers behind it go into the card."""
    verification = report["verification"]
    result = LfwResult(
        accuracy_mean=verification["accuracy_mean"],
        accuracy_std=verification["accuracy_std"],
        roc_auc=verification["roc_auc"],
        tar_at_far_1e3=verification["tar_at_far_1e3"],
        threshold_mean=verification["threshold_mean"],
        command=report["command"],
        protocol=report["protocol"],
        identification_rank1=report["identification"]["rank1"],
        date=report["date"],
    )
    metrics = dict(card.metrics)
    metrics[CARD_METRICS_KEY] = result.model_dump()
    provenance = dict(card.provenance)
    provenance["threshold_source"] = f"{CARD_METRICS_KEY}: {report['protocol']}"
    updated = card.model_copy(
        update={
            "threshold": round(verification["threshold_mean"], 6),
            "metrics": metrics,
            "provenance": provenance,
        }
    )
    updated.save(path)


def summarize(reports: list[Path]) -> str:
    """A Markdown table over evaluation reports (one row each), for models/README.md."""
    lines = [
        "| model | folds | pairs | accuracy | AUC | TAR@FAR=1e-3 | threshold d² | rank-1 | report |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in reports:
        report = json.loads(path.read_text())
        v = report["verification"]
        lines.append(
            f"| {report['model']} | {','.join(map(str, report['folds']))} "
            f"| {v['n_pairs']} | {100 * v['accuracy_mean']:.2f} ± {100 * v['accuracy_std']:.2f} "
            f"| {v['roc_auc']:.4f} | {100 * v['tar_at_far_1e3']:.2f} | {v['threshold_mean']:.3f} "
            f"| {100 * report['identification']['rank1']:.2f} | {path} |"
        )
    return "\n".join(lines)
