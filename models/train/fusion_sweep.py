"""Hyper-parameter choice for the fused projection on a validation split of the *training* people only.

    python -m models.train.fusion_sweep '{"steps": 300, "lr": 1e-4}' '{"steps": 300, "lr": 1e-3}' ...

Folds 1-5 (the held-out half) are never looked at; fold 6's people are removed from training as well
and serve as validation: AUC and TAR@FAR=1e-3 over all pairs of their images, and open-set DIR@FPIR=1%
and rank-1 (gallery of 100 people × 1 photo, ``models.openset``). Each argument is a JSON object of
``FusionConfig`` fields; the PCA start (no training) is always the first row.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from numpy.typing import NDArray

from models.lfw import fold_people, read_pairs, roc_auc, tar_at_far
from models.openset import evaluate_openset, find_config
from models.train.fusion_data import LANDMARKS_FILE, load_embeddings, load_faces
from models.train.fusion_eval import LfwEmbeddings
from models.train.fusion_model import REPO_ROOT, FusionConfig, pca_only, train_fusion

DATA = REPO_ROOT / "runs" / "fusion"
LFW = REPO_ROOT.parent / "shared" / "data" / "lfw"


def validation_scores(embeddings: NDArray[np.float32], labels: NDArray[np.int64]) -> str:
    vectors = embeddings.astype(np.float64)
    upper = np.triu_indices(len(vectors), 1)
    distances = (2.0 - 2.0 * (vectors @ vectors.T))[upper]
    same = (labels[:, None] == labels[None, :])[upper]
    tar, _ = tar_at_far(distances, same, 1e-3)
    report = evaluate_openset(
        np.ascontiguousarray(embeddings), labels, gallery_sizes=(100,), enroll_counts=(1,)
    )
    block = find_config(report, 100, 1)
    dir_1 = block["dir_at_fpir"]["0.01"]["mean"]
    return (
        f"AUC {roc_auc(distances, same):.5f} TAR@1e-3 {100 * tar:.2f} "
        f"DIR@FPIR1% {100 * dir_1:.2f} rank-1 {100 * block['rank1']['mean']:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    specs = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    faces = load_faces(DATA / LANDMARKS_FILE)
    data = LfwEmbeddings.build(faces, {n: load_embeddings(DATA / f"{n}.npz") for n in ("sface", "dlib")})
    pairs = read_pairs(LFW / "pairs.txt", LFW / "images")
    people = np.array(faces.people)
    by_fold = fold_people(pairs)
    held = set().union(*(by_fold[f] for f in range(5)))
    validation = by_fold[5]
    train_rows = np.flatnonzero(~np.isin(people, sorted(held | validation)))
    val_rows = np.flatnonzero(np.isin(people, sorted(validation)))
    val_labels = np.unique(people[val_rows], return_inverse=True)[1].astype(np.int64)
    labels = np.unique(people[train_rows], return_inverse=True)[1].astype(np.int64)
    plain = [p[train_rows] for p in data.plain]
    flipped = [f[train_rows] for f in data.flipped]
    start = pca_only(plain).embed([p[val_rows] for p in data.plain])
    print(f"{'PCA start (no training)':60s} {validation_scores(start, val_labels)}", flush=True)
    for spec in specs:
        config = FusionConfig(**json.loads(spec))
        began = time.perf_counter()
        trained = train_fusion(plain, flipped, labels, config)
        seconds = time.perf_counter() - began
        scores = validation_scores(trained.embed([p[val_rows] for p in data.plain]), val_labels)
        print(f"{spec:50s} {seconds:5.0f}s {scores}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
