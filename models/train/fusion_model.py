"""The fused embedding: two backbones' unit vectors → concatenated → learned projection → 128-d unit vector.

The backbones stay frozen; only the projection is trained, with the triplet-loss pipeline of this package
(P×K batches, online mining), on embeddings precomputed once by ``models.train.fusion_data``. That makes a
training run a matter of seconds on the CPU. The command line (``python -m models.train.fusion``) is
models/train/fusion.py; the held-out evaluation models/train/fusion_eval.py; both build on this module.

Initialisation: the concatenation is first weighted so that its squared distance *is* score fusion,
``d²_fused = d²_a / m_a + d²_b / m_b`` (m = mean d² of each backbone over random pairs of training
images, no labels used), and the projection starts as the top-128 principal axes of those weighted
training vectors: at step 0 the model is the best 128-d linear approximation of score fusion.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn import functional

from models.train.data import PKBatchSampler
from models.train.losses import EmbeddingLoss, LiftedStructuredLoss, SoftmaxRatioLoss, TripletMarginLoss
from models.train.miners import BatchAllMiner, BatchHardMiner, SemiHardMiner
from models.train.reducers import AvgNonZeroReducer, MeanReducer

LossName = Literal["semihard", "batch_hard", "batch_all", "lifted", "softmax_ratio"]
LOSS_NAMES: tuple[LossName, ...] = ("semihard", "batch_hard", "batch_all", "lifted", "softmax_ratio")
FUSED_DIM = 128
logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


def l2_normalize(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def mean_squared_distance(vectors: NDArray[np.float32], samples: int = 20_000, seed: int = 0) -> float:
    """Mean d² between random pairs of rows (label-free scale of a backbone's distances)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(vectors), size=samples)
    b = rng.integers(0, len(vectors), size=samples)
    keep = a != b
    diff = vectors[a[keep]].astype(np.float64) - vectors[b[keep]].astype(np.float64)
    return float((diff**2).sum(axis=1).mean())


def concatenate(parts: Sequence[NDArray[np.float32]], weights: Sequence[float]) -> NDArray[np.float32]:
    """Unit vectors of each backbone, each scaled by its weight, side by side."""
    return np.ascontiguousarray(
        np.concatenate(
            [l2_normalize(p) * np.float32(w) for p, w in zip(parts, weights, strict=True)], axis=1
        ),
        dtype=np.float32,
    )


def score_fusion_weights(parts: Sequence[NDArray[np.float32]]) -> list[float]:
    """Weights 1/√m so the weighted concatenation's d² equals Σ d²_i / m_i (score fusion)."""
    return [1.0 / math.sqrt(mean_squared_distance(l2_normalize(p))) for p in parts]


def pca_axes(features: NDArray[np.float32], dim: int) -> NDArray[np.float32]:
    """(dim, D) top principal axes of the centred rows (distances ignore the centre), from the D×D
    covariance so that there are always D axes, even with fewer rows than dimensions."""
    x = features.astype(np.float64)
    centred = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return np.ascontiguousarray(vectors[:, ::-1][:, :dim].T, dtype=np.float32)


class FusionProjection(nn.Module):
    """Weighted concatenation → linear (or a small residual MLP) → L2 normalisation.

    ``weight`` is the (out, in) projection; the MLP variant adds ``W₂·relu(W₁·x)`` to the linear path,
    starting at zero so it begins where the linear model does.
    """

    def __init__(self, in_dim: int, out_dim: int = FUSED_DIM, hidden: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.hidden = hidden
        self.mlp: nn.Sequential | None = None
        if hidden > 0:
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
            last = self.mlp[2]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear(x)
        if self.mlp is not None:
            out = out + self.mlp(x)
        return functional.normalize(out, dim=1)


def build_loss(name: LossName, margin: float) -> EmbeddingLoss:
    """The pipeline's losses with each miner's usual reducer (as ``models.train.trainer.build_loss``)."""
    if name == "semihard":
        return TripletMarginLoss(margin, SemiHardMiner(), MeanReducer())
    if name == "batch_hard":
        return TripletMarginLoss(margin, BatchHardMiner(), MeanReducer())
    if name == "batch_all":
        return TripletMarginLoss(margin, BatchAllMiner(), AvgNonZeroReducer())
    if name == "lifted":
        return LiftedStructuredLoss(1.0)
    if name == "softmax_ratio":
        return SoftmaxRatioLoss()
    raise ValueError(f"unknown loss {name!r}")


@dataclass(frozen=True)
class FusionConfig:
    loss: LossName = "semihard"
    margin: float = 0.2
    steps: int = 300
    identities_per_batch: int = 64
    images_per_identity: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    hidden: int = 0  # 0: linear projection; >0: residual MLP with this many hidden units
    flip_probability: float = 0.5
    min_images: int = 2
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainedFusion:
    weights: list[float]  # per-backbone scale of the concatenation
    model: FusionProjection
    config: FusionConfig
    losses: list[float] = field(default_factory=list)
    identities: int = 0
    images: int = 0

    @torch.no_grad()
    def embed(self, parts: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
        features = torch.from_numpy(concatenate(parts, self.weights))
        self.model.eval()
        return np.ascontiguousarray(self.model(features).numpy(), dtype=np.float32)


def usable_rows(labels: NDArray[np.int64], min_images: int) -> NDArray[np.int64]:
    """Rows whose identity has at least ``min_images`` images (a P×K batch needs positives)."""
    counts = np.bincount(labels)
    return np.flatnonzero(counts[labels] >= min_images).astype(np.int64)


def train_fusion(
    plain: Sequence[NDArray[np.float32]],
    flipped: Sequence[NDArray[np.float32]],
    labels: NDArray[np.int64],
    config: FusionConfig,
    progress: bool = False,
) -> TrainedFusion:
    """Train the projection on the training people's precomputed embeddings (plain and mirrored crops)."""
    torch.manual_seed(config.seed)
    weights = score_fusion_weights(plain)
    features = torch.from_numpy(concatenate(plain, weights))
    features_flipped = torch.from_numpy(concatenate(flipped, weights))
    model = FusionProjection(features.shape[1], FUSED_DIM, config.hidden)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(pca_axes(features.numpy(), FUSED_DIM)))

    rows = usable_rows(labels, config.min_images)
    _, compact = np.unique(labels[rows], return_inverse=True)
    sampler = PKBatchSampler(
        compact.astype(np.int64), config.identities_per_batch, config.images_per_identity, config.seed
    )
    loss_fn = build_loss(config.loss, config.margin)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, config.steps))))
    )
    rng = np.random.default_rng(config.seed)
    trained = TrainedFusion(weights, model, config, identities=int(compact.max()) + 1, images=len(rows))
    model.train()
    for step in range(config.steps):
        batch = rows[sampler.batch(step)]
        flip = torch.from_numpy(rng.random(len(batch)) < config.flip_probability)
        index = torch.from_numpy(batch)
        x = torch.where(flip[:, None], features_flipped[index], features[index])
        batch_labels = torch.from_numpy(labels[batch])
        loss = loss_fn(model(x), batch_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
        trained.losses.append(float(loss.detach()))
        if progress and step % 250 == 0:
            logger.info("step %5d loss %.4f", step, trained.losses[-1])
    model.eval()
    return trained


def pca_only(plain: Sequence[NDArray[np.float32]]) -> TrainedFusion:
    """The untrained start: weighted concatenation → PCA-128 → normalise (the initialisation alone)."""
    weights = score_fusion_weights(plain)
    features = concatenate(plain, weights)
    model = FusionProjection(features.shape[1], FUSED_DIM, 0)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(pca_axes(features, FUSED_DIM)))
    model.eval()
    return TrainedFusion(weights, model, FusionConfig(steps=0))


def save_projection(path: Path, trained: TrainedFusion, backbones: list[str], meta: dict[str, Any]) -> None:
    """The trained head as plain arrays (+ JSON metadata): what the ONNX export composes."""
    if trained.model.mlp is not None:
        raise ValueError("only the linear projection is exported")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        weights=np.asarray(trained.weights, dtype=np.float32),
        projection=trained.model.linear.weight.detach().numpy().astype(np.float32),
        backbones=np.array(backbones),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )


@dataclass(frozen=True)
class SavedProjection:
    backbones: list[str]
    weights: NDArray[np.float32]  # (parts,) scale of each backbone's unit vector
    projection: NDArray[np.float32]  # (128, sum of dims)
    meta: dict[str, Any]

    def embed(self, parts: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
        """The NumPy reference of the fused head (what the ONNX graph must reproduce)."""
        features = concatenate(parts, [float(w) for w in self.weights])
        return l2_normalize(features @ self.projection.T)


def load_projection(path: Path) -> SavedProjection:
    with np.load(path, allow_pickle=False) as data:
        return SavedProjection(
            [str(b) for b in data["backbones"]],
            data["weights"].astype(np.float32),
            data["projection"].astype(np.float32),
            json.loads(str(data["meta"])),
        )


def config_from(args: argparse.Namespace, loss: LossName, hidden: int) -> FusionConfig:
    return FusionConfig(
        loss=loss,
        margin=args.margin,
        steps=args.steps,
        identities_per_batch=args.identities_per_batch,
        images_per_identity=args.images_per_identity,
        lr=args.lr,
        hidden=hidden,
        seed=args.seed,
    )
