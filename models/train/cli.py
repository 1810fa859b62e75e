"""``python -m models.train <command>``: prepare (align + cache), train, export, evaluate, summarize.

Every training option is a field of TrainConfig: give a JSON file with ``--config`` and/or flags
(``--backbone small_cnn --holdout-folds 1-5 ...``); flags win. ``--help`` on a command lists them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from models.train.config import ARTIFACTS, DEFAULT_LFW, REPO_ROOT, TrainConfig, load_config, parse_folds

logger = logging.getLogger(__name__)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    for name, field in TrainConfig.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar="VALUE",
            help=f"{field.description or ''} (default: {default})".strip(),
        )


def _config_from(args: argparse.Namespace) -> TrainConfig:
    overrides = {name: getattr(args, name) for name in TrainConfig.model_fields}
    return load_config(args.config, overrides)


def _cmd_prepare(args: argparse.Namespace, command: str) -> int:
    from models.train.data import CropCache, build_aligner, images_root, load_training_set
    from models.train.trainer import excluded_people

    config = _config_from(args)
    cache = CropCache(config.cache_dir, build_aligner(config.aligner, config.detector_model, config.threads))
    data = load_training_set(
        images_root(config.data_root),
        cache,
        config.min_images,
        excluded_people(config),
        config.max_identities,
        config.max_images_per_identity,
        config.progress,
    )
    print(json.dumps({"cache": str(cache.folder), **data.summary()}, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace, command: str) -> int:
    from models.train.trainer import train

    result = train(_config_from(args), command, stop_at=args.stop_at)
    print(f"checkpoint {result.checkpoint}\nmetrics    {result.metrics_csv}")
    return 0


def _cmd_export(args: argparse.Namespace, command: str) -> int:
    from models.train.export import export

    result = export(args.checkpoint, args.out, args.name, command, threshold=args.threshold)
    print(
        f"onnx {result.onnx_path}\ncard {result.card_path}\n"
        f"onnxruntime vs PyTorch max abs diff {result.max_abs_diff:.3g}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace, command: str) -> int:
    from models.train.data import CropCache, build_aligner
    from models.train.evaluate import evaluate

    cache = CropCache(args.cache_dir, build_aligner(args.aligner, args.detector_model, args.threads))
    report = evaluate(
        args.model_dir,
        args.card,
        args.lfw_dir,
        parse_folds(args.folds),
        cache,
        args.out,
        command,
        pairs_per_fold=args.pairs_per_fold,
        provider=args.provider,
        threads=args.threads,
        update_card=args.update_card,
    )
    v, ident = report["verification"], report["identification"]
    print(f"{report['model']}: {report['protocol']}, {v['n_pairs']} pairs")
    print(
        f"accuracy {100 * v['accuracy_mean']:.2f}% ± {100 * v['accuracy_std']:.2f}  AUC {v['roc_auc']:.4f}  "
        f"TAR@FAR=1e-3 {100 * v['tar_at_far_1e3']:.2f}%  threshold d² {v['threshold_mean']:.4f}"
    )
    print(
        f"rank-1 identification {100 * ident['rank1']:.2f}% "
        f"({ident['probes']} probes, {ident['gallery']} gallery)"
    )
    print(f"report {args.out / 'report.json'}")
    return 0


def _cmd_summarize(args: argparse.Namespace, command: str) -> int:
    from models.train.evaluate import summarize

    print(summarize(args.reports))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="detect, align and cache the training crops only")
    _add_config_flags(prepare)
    prepare.set_defaults(handler=_cmd_prepare)

    train = commands.add_parser("train", help="train (or resume with --resume true)")
    _add_config_flags(train)
    train.add_argument("--stop-at", type=int, help="end this session at that step (resume later)")
    train.set_defaults(handler=_cmd_train)

    export = commands.add_parser("export", help="checkpoint → ONNX + model card, checked against onnxruntime")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, required=True, help="folder for <name>.onnx and <name>.json")
    export.add_argument("--name", required=True)
    export.add_argument("--threshold", type=float, help="d² threshold for the card (default: provisional)")
    export.set_defaults(handler=_cmd_export)

    evaluate = commands.add_parser("evaluate", help="LFW verification + identification on held-out folds")
    evaluate.add_argument("--model-dir", type=Path, default=ARTIFACTS)
    evaluate.add_argument("--card", default="embedder.json")
    evaluate.add_argument("--folds", required=True, help="held-out folds, 1-based: '1-5'")
    evaluate.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW)
    evaluate.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache" / "aligned")
    evaluate.add_argument("--aligner", choices=["yunet", "prealigned"], default="yunet")
    evaluate.add_argument("--detector-model", type=Path, default=ARTIFACTS / "yunet_2023mar_fp32.onnx")
    evaluate.add_argument("--out", type=Path, required=True)
    evaluate.add_argument(
        "--pairs-per-fold", type=int, help="first n/2 same + n/2 different per fold (smoke runs)"
    )
    evaluate.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.add_argument("--threads", type=int, default=0)
    evaluate.add_argument(
        "--update-card", action="store_true", help="write threshold and metrics into the card"
    )
    evaluate.set_defaults(handler=_cmd_evaluate)

    summary = commands.add_parser("summarize", help="Markdown table over evaluation report.json files")
    summary.add_argument("reports", type=Path, nargs="+")
    summary.set_defaults(handler=_cmd_summarize)
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(raw)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m models.train " + shlex.join(raw)
    handler: Any = args.handler
    return int(handler(args, command))


if __name__ == "__main__":
    sys.exit(main())
