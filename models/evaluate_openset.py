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

The size ladder: the same choice (``--target-fpir`` on the pooled first half of the rotations, FPIR
and DIR measured on the other half) at each of ``--ladder-sizes`` people, for each of
``--ladder-enroll-counts`` photos per person, with more rotations for smaller galleries
(``--rotations`` × 1000 / size, at most 100: their stranger rate swings with who is enrolled).
Its galleries are drawn among everyone with at least k
photos (anyone may be enrolled; those with more photos give the genuine probes), so LFW allows 3,000
people. ``--update-card`` writes the ladders as ``identify_threshold_by_size`` (the service reads them
at a collection's number of subjects, log-size interpolation clamped at the ends, and between the
ladders at its photos per subject) and the side-by-side comparison into
``metrics["openset"]["size_ladder"]``. The comparison
draws fresh galleries (seed ``--seed + 1``) at ``--compare-sizes`` and measures FPIR and DIR of the
fixed ``identify_threshold`` and of the ladder read at each size (plot ``openset_<model>_by_size.png``).

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
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.evaluate_lfw import REPO_ROOT, add_pipeline_arguments, embed_lfw_images
from models.openset import (
    dir_at_threshold,
    effective_gallery_size,
    evaluate_openset,
    find_config,
    fpir_at_threshold,
    fpir_key,
    person_disjoint_check,
    rotation_split,
    score_split,
)
from service.runtime.model_card import IdentifyThresholdBySize, ModelCard
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
    parser.add_argument(
        "--ladder-sizes", type=int, nargs="+", default=[10, 30, 100, 300, 1000, 3000], help="people"
    )
    parser.add_argument("--ladder-enroll-counts", type=int, nargs="+", default=[1, 5])
    parser.add_argument(
        "--compare-sizes",
        type=int,
        nargs="+",
        default=[10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 3000],
        help="gallery sizes of the fixed-vs-ladder comparison",
    )
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


def rotations_at(gallery_size: int, rotations: int) -> int:
    """Seeded rotations for a gallery size: ``rotations`` at 1,000 people and beyond, more for smaller
    galleries (up to 100), whose stranger rate swings with who happens to be enrolled (one look-alike
    in a 10-person gallery moves it a lot) and which are cheap to score."""
    return int(min(max(rotations, math.ceil(rotations * 1000 / gallery_size)), max(rotations, 100)))


def size_ladders(
    embeddings: NDArray[np.float32], labels: NDArray[np.int64], args: argparse.Namespace
) -> dict[int, dict[str, Any]]:
    """Per enrolled-photo count: the ``--target-fpir`` threshold at each ladder size, held-out figures."""
    key = fpir_key(args.target_fpir)
    blocks: list[dict[str, Any]] = []
    for size in sorted(set(args.ladder_sizes)):
        report = evaluate_openset(
            embeddings,
            labels,
            gallery_sizes=(size,),
            enroll_counts=tuple(sorted(set(args.ladder_enroll_counts))),
            fpirs=(args.target_fpir,),
            rotations=rotations_at(size, args.rotations),
            seed=args.seed,
            probe_photos=0,
        )
        blocks.extend(dict(block, rotations=report["rotations"]) for block in report["results"])
    ladders: dict[int, dict[str, Any]] = {}
    for block in sorted(blocks, key=lambda b: (b["enroll_count"], b["gallery_size_requested"])):
        held = block["heldout"]
        if not held:
            raise SystemExit("--rotations must be >= 2 to hold rotations out")
        ladder = ladders.setdefault(
            block["enroll_count"],
            {
                "target_fpir": args.target_fpir,
                "enroll_count": block["enroll_count"],
                "held_out": "each step: threshold chosen on the pooled first half of its rotations, "
                "FPIR and DIR measured on the other half",
                "seed": args.seed,
                "protocol": report["protocol"],
                "steps": [],
            },
        )
        if ladder["steps"] and ladder["steps"][-1]["gallery_size"] == block["gallery_size"]:
            continue  # a larger size capped to the one before: nothing new
        chosen = held[key]
        ladder["steps"].append(
            {
                "gallery_size": block["gallery_size"],
                "threshold": round(chosen["threshold"], 6),
                "gallery_size_requested": block["gallery_size_requested"],
                "cap_reason": block["cap_reason"],
                "rotations": block["rotations"],
                "threshold_per_rotation_mean": block["threshold_at_fpir"][key]["mean"],
                "threshold_per_rotation_std": block["threshold_at_fpir"][key]["std"],
                "fpir_heldout": chosen["fpir_measured"]["mean"],
                "fpir_heldout_std": chosen["fpir_measured"]["std"],
                "dir_heldout": float(np.nanmean(chosen["dir_measured"]["per_rotation"])),
                "unknown_probes": block["unknown_probes"]["mean"],
                "genuine_probes": block["genuine_probes"]["mean"],
            }
        )
    return ladders


def compare_rules(
    embeddings: NDArray[np.float32],
    labels: NDArray[np.int64],
    rules: dict[str, IdentifyThresholdBySize | float],
    *,
    sizes: list[int],
    enroll_counts: list[int],
    rotations: int,
    seed: int,
) -> list[dict[str, Any]]:
    """FPIR and DIR of each rule (a fixed threshold, or a ladder read at the gallery's size) on fresh
    seeded galleries of every size and photo count (drawn as the ladder's are)."""
    rows: list[dict[str, Any]] = []
    for enroll_count in sorted(set(enroll_counts)):
        done: set[int] = set()
        for requested in sorted(set(sizes)):
            size, reason = effective_gallery_size(labels, requested, enroll_count, probe_photos=0)
            if size in done:
                continue
            done.add(size)
            faces = size * enroll_count
            thresholds = {
                name: rule.at(size, faces) if isinstance(rule, IdentifyThresholdBySize) else rule
                for name, rule in rules.items()
            }
            fpirs: dict[str, list[float]] = {name: [] for name in rules}
            dirs: dict[str, list[float]] = {name: [] for name in rules}
            for rotation in range(rotations_at(size, rotations)):
                split = rotation_split(labels, size, enroll_count, seed, rotation, probe_photos=0)
                scores = score_split(embeddings, labels, split)
                for name, t in thresholds.items():
                    fpirs[name].append(fpir_at_threshold(scores.unknown_best, t))
                    dirs[name].append(dir_at_threshold(scores.genuine_best, scores.genuine_correct, t))
            rows.append(
                {
                    "gallery_size": size,
                    "gallery_size_requested": requested,
                    "cap_reason": reason,
                    "enroll_count": enroll_count,
                    "rotations": rotations_at(size, rotations),
                    **{
                        name: {
                            "threshold": round(thresholds[name], 6),
                            "fpir_mean": float(np.mean(fpirs[name])),
                            "fpir_std": float(np.std(fpirs[name])),
                            "dir_mean": float(np.nanmean(dirs[name])),
                            "dir_std": float(np.nanstd(dirs[name])),
                        }
                        for name in rules
                    },
                }
            )
    return rows


def plot_by_size(comparison: list[dict[str, Any]], target_fpir: float, path: Path, title: str) -> Path:
    """FPIR and DIR against gallery size (log axis) for the fixed threshold and the size ladder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fpir, ax_dir) = plt.subplots(1, 2, figsize=(10.0, 4.4), dpi=120)
    styles = {"fixed": ("tab:grey", "fixed identify_threshold"), "by_size": ("tab:blue", "ladder by size")}
    for enroll_count, marker in zip(sorted({r["enroll_count"] for r in comparison}), "os^v", strict=False):
        rows = [r for r in comparison if r["enroll_count"] == enroll_count]
        sizes = [r["gallery_size"] for r in rows]
        for rule, (color, label) in styles.items():
            fpir = np.asarray([r[rule]["fpir_mean"] for r in rows])
            fpir_std = np.asarray([r[rule]["fpir_std"] for r in rows])
            dirs = np.asarray([r[rule]["dir_mean"] for r in rows])
            name = f"{label}, {enroll_count} photo(s)/person"
            line = "-" if enroll_count == 1 else "--"
            ax_fpir.plot(sizes, 100 * fpir, line, marker=marker, color=color, label=name)
            ax_fpir.fill_between(
                sizes,
                100 * np.maximum(fpir - fpir_std, 0.0),
                100 * (fpir + fpir_std),
                color=color,
                alpha=0.08,
            )
            ax_dir.plot(sizes, 100 * dirs, line, marker=marker, color=color, label=name)
    ax_fpir.axhline(100 * target_fpir, color="black", linewidth=0.8, label=f"target {100 * target_fpir:g}%")
    ax_fpir.axhspan(50 * target_fpir, 200 * target_fpir, color="green", alpha=0.07, label="×2 of target")
    for ax in (ax_fpir, ax_dir):
        ax.set_xscale("log")
        ax.set_xlabel("gallery size (people enrolled)")
        ax.grid(True, which="both", alpha=0.3)
    ax_fpir.set_ylabel("FPIR % (strangers given a name)")
    ax_dir.set_ylabel("DIR % (known people named correctly)")
    ax_fpir.legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
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
    ladders = size_ladders(embeddings, labels, args)
    served = IdentifyThresholdBySize.model_validate(
        {"target_fpir": args.target_fpir, "ladders": [ladders[k] for k in sorted(ladders)]}
    )
    comparison = compare_rules(
        embeddings,
        labels,
        {"fixed": identify["value"], "by_size": served},
        sizes=args.compare_sizes,
        enroll_counts=args.ladder_enroll_counts,
        rotations=args.rotations,
        seed=args.seed + 1,
    )
    size_ladder = {
        "ladders": [ladders[k] for k in sorted(ladders)],
        "comparison": {
            "seed": args.seed + 1,
            "rotations_at_1000_people": args.rotations,
            "fixed_threshold": identify["value"],
            "rows": comparison,
            "fpir_within_factor_2": {
                rule: all(
                    args.target_fpir / HELDOUT_TOLERANCE
                    <= row[rule]["fpir_mean"]
                    <= args.target_fpir * HELDOUT_TOLERANCE
                    for row in comparison
                )
                for rule in ("fixed", "by_size")
            },
        },
    }
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
        "size_ladder": size_ladder,
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
        size_plot = plot_by_size(
            comparison,
            args.target_fpir,
            directory / f"openset_{card.name}_by_size.png",
            f"LFW open set by gallery size — {card.name}",
        )
        print(f"report {report_path}\nplot   {plot_path}\nplot   {size_plot}")

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
    ladder = result["size_ladder"]
    for each in ladder["ladders"]:
        steps = ", ".join(
            f"{s['gallery_size']}: {s['threshold']:.4f} (±{s['threshold_per_rotation_std']:.3f}, "
            f"held-out FPIR {100 * s['fpir_heldout']:.2f}%)"
            for s in each["steps"]
        )
        print(f"ladder, {each['enroll_count']} photo(s)/person, d² at FPIR {each['target_fpir']:g}: {steps}")
    fixed = ladder["comparison"]["fixed_threshold"]
    print(f"fixed d² {fixed:.4f} vs the ladders read at each size:")
    for row in ladder["comparison"]["rows"]:
        f, b = row["fixed"], row["by_size"]
        print(
            f"{row['gallery_size']:>6} × {row['enroll_count']}: fixed FPIR {100 * f['fpir_mean']:5.2f}% "
            f"DIR {100 * f['dir_mean']:5.2f}% | ladder d² {b['threshold']:.4f} "
            f"FPIR {100 * b['fpir_mean']:5.2f}% DIR {100 * b['dir_mean']:5.2f}%"
        )
    print(f"FPIR within ×2 of target at every size: {ladder['comparison']['fpir_within_factor_2']}")
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
        "size_ladder": result["size_ladder"],
        "command": result["command"],
        "date": result["date"],
    }
    metrics = dict(card.metrics)
    metrics["openset"] = openset
    ladders = result["size_ladder"]["ladders"]
    by_size = IdentifyThresholdBySize.model_validate(
        {
            "target_fpir": ident["target_fpir"],
            "ladders": [{"enroll_count": each["enroll_count"], "steps": each["steps"]} for each in ladders],
            "held_out": ladders[0]["held_out"],
            "command": result["command"],
        }
    )
    updated = card.model_copy(
        update={
            "identify_threshold": ident["value"],
            "identify_threshold_by_size": by_size,
            "metrics": metrics,
        }
    )
    updated.save(path)


if __name__ == "__main__":
    sys.exit(main())
