"""The training loop: P×K batches, online mining, AMP on CUDA, checkpoints/resume, metrics CSV."""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from models.lfw import fold_people, read_pairs
from models.train.augment import AugmentConfig, augment, crops_to_float, to_network_input
from models.train.backbones import build_model, count_parameters, default_device, freeze_batchnorm_statistics
from models.train.config import TrainConfig
from models.train.data import CropCache, PKBatchSampler, build_aligner, images_root, load_training_set
from models.train.distances import label_masks, pairwise_squared_distances
from models.train.losses import EmbeddingLoss, LiftedStructuredLoss, SoftmaxRatioLoss, TripletMarginLoss
from models.train.miners import BatchAllMiner, BatchHardMiner, SemiHardMiner, TripletMiner
from models.train.reducers import AvgNonZeroReducer, MeanReducer, Reducer
from service.runtime.glibc import glibc

logger = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "loss", "active_fraction", "mean_d_ap", "mean_d_an", "lr", "seconds"]
CHECKPOINT_NAME = "last.pt"


def build_loss(config: TrainConfig) -> EmbeddingLoss:
    """Triplet loss with the miner's usual reducer (batch all averages over active triplets only)."""
    if config.loss == "softmax_ratio":
        return SoftmaxRatioLoss()
    if config.loss == "lifted":
        return LiftedStructuredLoss(config.margin)
    miners: dict[str, tuple[TripletMiner, Reducer]] = {
        "semihard": (SemiHardMiner(), MeanReducer()),
        "batch_hard": (BatchHardMiner(), MeanReducer()),
        "batch_all": (BatchAllMiner(), AvgNonZeroReducer()),
    }
    miner, reducer = miners[config.miner]
    return TripletMarginLoss(config.margin, miner, reducer)


@torch.no_grad()
def batch_statistics(embeddings: Tensor, labels: Tensor, margin: float) -> dict[str, float]:
    """Loss-independent progress signals on squared distances: the share of all valid triplets that
    still violate the margin, and mean same-identity / different-identity distances."""
    distances = pairwise_squared_distances(embeddings.float())
    positive, negative = label_masks(labels)
    valid = positive[:, :, None] & negative[:, None, :]
    violation = distances[:, :, None] - distances[:, None, :] + margin
    active = (violation > 0) & valid
    return {
        "active_fraction": float(active.sum() / valid.sum().clamp_min(1)),
        "mean_d_ap": float(distances[positive].mean()) if bool(positive.any()) else math.nan,
        "mean_d_an": float(distances[negative].mean()) if bool(negative.any()) else math.nan,
    }


def excluded_people(config: TrainConfig) -> set[str]:
    """Everyone appearing in the held-out LFW folds (pairs.txt folds are person-disjoint)."""
    if not config.holdout_folds:
        return set()
    if config.lfw_pairs is None:
        raise ValueError("holdout_folds needs lfw_pairs")
    pairs = read_pairs(config.lfw_pairs, images_root(config.lfw_pairs.parent))
    people = fold_people(pairs)
    unknown = [f for f in config.holdout_folds if f - 1 not in people]
    if unknown:
        raise ValueError(f"{config.lfw_pairs} has no fold(s) {unknown}")
    return set().union(*(people[f - 1] for f in config.holdout_folds))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    checkpoint: Path
    metrics_csv: Path
    steps: int


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _keep_metrics_before(path: Path, step: int) -> None:
    """On resume, drop rows logged after the checkpoint so the CSV has each step once."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) < step]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1  # mallopt takes an int; glibc 2.36 accepts it for both thresholds


def keep_freed_memory() -> bool:
    """Stop glibc from handing each step's activation buffers back to the kernel.

    On the CPU every step frees and re-allocates the same large tensors; by default glibc unmaps
    them and the next step page-faults them back in, which on the 2-core box spent more time in the
    kernel than in the model. Measured on SFace, P×K = 32×4: ~18 s → ~9 s per step, for a higher
    peak RSS (8.9 GB → 13-18 GB, the freed memory stays mapped). Linux/glibc only.
    """
    libc = glibc()
    if libc is None:
        return False
    try:
        trimmed = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(_INT_MAX))
        mapped = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_INT_MAX))
    except AttributeError:  # a C library without mallopt
        return False
    return bool(trimmed and mapped)


def train(config: TrainConfig, command: str, stop_at: int | None = None) -> TrainResult:
    """Train, checkpoint every ``checkpoint_every`` steps and at the end; returns where things went.

    ``stop_at`` ends this session early (checkpoint written) at that step, for time-sliced machines;
    run again with ``resume`` to finish the schedule, which still spans ``config.steps``.
    """
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = default_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    elif config.keep_freed_memory and keep_freed_memory():
        logger.info("glibc malloc keeps freed memory (CPU training: no unmap/fault churn per step)")
    run_dir = config.out_dir
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.csv"

    excluded = excluded_people(config)
    cache = CropCache(config.cache_dir, build_aligner(config.aligner, config.detector_model, config.threads))
    data = load_training_set(
        images_root(config.data_root),
        cache,
        config.min_images,
        excluded,
        config.max_identities,
        config.max_images_per_identity,
        config.progress,
    )
    leaked = set(data.identities) & excluded
    if leaked:  # cannot happen by construction; protocol honesty is worth the check
        raise RuntimeError(f"held-out people in the training set: {sorted(leaked)[:5]}")
    data_summary: dict[str, Any] = {
        "root": str(config.data_root),
        "holdout_folds": config.holdout_folds,
        "excluded_people": len(excluded),
        **data.summary(),
    }

    model, spec = build_model(config)
    model.to(device)
    logger.info("model %s: %d trainable parameters on %s", config.backbone, count_parameters(model), device)
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps)
    )
    loss_fn = build_loss(config)
    sampler = PKBatchSampler(
        data.labels, config.identities_per_batch, config.images_per_identity, config.seed
    )
    augment_config = AugmentConfig(config.flip, config.max_zoom, config.max_shift, config.color_jitter)
    generator = torch.Generator().manual_seed(config.seed)
    crops = torch.from_numpy(data.crops)
    labels_all = torch.from_numpy(data.labels)
    if device.type == "cuda":
        crops, labels_all = crops.to(device), labels_all.to(device)
    use_amp = config.amp and device.type == "cuda"

    start_step = 0
    commands = [command]
    checkpoint_path = checkpoints / CHECKPOINT_NAME
    if config.resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        commands = [*state.get("commands", [state["command"]]), command]
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["augment_rng"].cpu())
        start_step = int(state["step"])
        logger.info("resumed from %s at step %d", checkpoint_path, start_step)
    _keep_metrics_before(metrics_path, start_step)
    (run_dir / "config.json").write_text(json.dumps(config.to_json_dict(), indent=2) + "\n")
    (run_dir / "identities.json").write_text(json.dumps(data.identities, indent=0) + "\n")

    writer = _tensorboard(run_dir) if config.tensorboard else None
    new_file = not metrics_path.is_file()
    started = time.monotonic()

    def save(step: int) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "augment_rng": generator.get_state(),
            "step": step,
            "config": config.to_json_dict(),
            "input_spec": spec.model_dump(),
            "command": commands[0],
            "commands": commands,
            "data": data_summary,
        }
        tmp = checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(checkpoint_path)

    with metrics_path.open("a", newline="") as handle:
        csv_writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
        if new_file:
            csv_writer.writeheader()
        end_step = config.steps if stop_at is None else min(stop_at, config.steps)
        bar = tqdm(
            range(start_step, end_step),
            initial=start_step,
            total=config.steps,
            desc="train",
            unit="step",
            disable=not config.progress,
        )
        for step in bar:
            model.train()
            if config.frozen_batchnorm:
                freeze_batchnorm_statistics(model)
            index = torch.from_numpy(sampler.batch(step)).to(crops.device)
            labels = labels_all[index].to(device)
            images = crops_to_float(crops[index].to(device))
            images = to_network_input(augment(images, augment_config, generator), spec)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                embeddings = model(images)
            embeddings = embeddings.float()
            loss = loss_fn(embeddings, labels)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()

            stats = batch_statistics(embeddings.detach(), labels, config.margin)
            row = {
                "step": step,
                "loss": float(loss.detach()),
                **stats,
                "lr": lr,
                "seconds": round(time.monotonic() - started, 3),
            }
            csv_writer.writerow(row)
            bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                active=f"{stats['active_fraction']:.3f}",
                d_ap=f"{stats['mean_d_ap']:.3f}",
                d_an=f"{stats['mean_d_an']:.3f}",
            )
            if writer is not None:
                for name in ("loss", "active_fraction", "mean_d_ap", "mean_d_an", "lr"):
                    writer.add_scalar(name, row[name], step)
            if not np.isfinite(row["loss"]):
                raise FloatingPointError(f"loss became {row['loss']} at step {step}")
            if (step + 1) % config.checkpoint_every == 0:
                handle.flush()
                save(step + 1)
        bar.close()
    save(max(end_step, start_step))
    if writer is not None:
        writer.close()
    return TrainResult(run_dir, checkpoint_path, metrics_path, max(end_step, start_step))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("TensorBoard logging asked for but the tensorboard package is missing; CSV only")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
