"""Held-out comparison of SFace, dlib, score fusion, concatenation and trained projections on LFW.

Protocol (as the fine-tuning results, ``models/train/results/finetune_cpu``): for each half of the
View 2 folds (1-5, then 6-10) every person appearing in that half is removed from training, the
projection is trained on the remaining LFW people, and only the half's pairs are scored (each fold's
threshold chosen on the other held-out folds). So every one of the 6000 pairs is scored by a model that
never saw its people. The 10 fold accuracies of both halves give the accuracy ± std; AUC and TAR@FAR1e-3
pool the 6000 distances. Open-set identification runs on all images of the held-out people.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.lfw import (
    FAR_TARGET,
    LfwPair,
    evaluate_verification,
    fold_people,
    read_pairs,
    roc_auc,
    tar_at_far,
)
from models.openset import evaluate_openset
from models.train.fusion_data import BackboneEmbeddings, LfwFaces
from models.train.fusion_model import (
    FusionConfig,
    TrainedFusion,
    concatenate,
    config_from,
    l2_normalize,
    pca_only,
    train_fusion,
)

logger = logging.getLogger(__name__)

HALVES: tuple[tuple[int, ...], ...] = ((1, 2, 3, 4, 5), (6, 7, 8, 9, 10))

OpenSet = Callable[[NDArray[np.float32], NDArray[np.int64]], dict[str, Any]]


@dataclass(frozen=True)
class LfwEmbeddings:
    """Every LFW image's backbone embeddings, rows aligned with ``faces.names``."""

    faces: LfwFaces
    plain: list[NDArray[np.float32]]
    flipped: list[NDArray[np.float32]]
    backbones: list[str]

    @classmethod
    def build(cls, faces: LfwFaces, backbones: dict[str, BackboneEmbeddings]) -> LfwEmbeddings:
        for name, emb in backbones.items():
            if emb.names != faces.names:
                raise ValueError(f"{name}: embeddings do not cover the landmark file's images in order")
        return cls(
            faces,
            [l2_normalize(e.plain) for e in backbones.values()],
            [l2_normalize(e.flipped) for e in backbones.values()],
            list(backbones),
        )

    def subset(self, parts: Sequence[int]) -> LfwEmbeddings:
        return LfwEmbeddings(
            self.faces,
            [self.plain[i] for i in parts],
            [self.flipped[i] for i in parts],
            [self.backbones[i] for i in parts],
        )


def pair_rows(pairs: Sequence[LfwPair], names: list[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    row = {name: i for i, name in enumerate(names)}

    def key(path: Path) -> str:
        return f"{path.parent.name}/{path.name}"

    a = np.array([row[key(p.path_a)] for p in pairs], dtype=np.int64)
    b = np.array([row[key(p.path_b)] for p in pairs], dtype=np.int64)
    return a, b


def squared_distances(
    embeddings: NDArray[np.float32], a: NDArray[np.int64], b: NDArray[np.int64]
) -> NDArray[np.float64]:
    diff = embeddings[a].astype(np.float64) - embeddings[b].astype(np.float64)
    distances: NDArray[np.float64] = np.clip((diff**2).sum(axis=1), 0.0, 4.0)
    return distances


def flip_average(plain: NDArray[np.float32], flipped: NDArray[np.float32]) -> NDArray[np.float32]:
    """Test-time flip averaging: the mean of the two unit vectors, renormalised."""
    return l2_normalize(plain + flipped)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    embed: Callable[[LfwEmbeddings, NDArray[np.int64]], NDArray[np.float32]]  # (data, train rows) → all rows


def backbone_variant(index: int, name: str, flip: bool = False) -> Variant:
    def embed(data: LfwEmbeddings, train_rows: NDArray[np.int64]) -> NDArray[np.float32]:
        if flip:
            return flip_average(data.plain[index], data.flipped[index])
        return data.plain[index]

    suffix = " + flip TTA" if flip else ""
    return Variant(f"{name}{'_flip' if flip else ''}", f"{name} alone{suffix}", embed)


def fixed_concat_variant(
    name: str, description: str, weights: Callable[[LfwEmbeddings], list[float]]
) -> Variant:
    def embed(data: LfwEmbeddings, train_rows: NDArray[np.int64]) -> NDArray[np.float32]:
        return l2_normalize(concatenate(data.plain, weights(data)))

    return Variant(name, description, embed)


def trained_variant(
    name: str,
    description: str,
    config: FusionConfig | None,
    flip: bool = False,
    keep: dict[str, TrainedFusion] | None = None,
    parts: Sequence[int] | None = None,
) -> Variant:
    """A projection trained on ``train_rows`` only (``config`` None: the PCA initialisation alone);
    ``parts`` picks backbones by index (default all)."""

    def embed(full: LfwEmbeddings, train_rows: NDArray[np.int64]) -> NDArray[np.float32]:
        data = full if parts is None else full.subset(parts)
        train_plain = [p[train_rows] for p in data.plain]
        if config is None:
            trained = pca_only(train_plain)
        else:
            labels = np.unique(np.array(data.faces.people)[train_rows], return_inverse=True)[1]
            trained = train_fusion(
                train_plain, [f[train_rows] for f in data.flipped], labels.astype(np.int64), config
            )
        if keep is not None:
            keep[name] = trained
        out = trained.embed(data.plain)
        if flip:
            out = flip_average(out, trained.embed(data.flipped))
        return out

    return Variant(name, description, embed)


def pair_mean_weights(pairs: Sequence[LfwPair]) -> Callable[[LfwEmbeddings], list[float]]:
    """Score fusion as the issue defines it: each backbone's d² divided by its mean over all pairs."""

    def weights(data: LfwEmbeddings) -> list[float]:
        a, b = pair_rows(pairs, data.faces.names)
        return [float(1.0 / np.sqrt(squared_distances(p, a, b).mean())) for p in data.plain]

    return weights


def evaluate_variants(
    data: LfwEmbeddings,
    pairs: list[LfwPair],
    variants: Sequence[Variant],
    openset: OpenSet | None,
    halves: Sequence[Sequence[int]] = HALVES,
) -> dict[str, Any]:
    """Every variant on every held-out half, then the 10 folds pooled."""
    people = np.array(data.faces.people)
    by_fold = fold_people(pairs)
    results: dict[str, Any] = {}
    for variant in variants:
        halves_out: list[dict[str, Any]] = []
        fold_accuracies: list[float] = []
        all_distances: list[NDArray[np.float64]] = []
        all_same: list[NDArray[np.bool_]] = []
        for half in halves:
            held = set().union(*(by_fold[f - 1] for f in half))
            held_mask = np.isin(people, sorted(held))
            train_rows = np.flatnonzero(~held_mask).astype(np.int64)
            started = time.perf_counter()
            embeddings = variant.embed(data, train_rows)
            seconds = time.perf_counter() - started
            half_pairs = [p for p in pairs if p.fold + 1 in half]
            a, b = pair_rows(half_pairs, data.faces.names)
            distances = squared_distances(embeddings, a, b)
            same = np.array([p.same for p in half_pairs], dtype=np.bool_)
            folds = np.array([p.fold for p in half_pairs], dtype=np.int64)
            report = evaluate_verification(distances, same, folds)
            entry: dict[str, Any] = {
                "held_out_folds": list(half),
                "train_images": len(train_rows),
                "train_people": len(set(people[train_rows])),
                "held_out_people": len(held),
                "seconds": round(seconds, 2),
                "verification": report.to_dict(),
            }
            if openset is not None:
                held_rows = np.flatnonzero(held_mask)
                labels = np.unique(people[held_rows], return_inverse=True)[1].astype(np.int64)
                entry["openset"] = openset(np.ascontiguousarray(embeddings[held_rows]), labels)
            halves_out.append(entry)
            fold_accuracies += report.fold_accuracies
            all_distances.append(distances)
            all_same.append(same)
            logger.info("%s folds %s: accuracy %.4f", variant.name, half, report.accuracy_mean)
        distances = np.concatenate(all_distances)
        same = np.concatenate(all_same)
        tar, threshold = tar_at_far(distances, same, FAR_TARGET)
        results[variant.name] = {
            "description": variant.description,
            "halves": halves_out,
            "pooled": {
                "accuracy_mean": float(np.mean(fold_accuracies)),
                "accuracy_std": float(np.std(fold_accuracies)),
                "fold_accuracies": fold_accuracies,
                "roc_auc": roc_auc(distances, same),
                "tar_at_far_1e3": tar,
                "threshold_at_far_1e3": threshold,
                "n_pairs": len(distances),
            },
        }
    return results


OPENSET_PROTOCOL = (
    "models.openset.evaluate_openset on all images of the held-out half's people: galleries of "
    "100 and 1000 people (capped to those with enough photos), 1 photo enrolled each, every photo "
    "of everyone else an unknown probe, 5 seeded rotations; figures g<G>_k<k>_*, the unprefixed ones "
    "are G=100, k=1; averaged over the two halves"
)
PRIMARY_OPENSET = (100, 1)  # (gallery people requested, photos enrolled each): the summary's columns


def run_openset(embeddings: NDArray[np.float32], labels: NDArray[np.int64]) -> dict[str, Any]:
    """``models.openset.evaluate_openset`` (galleries of 100 and 1000 people, 1 photo enrolled)."""
    return evaluate_openset(embeddings, labels, gallery_sizes=(100, 1000), enroll_counts=(1,))


def openset_headline(report: dict[str, Any]) -> dict[str, float]:
    """Flat figures per configuration (``g<G>_k<k>_...``); the primary one also without a prefix."""
    out: dict[str, float] = {}
    for block in report.get("results", []):
        prefix = f"g{block['gallery_size_requested']}_k{block['enroll_count']}_"
        figures = {
            "rank1": block["rank1"]["mean"],
            "dir_at_fpir_1": block["dir_at_fpir"]["0.01"]["mean"],
            "dir_at_fpir_10": block["dir_at_fpir"]["0.1"]["mean"],
            "gallery_size": float(block["gallery_size"]),
        }
        heldout = block.get("heldout", {}).get("0.01")
        if heldout:
            figures["dir_at_fpir_1_heldout_threshold"] = heldout["dir_measured"]["mean"]
            figures["fpir_1_heldout_measured"] = heldout["fpir_measured"]["mean"]
        for key, value in figures.items():
            out[prefix + key] = float(value)
        if (block["gallery_size_requested"], block["enroll_count"]) == PRIMARY_OPENSET:
            out.update({key: float(value) for key, value in figures.items()})
    return out


def build_variants(args: argparse.Namespace, pairs: list[LfwPair], backbones: list[str]) -> list[Variant]:
    variants = [backbone_variant(i, name) for i, name in enumerate(backbones)]
    variants += [backbone_variant(0, backbones[0], flip=True)]
    if len(backbones) > 1:
        variants += [
            fixed_concat_variant(
                "score_fusion",
                "score fusion: each backbone's d² divided by its mean over all 6000 pairs, summed",
                pair_mean_weights(pairs),
            ),
            fixed_concat_variant(
                "concat",
                "plain concatenation of the unit vectors, normalised",
                lambda d: [1.0] * len(d.plain),
            ),
        ]
    variants.append(
        trained_variant(
            f"{backbones[0]}_proj_semihard",
            f"control: {backbones[0]} alone through a 128→128 projection trained with semihard",
            config_from(args, "semihard", 0),
            parts=[0],
        )
    )
    variants.append(
        trained_variant("pca128", "score-fusion-weighted concatenation → PCA-128 (the init)", None)
    )
    for loss in args.losses:
        variants.append(
            trained_variant(
                f"proj_{loss}", f"linear projection trained with {loss}", config_from(args, loss, 0)
            )
        )
    variants.append(
        trained_variant(
            "proj_semihard_flip",
            "linear projection (semihard) + flip TTA",
            config_from(args, "semihard", 0),
            flip=True,
        )
    )
    if args.mlp_hidden > 0:
        variants.append(
            trained_variant(
                f"mlp{args.mlp_hidden}_semihard",
                f"linear + residual MLP ({args.mlp_hidden} hidden) trained with semihard",
                config_from(args, "semihard", args.mlp_hidden),
            )
        )
    return variants


def summary_table(results: dict[str, Any]) -> str:
    lines = [
        "| variant | accuracy (10 folds) | AUC | TAR@FAR=1e-3 | rank-1 (G=100) | DIR@FPIR=10% (G=100) "
        "| DIR@FPIR=1% (G=100) | rank-1 (G≈814) | DIR@FPIR=1% (G≈814) | what |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        pooled = result["pooled"]
        openset = result.get("openset_mean", {})

        def pct(key: str, source: dict[str, Any] = openset) -> str:
            value = source.get(key)
            return "n/a" if value is None else f"{100 * value:.2f}"

        lines.append(
            f"| {name} | {100 * pooled['accuracy_mean']:.2f} ± {100 * pooled['accuracy_std']:.2f} "
            f"| {pooled['roc_auc']:.5f} | {100 * pooled['tar_at_far_1e3']:.2f} "
            f"| {pct('rank1')} | {pct('dir_at_fpir_10')} | {pct('dir_at_fpir_1')} "
            f"| {pct('g1000_k1_rank1')} | {pct('g1000_k1_dir_at_fpir_1')} | {result['description']} |"
        )
    return "\n".join(lines)


def run_heldout(args: argparse.Namespace, data: LfwEmbeddings, command: str) -> int:
    pairs = read_pairs(args.lfw_dir / "pairs.txt", args.lfw_dir / "images")
    variants = build_variants(args, pairs, data.backbones)
    results = evaluate_variants(data, pairs, variants, run_openset)
    for result in results.values():
        for half in result["halves"]:
            half["openset"] = openset_headline(half["openset"])
        result["openset_mean"] = mean_openset([h["openset"] for h in result["halves"]])
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "protocol": __doc__,
        "command": command,
        "backbones": data.backbones,
        "images": len(data.faces.names),
        "face_choice": {m: data.faces.methods.count(m) for m in sorted(set(data.faces.methods))},
        "openset_protocol": OPENSET_PROTOCOL,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    table = summary_table(results)
    (args.out / "summary.md").write_text(
        f"# Fused SFace + dlib: held-out LFW comparison\n\n{table}\n\nCommand: `{command}`\n"
    )
    print(table)
    return 0


def mean_openset(halves: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each numeric open-set figure over the halves (each half its own held-out people)."""
    keys = set.intersection(*(set(h) for h in halves)) if halves and all(halves) else set()
    out: dict[str, float] = {}
    for key in sorted(keys):
        values = [h[key] for h in halves]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = float(np.mean(values))
    return out
