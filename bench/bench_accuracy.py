"""LFW View 2 accuracy, the shipped model beside ``face_recognition`` (dlib), on the same 6000 pairs.

Both sides use ``models.lfw`` (pairs parser and 10-fold protocol: threshold chosen on nine folds,
accuracy on the tenth). dlib is scored in its own metric (Euclidean distance between its
encodings); the shipped model in squared L2 between unit embeddings. The shipped model's numbers
come from its model card (written by ``models.evaluate_lfw --update-card``), else from that
command's report, else the command is run here.

    python -m bench.bench_accuracy                      # ~15-30 min on 2 cores the first time, then cached
    python -m bench.bench_accuracy --folds 1            # quick look: first fold only (600 pairs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import DEFAULT_LFW_ROOT, REPO_ROOT, Report, Table, finish_report, start_report
from bench.dlib_baseline import baseline_versions, encode_lfw_images
from models.lfw import LfwPair, evaluate_verification, read_pairs, save_npz_atomic
from service.runtime.model_card import ModelCard

CACHE_DIR = REPO_ROOT / "bench" / "results" / "tmp"
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "artifacts"


def dlib_cache_key(args: argparse.Namespace) -> str:
    return json.dumps(
        {
            "versions": baseline_versions(),
            "model": args.dlib_model,
            "upsample": args.upsample,
            "jitters": args.jitters,
            "face_choice": "centre_face/upsampled_face/median_box v1",
        },
        sort_keys=True,
    )


def load_dlib_cache(path: Path, key: str) -> tuple[dict[str, NDArray[np.float32]], dict[str, str]]:
    if not path.is_file():
        return {}, {}
    with np.load(path, allow_pickle=False) as data:
        if str(data["key"]) != key:
            return {}, {}
        names = [str(n) for n in data["names"]]
        return (
            dict(zip(names, data["encodings"].astype(np.float32), strict=True)),
            dict(zip(names, (str(m) for m in data["methods"]), strict=True)),
        )


def save_dlib_cache(
    path: Path, key: str, encodings: dict[str, NDArray[np.float32]], methods: dict[str, str]
) -> None:
    names = sorted(encodings)
    save_npz_atomic(
        path,
        key=np.array(key),
        names=np.array(names),
        encodings=np.stack([encodings[n] for n in names]),
        methods=np.array([methods[n] for n in names]),
    )


def evaluate_dlib(pairs: list[LfwPair], images_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    names = [str(p.relative_to(images_dir)) for p in paths]
    key = dlib_cache_key(args)
    cache = CACHE_DIR / f"dlib_lfw_{args.dlib_model}_up{args.upsample}_j{args.jitters}.npz"
    encodings, methods = load_dlib_cache(cache, key)
    missing = [p for p, n in zip(paths, names, strict=True) if n not in encodings]
    started = time.perf_counter()
    if missing:
        new_encodings, new_methods = encode_lfw_images(
            missing, workers=args.workers, model=args.dlib_model, upsample=args.upsample, jitters=args.jitters
        )
        for path in missing:
            name = str(path.relative_to(images_dir))
            encodings[name] = new_encodings[path]
            methods[name] = new_methods[path]
        save_dlib_cache(cache, key, encodings, methods)
    seconds = time.perf_counter() - started

    a = np.stack([encodings[str(p.path_a.relative_to(images_dir))] for p in pairs]).astype(np.float64)
    b = np.stack([encodings[str(p.path_b.relative_to(images_dir))] for p in pairs]).astype(np.float64)
    distances = np.sqrt(((a - b) ** 2).sum(axis=1))  # face_recognition.face_distance
    same = np.array([p.same for p in pairs], dtype=np.bool_)
    folds = np.array([p.fold for p in pairs], dtype=np.int64)
    report = evaluate_verification(distances, same, folds)
    used = [methods[n] for n in names]
    return {
        "pipeline": f"face_recognition {args.dlib_model.upper()} (upsample {args.upsample}) → dlib ResNet "
        f"({args.jitters} jitter), Euclidean distance",
        "images": len(paths),
        "encoded_now": len(missing),
        "encode_seconds": seconds,
        "face_choice": {m: used.count(m) for m in sorted(set(used))},
        "versions": baseline_versions(),
        **report.to_dict(),
    }


def shipped_model_result(model_dir: Path, card_file: str, folds: int, run_missing: bool) -> dict[str, Any]:
    """The shipped model's LFW result: card metrics, else the evaluator's report, else run the evaluator."""
    card = ModelCard.load(model_dir / card_file)
    lfw = card.metrics.get("lfw")
    if folds == 10 and isinstance(lfw, dict) and "accuracy_mean" in lfw:
        return {"source": f"{model_dir.name}/{card_file} metrics.lfw", "model": card.name, **lfw}
    for report_dir in (REPO_ROOT / "runs" / "lfw", CACHE_DIR / "lfw_ours"):
        report_path = report_dir / f"lfw_{card.name}.json"
        if folds == 10 and report_path.is_file():
            data = json.loads(report_path.read_text())
            return {"source": str(report_path.relative_to(REPO_ROOT)), **data}
    if not run_missing or folds != 10:
        return {"source": "not available", "model": card.name}
    out = CACHE_DIR / "lfw_ours"
    command = [sys.executable, "-m", "models.evaluate_lfw", "--model-dir", str(model_dir), "--out", str(out)]
    subprocess.run(command, cwd=REPO_ROOT, check=True, env=dict(os.environ))
    data = json.loads((out / f"lfw_{card.name}.json").read_text())
    return {"source": str((out / f"lfw_{card.name}.json").relative_to(REPO_ROOT)), **data}


def pct(value: object, std: object = None) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    text = f"{100 * value:.2f}%"
    return f"{text} ± {100 * std:.2f}" if isinstance(std, (int, float)) else text


def num(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument("--pairs", default="pairs.txt")
    parser.add_argument("--folds", type=int, default=10, help="use only the first N folds (quick runs)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="dlib processes")
    parser.add_argument("--dlib-model", choices=["hog", "cnn"], default="hog")
    parser.add_argument("--upsample", type=int, default=1)
    parser.add_argument("--jitters", type=int, default=1)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--card", default="embedder.json")
    parser.add_argument(
        "--no-run-ours", action="store_true", help="do not run models.evaluate_lfw when no result exists"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = start_report("bench_accuracy", argv)
    images_dir = args.lfw_dir / "images"
    pairs = [p for p in read_pairs(args.lfw_dir / args.pairs, images_dir) if p.fold < args.folds]

    dlib_result = evaluate_dlib(pairs, images_dir, args)
    ours = shipped_model_result(args.model_dir, args.card, args.folds, not args.no_run_ours)

    table = Table(
        title=f"LFW View 2 ({len(pairs)} pairs, {args.folds} person-disjoint folds)",
        columns=[
            "pipeline",
            f"{args.folds}-fold accuracy",
            "ROC AUC",
            "TAR@FAR=1e-3",
            "threshold",
            "face fallbacks",
            "source",
        ],
    )
    ours_fallbacks = {k: v for k, v in dict(ours.get("face_choice", {})).items() if k != "centre_face"}
    table.add(
        f"shipped: {ours.get('model', '?')} (YuNet + 5-pt align)",
        pct(ours.get("accuracy_mean"), ours.get("accuracy_std")),
        num(ours.get("roc_auc")),
        pct(ours.get("tar_at_far_1e3")),
        f"d² {num(ours.get('threshold_mean'))}",
        json.dumps(ours_fallbacks) if ours_fallbacks else "0",
        str(ours.get("command") or ours.get("source")),
    )
    dlib_fallbacks = {k: v for k, v in dlib_result["face_choice"].items() if k != "centre_face"}
    table.add(
        f"face_recognition {baseline_versions().get('face_recognition')} (dlib {args.dlib_model.upper()})",
        pct(dlib_result["accuracy_mean"], dlib_result["accuracy_std"]),
        num(dlib_result["roc_auc"]),
        pct(dlib_result["tar_at_far_1e3"]),
        f"L2 {num(dlib_result['threshold_mean'])}",
        json.dumps(dlib_fallbacks) if dlib_fallbacks else "0",
        report.command,
    )
    table.notes.append(
        "face choice: detected face nearest the image centre; fallbacks (low-threshold / extra "
        "upsampling, then a fixed median crop) are counted per image"
    )
    report.tables.append(table)
    report.raw = {"dlib": dlib_result, "shipped": ours}
    finish_report(report, started)
    return report


if __name__ == "__main__":
    main()
