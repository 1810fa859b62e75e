"""``python -m models.train.fusion``: train the fused projection (``train``) or compare every variant on
held-out LFW people (``heldout``). The model itself is models/train/fusion_model.py, the evaluation
models/train/fusion_eval.py; this command only wires them together (so neither imports the other's caller).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from models.train import fusion_eval
from models.train.fusion_data import LANDMARKS_FILE, load_embeddings, load_faces
from models.train.fusion_model import (
    LOSS_NAMES,
    REPO_ROOT,
    FusionConfig,
    config_from,
    save_projection,
    train_fusion,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m models.train.fusion",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("heldout", "train per held-out half and compare every variant (JSON + summary.md)"),
        ("train", "train the shipped projection on all LFW people"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--data",
            type=Path,
            default=REPO_ROOT / "runs" / "fusion",
            help="models.train.fusion_data output (landmarks.npz, <backbone>.npz)",
        )
        p.add_argument("--backbones", nargs="+", default=["sface", "dlib"])
        p.add_argument("--lfw-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "lfw")
        p.add_argument("--steps", type=int, default=FusionConfig.steps)
        p.add_argument("--lr", type=float, default=FusionConfig.lr)
        p.add_argument("--margin", type=float, default=FusionConfig.margin)
        p.add_argument("--identities-per-batch", type=int, default=FusionConfig.identities_per_batch)
        p.add_argument("--images-per-identity", type=int, default=FusionConfig.images_per_identity)
        p.add_argument("--hidden", type=int, default=0, help="MLP hidden units (0: linear)")
        p.add_argument("--seed", type=int, default=0)
    held = sub.choices["heldout"]
    held.add_argument("--losses", nargs="+", default=list(LOSS_NAMES), choices=list(LOSS_NAMES))
    held.add_argument("--mlp-hidden", type=int, default=256, help="also try the MLP with semihard (0: skip)")
    held.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "train" / "results" / "fusion")
    train = sub.choices["train"]
    train.add_argument("--loss", default="semihard", choices=list(LOSS_NAMES))
    train.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "fusion" / "projection.npz")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The matrices are small: one thread is faster than contending for the cores.
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raw = sys.argv[1:] if argv is None else argv
    command = "python -m models.train.fusion " + shlex.join(raw)
    faces = load_faces(args.data / LANDMARKS_FILE)
    backbones = {name: load_embeddings(args.data / f"{name}.npz") for name in args.backbones}
    data = fusion_eval.LfwEmbeddings.build(faces, backbones)
    if args.command == "train":
        labels = np.unique(np.array(faces.people), return_inverse=True)[1].astype(np.int64)
        config = config_from(args, args.loss, args.hidden)
        trained = train_fusion(data.plain, data.flipped, labels, config)
        meta = {
            "command": command,
            "config": config.to_dict(),
            "train_people": trained.identities,
            "train_images": trained.images,
            "data": "all LFW people with >= 2 images (deep-funneled), plain + mirrored crops",
            "final_loss": float(np.mean(trained.losses[-50:])),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        save_projection(args.out, trained, args.backbones, meta)
        print(f"projection {args.out}: {trained.identities} people, {trained.images} images, {meta}")
        return 0
    return fusion_eval.run_heldout(args, data, command)


if __name__ == "__main__":
    sys.exit(main())
