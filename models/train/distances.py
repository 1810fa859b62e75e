"""Pairwise distance matrices over a batch of embeddings.

Triplet losses here speak squared Euclidean distance (in [0, 4] on the unit sphere, the same scale as
the service's thresholds); the softmax-ratio and lifted structured losses follow their papers and use
plain Euclidean distance.
"""

from __future__ import annotations

import torch
from torch import Tensor

# sqrt has an infinite slope at 0; clamping keeps the gradient of coincident points finite (zero).
SQRT_EPS = 1e-12


def pairwise_squared_distances(embeddings: Tensor) -> Tensor:
    """(B, D) → (B, B) matrix of ‖x_i − x_j‖², exact zero on the diagonal, never negative."""
    squared_norms = (embeddings * embeddings).sum(dim=1)
    gram = embeddings @ embeddings.T
    distances = squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram
    # The Gram form can round slightly below zero for near-identical rows.
    distances = distances.clamp_min(0.0)
    off_diagonal = ~torch.eye(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
    return distances * off_diagonal


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """(B, D) → (B, B) matrix of ‖x_i − x_j‖ with a finite gradient everywhere."""
    return torch.sqrt(pairwise_squared_distances(embeddings).clamp_min(SQRT_EPS))


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean (B, B) masks: same identity (i ≠ j) and different identity."""
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & not_self, ~same
