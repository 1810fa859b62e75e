"""Open-set identification on precomputed embeddings: rank-1, DIR@FPIR and the threshold per FPIR.

The question a 1:N service must answer is not "are these two photos one person?" (verification) but
"is this probe anyone in the gallery, and who?". Strangers must come back unknown, so the figures are:

- **FPIR** (false-positive identification rate): the share of probes of people *not* in the gallery
  whose closest enrolled subject is within the threshold (they would get a name).
- **DIR** (detection-and-identification rate): the share of probes of people in the gallery whose
  closest subject is the right one *and* within the threshold.
- **rank-1**: DIR with no threshold (closed-set accuracy of the genuine probes).

Protocol per (gallery size G, enrollment photos k) and seeded rotation r:

- Known people: G people drawn (seeded) among those with at least k + 1 photos; k of their photos
  (drawn) are enrolled, every other photo of theirs is a genuine probe. With ``probe_photos=0`` (the
  size ladder) anyone with at least k photos may be drawn, as anyone may be enrolled in a service:
  those with more photos give the genuine probes, and LFW then allows galleries of several thousand.
- Unknown probes: every photo of every person not drawn into the gallery (person-disjoint from the
  gallery; which people are unknown changes with the rotation).
- Scores: a probe's distance to a subject is the smallest d² to that subject's enrolled faces (as the
  service ranks its candidates); the probe's answer is the closest subject.
- G is capped to the people the data allows (``gallery_size`` < ``gallery_size_requested``,
  ``capped`` true and the reason in the result).

Distances are squared L2 between unit embeddings, d² = 2 − 2·cos in [0, 4]; a probe is accepted when
d² <= threshold, exactly as the service's ``match``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.domain.fpir import threshold_at_fpir

__all__ = [
    "OpenSetSplit",
    "ProbeScores",
    "dir_at_threshold",
    "effective_gallery_size",
    "evaluate_openset",
    "find_config",
    "fpir_at_threshold",
    "person_disjoint_check",
    "rotation_split",
    "score_split",
    "threshold_at_fpir",
]

PROBE_CHUNK = 2048
CURVE_FPIRS: tuple[float, ...] = tuple(float(f) for f in np.logspace(-4, 0, 33))


@dataclass(frozen=True, slots=True)
class OpenSetSplit:
    """One rotation: who is enrolled with which photos, and which photos probe."""

    gallery_people: NDArray[np.int64]  # (G,) person ids, row order of ``enrolled``
    enrolled: NDArray[np.int64]  # (G, k) image indices
    genuine_probes: NDArray[np.int64]  # image indices of gallery people, not enrolled
    unknown_probes: NDArray[np.int64]  # image indices of people outside the gallery


@dataclass(frozen=True, slots=True)
class ProbeScores:
    """Closest subject per probe: d² and whether it is the right person (genuine probes only)."""

    genuine_best: NDArray[np.float64]
    genuine_correct: NDArray[np.bool_]
    unknown_best: NDArray[np.float64]


def fpir_key(fpir: float) -> str:
    return f"{fpir:g}"


def fpir_at_threshold(impostor_best: NDArray[np.float64], threshold: float) -> float:
    """Share of impostor probes whose closest subject is within ``threshold`` (d² <= threshold)."""
    u = np.asarray(impostor_best, dtype=np.float64)
    return float((u <= threshold).mean()) if u.size else float("nan")


def dir_at_threshold(
    genuine_best: NDArray[np.float64], genuine_correct: NDArray[np.bool_], threshold: float
) -> float:
    """Share of genuine probes whose closest subject is right and within ``threshold``."""
    if genuine_best.size == 0:
        return float("nan")
    return float((genuine_correct & (genuine_best <= threshold)).mean())


def eligible_people(labels: NDArray[np.int64], enroll_count: int, probe_photos: int = 1) -> NDArray[np.int64]:
    """People with at least ``enroll_count + probe_photos`` photos (k to enroll, the rest to probe)."""
    people, counts = np.unique(labels, return_counts=True)
    return people[counts >= enroll_count + probe_photos].astype(np.int64)


def effective_gallery_size(
    labels: NDArray[np.int64], gallery_size: int, enroll_count: int, probe_photos: int = 1
) -> tuple[int, str | None]:
    """The gallery size the data allows, and why it was capped (None when it was not)."""
    n_eligible = eligible_people(labels, enroll_count, probe_photos).size
    n_people = np.unique(labels).size
    # At least one person must stay outside the gallery to provide unknown probes.
    limit = min(n_eligible, n_people - 1)
    if limit < 1:
        raise ValueError(f"no person has {enroll_count + 1} photos, or no one would be left unknown")
    if gallery_size <= limit:
        return gallery_size, None
    if limit == n_eligible:
        reason = f"only {n_eligible} people have >= {enroll_count + probe_photos} photos"
    else:
        reason = f"only {n_people} people: one must stay unknown"
    return limit, reason


def rotation_split(
    labels: NDArray[np.int64],
    gallery_size: int,
    enroll_count: int,
    seed: int,
    rotation: int,
    probe_photos: int = 1,
) -> OpenSetSplit:
    """The seeded split of one rotation (gallery size already capped by the caller)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, rotation, gallery_size, enroll_count])
    eligible = eligible_people(labels, enroll_count, probe_photos)
    if gallery_size > eligible.size:
        raise ValueError(f"gallery of {gallery_size} but only {eligible.size} eligible people")
    gallery_people = np.sort(rng.choice(eligible, size=gallery_size, replace=False)).astype(np.int64)
    in_gallery = np.isin(labels, gallery_people)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, gallery_people, side="left")
    ends = np.searchsorted(sorted_labels, gallery_people, side="right")
    enrolled = np.empty((gallery_size, enroll_count), dtype=np.int64)
    genuine: list[NDArray[np.int64]] = []
    for row, (start, end) in enumerate(zip(starts, ends, strict=True)):
        photos = order[start:end]
        picked = rng.permutation(photos.size)
        enrolled[row] = np.sort(photos[picked[:enroll_count]])
        genuine.append(photos[picked[enroll_count:]])
    genuine_probes = np.sort(np.concatenate(genuine)) if genuine else np.empty(0, dtype=np.int64)
    unknown_probes = np.flatnonzero(~in_gallery).astype(np.int64)
    return OpenSetSplit(gallery_people, enrolled, genuine_probes.astype(np.int64), unknown_probes)


def closest_subjects(
    embeddings: NDArray[np.float32], enrolled: NDArray[np.int64], probes: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(d² to the closest subject, its row in ``enrolled``) for each probe; chunked matrix products."""
    gallery_size, enroll_count = enrolled.shape
    templates = np.ascontiguousarray(embeddings[enrolled.ravel()], dtype=np.float32)
    best = np.empty(probes.size, dtype=np.float64)
    rows = np.empty(probes.size, dtype=np.int64)
    for start in range(0, probes.size, PROBE_CHUNK):
        chunk = probes[start : start + PROBE_CHUNK]
        cos = embeddings[chunk].astype(np.float32) @ templates.T
        per_subject = cos.reshape(chunk.size, gallery_size, enroll_count).max(axis=2)
        row = per_subject.argmax(axis=1)
        rows[start : start + chunk.size] = row
        nearest = per_subject[np.arange(chunk.size), row].astype(np.float64)
        best[start : start + chunk.size] = np.clip(2.0 - 2.0 * nearest, 0.0, 4.0)
    return best, rows


def score_split(
    embeddings: NDArray[np.float32], labels: NDArray[np.int64], split: OpenSetSplit
) -> ProbeScores:
    genuine_best, genuine_rows = closest_subjects(embeddings, split.enrolled, split.genuine_probes)
    unknown_best, _ = closest_subjects(embeddings, split.enrolled, split.unknown_probes)
    correct = split.gallery_people[genuine_rows] == labels[split.genuine_probes]
    return ProbeScores(genuine_best, correct.astype(np.bool_), unknown_best)


def _summary(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "per_rotation": [float(v) for v in array],
    }


def _check_inputs(
    embeddings: NDArray[np.float32], labels: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if embeddings.ndim != 2 or labels.ndim != 1 or embeddings.shape[0] != labels.shape[0]:
        raise ValueError("embeddings must be (N, D) and labels (N,)")
    norms = np.linalg.norm(embeddings, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise ValueError("embeddings must be L2-normalised rows")
    return embeddings, labels


def evaluate_openset(
    embeddings: NDArray[np.float32],
    labels: NDArray[np.int64],
    *,
    gallery_sizes: tuple[int, ...] = (100, 1000),
    enroll_counts: tuple[int, ...] = (1, 5),
    fpirs: tuple[float, ...] = (0.1, 0.01, 0.001),
    rotations: int = 5,
    seed: int = 0,
    probe_photos: int = 1,
) -> dict[str, Any]:
    """Rank-1, DIR@FPIR and the threshold per FPIR, mean ± std over seeded rotations (JSON-able).

    ``heldout`` per configuration: each FPIR's threshold chosen on the pooled unknown probes of the
    first half of the rotations (rounded up), then measured on each of the others, whose galleries
    and unknown people differ (they overlap, as rotations of one data set do).
    """
    embeddings, labels = _check_inputs(embeddings, labels)
    if rotations < 1:
        raise ValueError("rotations must be >= 1")
    n_choose = max(1, math.ceil(rotations / 2)) if rotations > 1 else 1
    results: list[dict[str, Any]] = []
    for gallery_requested in gallery_sizes:
        for enroll_count in enroll_counts:
            gallery_size, reason = effective_gallery_size(
                labels, gallery_requested, enroll_count, probe_photos
            )
            scores: list[ProbeScores] = []
            splits: list[OpenSetSplit] = []
            for rotation in range(rotations):
                split = rotation_split(labels, gallery_size, enroll_count, seed, rotation, probe_photos)
                splits.append(split)
                scores.append(score_split(embeddings, labels, split))
            results.append(
                _config_result(
                    scores,
                    splits,
                    labels,
                    gallery_requested=gallery_requested,
                    gallery_size=gallery_size,
                    cap_reason=reason,
                    enroll_count=enroll_count,
                    fpirs=fpirs,
                    n_choose=n_choose,
                    probe_photos=probe_photos,
                )
            )
    return {
        "protocol": "open-set identification: gallery of G people (k enrolled photos each, drawn among "
        f"people with >= k+{probe_photos} photos; their other photos are genuine probes), unknown probes = "
        "every photo of every person outside the gallery; per-subject distance = min d² over its "
        "enrolled faces; accept when d² <= threshold",
        "n_images": int(labels.size),
        "n_people": int(np.unique(labels).size),
        "embedding_dim": int(embeddings.shape[1]),
        "rotations": rotations,
        "seed": seed,
        "fpirs": [float(f) for f in fpirs],
        "results": results,
    }


def _config_result(
    scores: list[ProbeScores],
    splits: list[OpenSetSplit],
    labels: NDArray[np.int64],
    *,
    gallery_requested: int,
    gallery_size: int,
    cap_reason: str | None,
    enroll_count: int,
    fpirs: tuple[float, ...],
    n_choose: int,
    probe_photos: int = 1,
) -> dict[str, Any]:
    rank1 = [dir_at_threshold(s.genuine_best, s.genuine_correct, 4.0) for s in scores]
    dirs: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, dict[str, Any]] = {}
    achieved: dict[str, dict[str, Any]] = {}
    for fpir in fpirs:
        per_rotation_t = [threshold_at_fpir(s.unknown_best, fpir) for s in scores]
        thresholds[fpir_key(fpir)] = _summary(per_rotation_t)
        dirs[fpir_key(fpir)] = _summary(
            [
                dir_at_threshold(s.genuine_best, s.genuine_correct, t)
                for s, t in zip(scores, per_rotation_t, strict=True)
            ]
        )
        achieved[fpir_key(fpir)] = _summary(
            [fpir_at_threshold(s.unknown_best, t) for s, t in zip(scores, per_rotation_t, strict=True)]
        )

    curve_dir: list[list[float]] = []
    curve_t: list[list[float]] = []
    for s in scores:
        ts = [threshold_at_fpir(s.unknown_best, f) for f in CURVE_FPIRS]
        curve_t.append(ts)
        curve_dir.append([dir_at_threshold(s.genuine_best, s.genuine_correct, t) for t in ts])
    curve_dir_array = np.asarray(curve_dir)

    heldout: dict[str, Any] = {}
    choose = list(range(n_choose))
    measure = list(range(n_choose, len(scores)))
    if measure:
        pooled = np.concatenate([scores[r].unknown_best for r in choose])
        heldout = {"choose_rotations": choose, "measure_rotations": measure}
        for fpir in fpirs:
            threshold = threshold_at_fpir(pooled, fpir)
            measured = [fpir_at_threshold(scores[r].unknown_best, threshold) for r in measure]
            heldout[fpir_key(fpir)] = {
                "threshold": threshold,
                "fpir_measured": _summary(measured),
                "ratio_to_target": float(np.mean(measured) / fpir) if fpir > 0 else None,
                "dir_measured": _summary(
                    [
                        dir_at_threshold(scores[r].genuine_best, scores[r].genuine_correct, threshold)
                        for r in measure
                    ]
                ),
            }

    genuine_counts = [s.genuine_best.size for s in scores]
    unknown_counts = [s.unknown_best.size for s in scores]
    unknown_people = [int(np.unique(labels[sp.unknown_probes]).size) for sp in splits]
    return {
        "gallery_size_requested": gallery_requested,
        "gallery_size": gallery_size,
        "capped": cap_reason is not None,
        "cap_reason": cap_reason,
        "enroll_count": enroll_count,
        "eligible_people": int(eligible_people(labels, enroll_count, probe_photos).size),
        "gallery_faces": gallery_size * enroll_count,
        "genuine_probes": _summary([float(c) for c in genuine_counts]),
        "unknown_probes": _summary([float(c) for c in unknown_counts]),
        "unknown_people": _summary([float(c) for c in unknown_people]),
        "rank1": _summary(rank1),
        "dir_at_fpir": dirs,
        "threshold_at_fpir": thresholds,
        "fpir_achieved": achieved,
        "heldout": heldout,
        "curve": {
            "fpir": list(CURVE_FPIRS),
            "dir_mean": [float(v) for v in curve_dir_array.mean(axis=0)],
            "dir_std": [float(v) for v in curve_dir_array.std(axis=0)],
            "threshold_mean": [float(v) for v in np.asarray(curve_t).mean(axis=0)],
        },
    }


def find_config(report: dict[str, Any], gallery_size_requested: int, enroll_count: int) -> dict[str, Any]:
    """The result block of one (requested gallery size, enrollment count) of ``evaluate_openset``."""
    for block in report["results"]:
        if (
            block["gallery_size_requested"] == gallery_size_requested
            and block["enroll_count"] == enroll_count
        ):
            return dict(block)
    raise KeyError(f"no result for gallery {gallery_size_requested}, {enroll_count} enrolled")


def person_disjoint_check(
    embeddings: NDArray[np.float32],
    labels: NDArray[np.int64],
    *,
    gallery_size: int,
    enroll_count: int,
    target_fpir: float,
    rotations: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """The threshold for ``target_fpir`` chosen on one half of the people, its FPIR measured on the other.

    People are split in two seeded halves; in each half, galleries of ``gallery_size`` people (capped
    to what both halves allow) are drawn over ``rotations``. The threshold is chosen on the pooled
    unknown probes of one half and its FPIR measured on the other half's rotations, both ways round:
    no person, gallery or unknown probe is shared between choosing and measuring.
    """
    embeddings, labels = _check_inputs(embeddings, labels)
    people = np.unique(labels)
    shuffled = np.random.default_rng([seed, 7919]).permutation(people)
    halves = [np.sort(shuffled[: people.size // 2]), np.sort(shuffled[people.size // 2 :])]
    parts = [np.flatnonzero(np.isin(labels, half)) for half in halves]
    size = min(effective_gallery_size(labels[part], gallery_size, enroll_count)[0] for part in parts)
    unknown: list[list[NDArray[np.float64]]] = []
    for part in parts:
        sub_embeddings, sub_labels = embeddings[part], labels[part]
        unknown.append(
            [
                score_split(
                    sub_embeddings,
                    sub_labels,
                    rotation_split(sub_labels, size, enroll_count, seed, rotation),
                ).unknown_best
                for rotation in range(rotations)
            ]
        )
    directions: list[dict[str, Any]] = []
    ratios: list[float] = []
    for choose, measure in ((0, 1), (1, 0)):
        threshold = threshold_at_fpir(np.concatenate(unknown[choose]), target_fpir)
        measured = [fpir_at_threshold(u, threshold) for u in unknown[measure]]
        ratios.append(float(np.mean(measured) / target_fpir))
        directions.append(
            {
                "chosen_on_half": choose,
                "measured_on_half": measure,
                "threshold": threshold,
                "fpir_measured": _summary(measured),
                "ratio_to_target": ratios[-1],
            }
        )
    return {
        "gallery_size_requested": gallery_size,
        "gallery_size": size,
        "enroll_count": enroll_count,
        "target_fpir": target_fpir,
        "people_per_half": [int(h.size) for h in halves],
        "rotations": rotations,
        "directions": directions,
        # how far the worse direction is from the target, as a factor (1.0: exactly on target)
        "worst_factor_off_target": max(max(r, 1.0 / max(r, 1e-12)) for r in ratios),
    }
