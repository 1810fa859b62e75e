"""How per-element losses become the batch loss; each keeps the autograd graph, even when empty."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Reducer(Protocol):
    def __call__(self, losses: Tensor) -> Tensor: ...


class MeanReducer:
    """Plain mean (FaceNet semi-hard, batch hard); zero for an empty batch."""

    def __call__(self, losses: Tensor) -> Tensor:
        if losses.numel() == 0:
            return losses.sum()
        return losses.mean()


class AvgNonZeroReducer:
    """Mean over the elements that still have a loss (batch all: easy triplets would dilute the mean)."""

    def __call__(self, losses: Tensor) -> Tensor:
        active = losses > 0
        count = int(active.sum())
        if count == 0:
            return losses.sum() * 0.0
        return losses[active].sum() / count


class SumReducer:
    def __call__(self, losses: Tensor) -> Tensor:
        return losses.sum()
