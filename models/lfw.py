"""LFW View 2 verification protocol: pairs, person-disjoint folds, 10-fold accuracy, ROC and plots.

Shared by the evaluation CLI here and by the training pipeline; distances are squared L2 between
unit embeddings (d² in [0, 4]) and a pair is predicted "same" when d² < threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

FAR_TARGET = 1e-3


@dataclass(frozen=True, slots=True)
class LfwPair:
    path_a: Path
    path_b: Path
    same: bool
    fold: int
    person_a: str
    person_b: str


def image_path(images_dir: Path, person: str, number: int) -> Path:
    return images_dir / person / f"{person}_{number:04d}.jpg"


def read_pairs(pairs_file: Path, images_dir: Path) -> list[LfwPair]:
    """Parse ``pairs.txt``: a "folds<TAB>n" header, then per fold n same pairs and n different pairs.

    View 1 files (``pairsDevTrain.txt``: a single "n" header, or none at all) read as one fold 0.
    """
    lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{pairs_file}: empty")
    header = lines[0] if all(field.isdigit() for field in lines[0]) else []
    body = lines[1:] if header else lines
    if len(header) == 2:
        n_folds, per_half = int(header[0]), int(header[1])
        if len(body) != n_folds * 2 * per_half:
            raise ValueError(f"{pairs_file}: {len(body)} pairs, header promises {n_folds * 2 * per_half}")
    else:
        n_folds, per_half = 1, max(len(body) // 2, 1)
    pairs: list[LfwPair] = []
    for index, fields in enumerate(body):
        fold = index // (2 * per_half)
        if len(fields) == 3:
            person, a, b = fields[0], int(fields[1]), int(fields[2])
            pairs.append(
                LfwPair(
                    image_path(images_dir, person, a),
                    image_path(images_dir, person, b),
                    True,
                    fold,
                    person,
                    person,
                )
            )
        elif len(fields) == 4:
            person_a, a, person_b, b = fields[0], int(fields[1]), fields[2], int(fields[3])
            pairs.append(
                LfwPair(
                    image_path(images_dir, person_a, a),
                    image_path(images_dir, person_b, b),
                    False,
                    fold,
                    person_a,
                    person_b,
                )
            )
        else:
            raise ValueError(f"{pairs_file}: line {index + 2} has {len(fields)} fields")
    return pairs


def fold_people(pairs: list[LfwPair]) -> dict[int, set[str]]:
    """Everyone who appears in each fold (the folds are person-disjoint; training must exclude them)."""
    people: dict[int, set[str]] = {}
    for pair in pairs:
        people.setdefault(pair.fold, set()).update((pair.person_a, pair.person_b))
    return people


@dataclass(frozen=True)
class VerificationReport:
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    threshold_mean: float
    roc_auc: float
    tar_at_far_1e3: float
    threshold_at_far_1e3: float
    n_pairs: int
    n_same: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_threshold(distances: NDArray[np.float64], same: NDArray[np.bool_]) -> float:
    """The d² cut in [0, 4] with the highest accuracy (exact: every gap between sorted distances)."""
    order = np.argsort(distances, kind="stable")
    d = distances[order]
    s = same[order]
    # accept[i]: the first i pairs (smallest d²) are called "same".
    same_accepted = np.concatenate([[0], np.cumsum(s)])
    diff_rejected = (~s).sum() - np.concatenate([[0], np.cumsum(~s)])
    correct = same_accepted + diff_rejected
    edges = np.concatenate([[0.0], d, [4.0]])
    cuts = (edges[:-1] + edges[1:]) / 2.0
    # A cut between two equal distances cannot separate them.
    valid = np.concatenate([[True], d[1:] > d[:-1], [True]])
    correct = np.where(valid, correct, -1)
    best = int(np.argmax(correct))
    return float(np.clip(cuts[best], 0.0, 4.0))


def roc_curve(
    distances: NDArray[np.float64], same: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(false accept rate, true accept rate, threshold) as the d² threshold sweeps upward."""
    thresholds = np.unique(distances)
    pos = np.sort(distances[same])
    neg = np.sort(distances[~same])
    tpr = np.searchsorted(pos, thresholds, side="right") / max(pos.size, 1)
    fpr = np.searchsorted(neg, thresholds, side="right") / max(neg.size, 1)
    return (
        np.concatenate([[0.0], fpr]).astype(np.float64),
        np.concatenate([[0.0], tpr]).astype(np.float64),
        np.concatenate([[0.0], thresholds]).astype(np.float64),
    )


def roc_auc(distances: NDArray[np.float64], same: NDArray[np.bool_]) -> float:
    """Probability a random same pair is closer than a random different pair (ties count half)."""
    pos = distances[same]
    neg = np.sort(distances[~same])
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = neg.size - np.searchsorted(neg, pos, side="right")
    ties = np.searchsorted(neg, pos, side="right") - np.searchsorted(neg, pos, side="left")
    return float((greater + 0.5 * ties).sum() / (pos.size * neg.size))


def tar_at_far(distances: NDArray[np.float64], same: NDArray[np.bool_], far: float) -> tuple[float, float]:
    """(TAR, threshold): the largest d² cut that lets at most ``far`` of the different pairs through."""
    neg = np.sort(distances[~same])
    allowed = int(np.floor(far * neg.size))
    threshold = float(neg[allowed]) if allowed < neg.size else 4.0
    # Accept d² < threshold: exactly ``allowed`` impostors when there are no ties at the cut.
    tar = float((distances[same] < threshold).mean()) if same.any() else float("nan")
    return tar, threshold


def evaluate_verification(
    distances: NDArray[np.float64], same: NDArray[np.bool_], folds: NDArray[np.int64]
) -> VerificationReport:
    """10-fold protocol: threshold chosen on the other folds, accuracy measured on the held-out one."""
    distances = np.asarray(distances, dtype=np.float64)
    same = np.asarray(same, dtype=np.bool_)
    folds = np.asarray(folds, dtype=np.int64)
    if not (distances.shape == same.shape == folds.shape) or distances.ndim != 1:
        raise ValueError("distances, same and folds must be 1-D arrays of one length")
    accuracies: list[float] = []
    thresholds: list[float] = []
    for fold in np.unique(folds):
        test = folds == fold
        threshold = best_threshold(distances[~test], same[~test])
        predicted = distances[test] < threshold
        accuracies.append(float((predicted == same[test]).mean()))
        thresholds.append(threshold)
    tar, far_threshold = tar_at_far(distances, same, FAR_TARGET)
    return VerificationReport(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
        threshold_mean=float(np.mean(thresholds)),
        roc_auc=roc_auc(distances, same),
        tar_at_far_1e3=tar,
        threshold_at_far_1e3=far_threshold,
        n_pairs=int(distances.size),
        n_same=int(same.sum()),
    )


def plot_roc(
    distances: NDArray[np.float64], same: NDArray[np.bool_], path: Path, title: str = "LFW ROC"
) -> Path:
    """ROC with a log FAR axis (the operating region that matters), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(distances, same)
    auc = roc_auc(distances, same)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    floor = 1.0 / max(int((~same).sum()), 1)
    ax.plot(np.maximum(fpr, floor / 2), tpr, label=f"AUC = {auc:.4f}")
    ax.axvline(FAR_TARGET, color="grey", linestyle=":", label="FAR = 1e-3")
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1.0)
    ax.set_ylim(0.8, 1.001)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_histogram(
    distances: NDArray[np.float64],
    same: NDArray[np.bool_],
    threshold: float,
    path: Path,
    title: str = "LFW d²",
) -> Path:
    """Same vs different d² distributions with the chosen threshold, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    bins = [float(b) for b in np.linspace(0.0, 4.0, 81)]
    ax.hist(distances[same], bins=bins, alpha=0.6, label="same person")
    ax.hist(distances[~same], bins=bins, alpha=0.6, label="different people")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("squared L2 distance d²")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_npz_atomic(path: Path, **arrays: Any) -> None:
    """``np.savez`` to a temp file beside ``path``, then rename: a run killed mid-write never leaves
    a truncated cache that the next run would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
