"""Online triplet mining inside a P×K batch (P identities × K images each).

Miners look at a detached distance matrix and return index triplets; the loss then reads the same
matrix with gradients, so the distances are computed once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from models.train.distances import label_masks


@dataclass(frozen=True, slots=True)
class Triplets:
    """Parallel index vectors into the batch: (anchors[i], positives[i], negatives[i]) is one triplet."""

    anchors: Tensor
    positives: Tensor
    negatives: Tensor

    def __len__(self) -> int:
        return int(self.anchors.shape[0])


class TripletMiner(Protocol):
    def __call__(self, distances: Tensor, labels: Tensor) -> Triplets:
        """Pick triplets from a (B, B) distance matrix (already detached) and (B,) labels."""
        ...


def all_triplets(labels: Tensor) -> Triplets:
    """Every valid (a, p, n): same identity for a and p (a ≠ p), another identity for n."""
    positive, negative = label_masks(labels)
    valid = positive[:, :, None] & negative[:, None, :]
    anchors, positives, negatives = torch.nonzero(valid, as_tuple=True)
    return Triplets(anchors, positives, negatives)


class BatchAllMiner:
    """All valid triplets ("batch all", Hermans et al. 2017); use with the average-over-non-zero reducer."""

    def __call__(self, distances: Tensor, labels: Tensor) -> Triplets:
        return all_triplets(labels)


class BatchHardMiner:
    """Per anchor, its farthest positive and closest negative (Hermans et al. 2017 "batch hard")."""

    def __call__(self, distances: Tensor, labels: Tensor) -> Triplets:
        positive, negative = label_masks(labels)
        usable = positive.any(dim=1) & negative.any(dim=1)
        hardest_positive = distances.masked_fill(~positive, -torch.inf).argmax(dim=1)
        hardest_negative = distances.masked_fill(~negative, torch.inf).argmin(dim=1)
        anchors = torch.nonzero(usable, as_tuple=True)[0]
        return Triplets(anchors, hardest_positive[anchors], hardest_negative[anchors])


class SemiHardMiner:
    """FaceNet's semi-hard negatives (Schroff et al. 2015) for every anchor-positive pair of the batch.

    For each pair (a, p) the negative is the closest one farther than the positive, d_an > d_ap; when it
    also lies inside the margin (d_an < d_ap + α) it is semi-hard and the triplet is active, otherwise the
    triplet is easy and contributes zero. Fallback when no negative is farther than the positive: the
    *farthest* negative of the anchor (the least hard of the hard ones), the convention of TensorFlow's
    ``triplet_semihard_loss`` written by the FaceNet group; it avoids the collapse the hardest negatives
    cause early in training. The margin is therefore not needed to choose, only to score.
    """

    def __call__(self, distances: Tensor, labels: Tensor) -> Triplets:
        positive, negative = label_masks(labels)
        anchors, positives = torch.nonzero(positive & negative.any(dim=1, keepdim=True), as_tuple=True)
        anchor_rows = distances[anchors]  # (pairs, B)
        row_negative = negative[anchors]
        farther = row_negative & (anchor_rows > distances[anchors, positives][:, None])
        closest_farther = anchor_rows.masked_fill(~farther, torch.inf).argmin(dim=1)
        farthest = anchor_rows.masked_fill(~row_negative, -torch.inf).argmax(dim=1)
        negatives = torch.where(farther.any(dim=1), closest_farther, farthest)
        return Triplets(anchors, positives, negatives)
