"""Metric-learning losses over a batch of L2-normalised embeddings and their identity labels."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from models.train.distances import label_masks, pairwise_distances, pairwise_squared_distances
from models.train.miners import BatchAllMiner, TripletMiner
from models.train.reducers import MeanReducer, Reducer


class EmbeddingLoss(Protocol):
    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """(B, D) embeddings and (B,) integer labels → scalar loss."""
        ...


class TripletMarginLoss:
    """FaceNet's ``[‖f(a)−f(p)‖² − ‖f(a)−f(n)‖² + α]₊`` over the triplets a miner picks.

    Squared distances on the unit sphere lie in [0, 4], so α keeps one meaning across models.
    """

    def __init__(self, margin: float, miner: TripletMiner, reducer: Reducer) -> None:
        self.margin = margin
        self.miner = miner
        self.reducer = reducer

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        distances = pairwise_squared_distances(embeddings)
        triplets = self.miner(distances.detach(), labels)
        positive = distances[triplets.anchors, triplets.positives]
        negative = distances[triplets.anchors, triplets.negatives]
        return self.reducer(torch.relu(positive - negative + self.margin))


class SoftmaxRatioLoss:
    """Hoffer & Ailon (2015), "Deep metric learning using triplet network".

    With plain distances d₊ = ‖f(a)−f(p)‖, d₋ = ‖f(a)−f(n)‖, the pair (d₊, d₋) goes through a softmax and
    the loss is its squared distance to (0, 1): it asks for the ratio d₊/d₋ to vanish, with no margin.
    """

    def __init__(self, miner: TripletMiner | None = None, reducer: Reducer | None = None) -> None:
        self.miner: TripletMiner = miner if miner is not None else BatchAllMiner()
        self.reducer: Reducer = reducer if reducer is not None else MeanReducer()

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        distances = pairwise_distances(embeddings)
        triplets = self.miner(distances.detach(), labels)
        pair = torch.stack(
            [
                distances[triplets.anchors, triplets.positives],
                distances[triplets.anchors, triplets.negatives],
            ],
            dim=1,
        )
        target = torch.tensor([0.0, 1.0], dtype=pair.dtype, device=pair.device)
        losses = ((torch.softmax(pair, dim=1) - target) ** 2).sum(dim=1)
        return self.reducer(losses)


class LiftedStructuredLoss:
    """Song et al. (2016), "Deep metric learning via lifted structured feature embedding", eq. 4.

    For each positive pair (i, j), counted once:
    J_ij = log(Σ_{k∈N(i)} exp(α − D_ik) + Σ_{l∈N(j)} exp(α − D_jl)) + D_ij, with D the plain Euclidean
    distance, and J = 1/(2|P|) Σ max(0, J_ij)². The log-sum-exp is the smooth upper bound of the hardest
    negative of either point.
    """

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = margin

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        distances = pairwise_distances(embeddings)
        positive, negative = label_masks(labels)
        pairs = torch.triu(positive, diagonal=1)
        if not bool(negative.any()) or not bool(pairs.any()):
            return distances.sum() * 0.0
        # With two or more identities in the batch, every row has at least one negative.
        negative_terms = (self.margin - distances).masked_fill(~negative, -torch.inf)
        row_bound = torch.logsumexp(negative_terms, dim=1)
        first, second = torch.nonzero(pairs, as_tuple=True)
        bound = torch.logaddexp(row_bound[first], row_bound[second])
        pair_losses = torch.relu(bound + distances[first, second]) ** 2
        return pair_losses.sum() / (2 * pair_losses.shape[0])
