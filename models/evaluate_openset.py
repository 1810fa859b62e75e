"""Open-set identification on all of LFW, end to end from the raw images, and the identification threshold.

    python -m models.evaluate_openset --model-dir models/artifacts [--update-card] [--out DIR]

Every LFW image (13,233 photos of 5,749 people) goes through the same decode → detect → face choice
→ align → embed pipeline as ``models.evaluate_lfw`` (face nearest the image centre, low-threshold
retry, median landmarks as the last resort); the embeddings are cached under ``--out``. The protocol
(``models.openset``) then draws galleries of ~100 and ~1000 people with 1 and 5 enrolled photos, in
seeded rotations; the other photos of gallery people are genuine probes and every photo of everyone
else is an unknown probe.

The identification threshold is the d² that lets ``--target-fpir`` of the unknown probes get a name
at the reference gallery (``--reference-gallery`` people, ``--reference-enroll`` photos each), chosen
on the pooled first half of the rotations; its FPIR is then measured on the other half (held out).
``--update-card`` writes it as ``identify_threshold`` with ``metrics["openset"]`` into the card
(``threshold`` stays the verification threshold) and keeps the report and plot in
``<model-dir>/lfw_eval/``.

How this differs from BLUFR (Liao et al. 2014, open-set identification, DIR at rank 1 @ FAR=1%):
BLUFR splits LFW into 10 trials of ~1,500 training people and ~4,249 test people; in each trial's
test set, 1,000 people with one image each form the gallery, their other images are the genuine
probes (~4,350) and the images of the other ~3,249 test people the impostor probes (~4,357); it
reports mean − std over the trials. The shipped model never trained on LFW, so nothing is held back
for training here: galleries are drawn from all 5,749 people (those with >= k+1 photos), the unknown
probes are every photo of everyone outside the gallery (~7,800 at 1000 people, ~12,700 at 100),
rotations are seeded draws rather than BLUFR's fixed lists, and figures are mean ± std. The
1000-person, 1-photo row is the one comparable to BLUFR's DIR@FAR=1%; with ~80% more impostor probes
and a gallery drawn from more people it is not interchangeable with published BLUFR numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.evaluate_lfw import REPO_ROOT, add_pipeline_arguments, embed_lfw_images
from models.openset import (
    dir_at_threshold,
    evaluate_openset,
    find_config,
    fpir_at_threshold,
    fpir_key,
    person_disjoint_check,
    rotation_split,
    score_split,
)
from service.runtime.model_card import ModelCard
from service.runtime.onnx_session import active_provider

logger = logging.getLogger(__name__)

DEFAULT_OUT = REPO_ROOT / "runs" / "openset"
HELDOUT_TOLERANCE = 2.0  # the held-out FPIR must be within this factor of the target


def lfw_images(images_dir: Path) -> tuple[list[Path], NDArray[np.int64], list[str]]:
    """Every image, sorted by person then file, with integer person ids (index into the names)."""
    people = sorted(p for p in images_dir.iterdir() if p.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    for index, person in enumerate(people):
        files = sorted(person.glob("*.jpg"))
        paths.extend(files)
        labels.extend([index] * len(files))
    if not paths:
        raise FileNotFoundError(f"no images under {images_dir}")
    return paths, np.asarray(labels, dtype=np.int64), [p.name for p in people]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_pipeline_arguments(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report, plot, embedding cache")
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="write identify_threshold and metrics['openset'] into the card; keep the report and "
        "plot in <model-dir>/lfw_eval/",
    )
    parser.add_argument("--gallery-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--enroll-counts", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--fpirs", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    parser.add_argument("--rotations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-fpir", type=float, default=0.01, help="FPIR of the identify threshold")
    parser.add_argument(
        "--reference-gallery", type=int, default=1000, help="gallery people the threshold is chosen at"
    )
    parser.add_argument("--reference-enroll", type=int, default=1, help="enrolled photos per person there")
    return parser.parse_args(argv)


def embed_lfw(
    args: argparse.Namespace, paths: list[Path]
) -> tuple[NDArray[np.float32], dict[str, int], ModelCard, str]:
    """Embeddings of ``paths`` (cached), the face-choice counts, the card and the provider used."""
    embedded = embed_lfw_images(args, paths, "embeddings_all_lfw.npz")
    names = [str(p.relative_to(args.lfw_dir / "images")) for p in paths]
    embeddings = np.ascontiguousarray(np.stack([embedded.vectors[n] for n in names]), dtype=np.float32)
    counts: dict[str, int] = {}
    for n in names:
        counts[embedded.methods[n]] = counts.get(embedded.methods[n], 0) + 1
    return embeddings, dict(sorted(counts.items())), embedded.card, active_provider(embedded.embedder.session)


def operating_points(
    embeddings: NDArray[np.float32],
    labels: NDArray[np.int64],
    report: dict[str, Any],
    thresholds: dict[str, float],
) -> list[dict[str, Any]]:
    """FPIR and DIR of fixed thresholds (verification, identification) in every configuration."""
    rows: list[dict[str, Any]] = []
    for block in report["results"]:
        fpirs: dict[str, list[float]] = {name: [] for name in thresholds}
        dirs: dict[str, list[float]] = {name: [] for name in thresholds}
        for rotation in range(report["rotations"]):
            split = rotation_split(
                labels, block["gallery_size"], block["enroll_count"], report["seed"], rotation
            )
            scores = score_split(embeddings, labels, split)
            for name, t in thresholds.items():
                fpirs[name].append(fpir_at_threshold(scores.unknown_best, t))
                dirs[name].append(dir_at_threshold(scores.genuine_best, scores.genuine_correct, t))
        rows.append(
            {
                "gallery_size": block["gallery_size"],
                "enroll_count": block["enroll_count"],
                **{
                    name: {
                        "threshold": t,
                        "fpir_mean": float(np.mean(fpirs[name])),
                        "fpir_std": float(np.std(fpirs[name])),
                        "dir_mean": float(np.mean(dirs[name])),
                        "dir_std": float(np.std(dirs[name])),
                    }
                    for name, t in thresholds.items()
                },
            }
        )
    return rows


def plot_dir_fpir(report: dict[str, Any], identify_threshold: dict[str, Any], path: Path, title: str) -> Path:
    """DIR against FPIR (log axis), one curve per gallery size × enrolled photos, ± std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.6), dpi=120)
    for block in report["results"]:
        curve = block["curve"]
        fpir = np.asarray(curve["fpir"])
        mean = np.asarray(curve["dir_mean"])
        std = np.asarray(curve["dir_std"])
        floor = 1.0 / block["unknown_probes"]["mean"]
        keep = fpir >= floor
        label = f"{block['gallery_size']} people × {block['enroll_count']} photo(s)"
        (line,) = ax.plot(fpir[keep], mean[keep], label=label)
        ax.fill_between(
            fpir[keep], (mean - std)[keep], (mean + std)[keep], color=line.get_color(), alpha=0.15
        )
    for target in report["fpirs"]:
        ax.axvline(target, color="grey", linestyle=":", linewidth=0.8)
    ax.plot(
        [identify_threshold["fpir_heldout"]],
        [identify_threshold["dir_heldout"]],
        marker="o",
        color="black",
        linestyle="none",
        label=f"identify threshold d² {identify_threshold['value']:.3f} (held out)",
    )
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.5, 1.0)
    ax.set_xlabel("FPIR (unknown probes given a name)")
    ax.set_ylabel("DIR (known probes, right name within threshold)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raw_argv = sys.argv[1:] if argv is None else argv
    command = "python -m models.evaluate_openset " + shlex.join(raw_argv)

    paths, labels, _ = lfw_images(args.lfw_dir / "images")
    embeddings, face_choice, card, provider = embed_lfw(args, paths)
    gallery_sizes = tuple(sorted(set(args.gallery_sizes) | {args.reference_gallery}))
    enroll_counts = tuple(sorted(set(args.enroll_counts) | {args.reference_enroll}))
    fpirs = tuple(sorted(set(args.fpirs) | {args.target_fpir}, reverse=True))
    report = evaluate_openset(
        embeddings,
        labels,
        gallery_sizes=gallery_sizes,
        enroll_counts=enroll_counts,
        fpirs=fpirs,
        rotations=args.rotations,
        seed=args.seed,
    )
    reference = find_config(report, args.reference_gallery, args.reference_enroll)
    held = reference["heldout"]
    if not held:
        raise SystemExit("--rotations must be >= 2 to hold rotations out")
    chosen = held[fpir_key(args.target_fpir)]
    identify = {
        "value": round(chosen["threshold"], 6),
        "target_fpir": args.target_fpir,
        "reference_gallery_size": reference["gallery_size"],
        "reference_enroll_count": reference["enroll_count"],
        "chosen_on_rotations": held["choose_rotations"],
        "measured_on_rotations": held["measure_rotations"],
        "fpir_heldout": chosen["fpir_measured"]["mean"],
        "fpir_heldout_per_rotation": chosen["fpir_measured"]["per_rotation"],
        "fpir_heldout_ratio_to_target": chosen["ratio_to_target"],
        "dir_heldout": chosen["dir_measured"]["mean"],
        "within_factor_2": bool(
            args.target_fpir / HELDOUT_TOLERANCE
            <= chosen["fpir_measured"]["mean"]
            <= args.target_fpir * HELDOUT_TOLERANCE
        ),
    }
    disjoint = person_disjoint_check(
        embeddings,
        labels,
        gallery_size=args.reference_gallery,
        enroll_count=args.reference_enroll,
        target_fpir=args.target_fpir,
        rotations=max(args.rotations // 2, 1),
        seed=args.seed,
    )
    identify["person_disjoint_check"] = disjoint
    points = operating_points(
        embeddings,
        labels,
        report,
        {"verification_threshold": card.threshold, "identify_threshold": identify["value"]},
    )
    result: dict[str, Any] = {
        "model": card.name,
        "onnx_file": card.onnx_file,
        "detector": args.detector,
        "pipeline": f"decode_image -> YuNet (score >= {args.score_threshold:.2f}, max side {args.max_side}, "
        f"min side {args.min_side}) -> face nearest the centre -> ArcFace 5-point similarity alignment "
        f"(bicubic) -> {card.name}",
        "images": len(paths),
        "face_choice": face_choice,
        "provider": provider,
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "differs_from_blufr": (__doc__ or "").split("How this differs from BLUFR")[1].strip(),
        "identify_threshold": identify,
        "verification_threshold": card.threshold,
        "operating_points": points,
        **report,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out_dirs = [args.out] + ([args.model_dir / "lfw_eval"] if args.update_card else [])
    for directory in out_dirs:
        report_path = directory / f"openset_{card.name}.json"
        directory.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(result, indent=2) + "\n")
        plot_path = plot_dir_fpir(
            report, identify, directory / f"openset_{card.name}_dir_fpir.png", f"LFW open set — {card.name}"
        )
        print(f"report {report_path}\nplot   {plot_path}")

    print_summary(result)
    if args.update_card:
        update_card(args.model_dir / args.card, card, result)
        print(f"card   {args.model_dir / args.card} (identify_threshold {identify['value']:.4f})")
    return 0


def print_summary(result: dict[str, Any]) -> None:
    print(
        f"LFW open set: {result['images']} images, {result['n_people']} people, "
        f"{result['rotations']} rotations"
    )
    keys = [fpir_key(f) for f in result["fpirs"]]
    print("gallery  k  rank-1           " + "  ".join(f"DIR@{k:<6} (d²)          " for k in keys))
    for block in result["results"]:
        cells = [
            f"{100 * block['dir_at_fpir'][k]['mean']:5.2f}% ± {100 * block['dir_at_fpir'][k]['std']:.2f} "
            f"({block['threshold_at_fpir'][k]['mean']:.3f})"
            for k in keys
        ]
        capped = "*" if block["capped"] else " "
        print(
            f"{block['gallery_size']:>6}{capped} {block['enroll_count']:>2}  "
            f"{100 * block['rank1']['mean']:5.2f}% ± {100 * block['rank1']['std']:.2f}   " + "  ".join(cells)
        )
    ident = result["identify_threshold"]
    print(
        f"identify threshold d² {ident['value']:.4f}: FPIR target {ident['target_fpir']:g} at "
        f"{ident['reference_gallery_size']} people × {ident['reference_enroll_count']}; held-out FPIR "
        f"{ident['fpir_heldout']:.4f} (×{ident['fpir_heldout_ratio_to_target']:.2f} of target, "
        f"within 2×: {ident['within_factor_2']}), DIR {100 * ident['dir_heldout']:.2f}%"
    )
    disjoint = ident["person_disjoint_check"]
    ratios = ", ".join(
        f"{d['fpir_measured']['mean']:.4f} (×{d['ratio_to_target']:.2f}, d² {d['threshold']:.4f})"
        for d in disjoint["directions"]
    )
    print(
        f"person-disjoint check ({disjoint['gallery_size']} people × {disjoint['enroll_count']} per half, "
        f"chosen on one half of LFW's people, measured on the other, both ways): FPIR {ratios}"
    )
    for row in result["operating_points"]:
        v, i = row["verification_threshold"], row["identify_threshold"]
        print(
            f"{row['gallery_size']:>6} × {row['enroll_count']}: verification d² {v['threshold']:.3f} "
            f"FPIR {100 * v['fpir_mean']:.2f}% DIR {100 * v['dir_mean']:.2f}% | identify d² "
            f"{i['threshold']:.3f} FPIR {100 * i['fpir_mean']:.2f}% DIR {100 * i['dir_mean']:.2f}%"
        )


def update_card(path: Path, card: ModelCard, result: dict[str, Any]) -> None:
    """identify_threshold + a compact metrics["openset"] (no curves, no per-rotation lists)."""
    ident = result["identify_threshold"]
    configs = [
        {
            "gallery_size": b["gallery_size"],
            "gallery_size_requested": b["gallery_size_requested"],
            "cap_reason": b["cap_reason"],
            "enroll_count": b["enroll_count"],
            "genuine_probes": b["genuine_probes"]["mean"],
            "unknown_probes": b["unknown_probes"]["mean"],
            "rank1": {"mean": b["rank1"]["mean"], "std": b["rank1"]["std"]},
            "dir_at_fpir": {k: {"mean": v["mean"], "std": v["std"]} for k, v in b["dir_at_fpir"].items()},
            "threshold_at_fpir": {
                k: {"mean": v["mean"], "std": v["std"]} for k, v in b["threshold_at_fpir"].items()
            },
        }
        for b in result["results"]
    ]
    openset = {
        "target_fpir": ident["target_fpir"],
        "reference_gallery_size": ident["reference_gallery_size"],
        "reference_enroll_count": ident["reference_enroll_count"],
        "identify_threshold": ident["value"],
        "fpir_heldout": ident["fpir_heldout"],
        "fpir_heldout_ratio_to_target": ident["fpir_heldout_ratio_to_target"],
        "dir_heldout": ident["dir_heldout"],
        "person_disjoint_check": {
            k: v for k, v in ident["person_disjoint_check"].items() if k != "directions"
        }
        | {
            "fpir_measured": [
                d["fpir_measured"]["mean"] for d in ident["person_disjoint_check"]["directions"]
            ],
            "thresholds": [d["threshold"] for d in ident["person_disjoint_check"]["directions"]],
        },
        "rotations": result["rotations"],
        "seed": result["seed"],
        "protocol": result["protocol"],
        "pipeline": result["pipeline"],
        "results": configs,
        "operating_points": result["operating_points"],
        "command": result["command"],
        "date": result["date"],
    }
    metrics = dict(card.metrics)
    metrics["openset"] = openset
    updated = card.model_copy(update={"identify_threshold": ident["value"], "metrics": metrics})
    updated.save(path)


if __name__ == "__main__":
    sys.exit(main())
