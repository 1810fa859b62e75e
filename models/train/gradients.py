"""Closed-form gradients of the two pieces every model here trains through; tests check them against autograd.

L2 normalisation y = x/‖x‖ has Jacobian (I − y yᵀ)/‖x‖: it removes the radial part of the upstream
gradient and scales by 1/‖x‖, so updates only rotate embeddings on the sphere.

The squared-distance triplet loss L = ‖a−p‖² − ‖a−n‖² + α, when positive, has
∂L/∂a = 2(n − p), ∂L/∂p = 2(p − a), ∂L/∂n = 2(a − n), and all three are zero when the triplet is inactive.
Note ∂L/∂a + ∂L/∂p + ∂L/∂n = 0: translating all three points together changes nothing.
"""

from __future__ import annotations

from torch import Tensor


def l2_normalize_backward(inputs: Tensor, grad_output: Tensor) -> Tensor:
    """Vector-Jacobian product of row-wise L2 normalisation at ``inputs`` (B, D)."""
    norms = inputs.norm(dim=1, keepdim=True)
    unit = inputs / norms
    radial = (unit * grad_output).sum(dim=1, keepdim=True)
    grad_input: Tensor = (grad_output - unit * radial) / norms
    return grad_input


def triplet_loss_gradients(
    anchors: Tensor, positives: Tensor, negatives: Tensor, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """∂L_i/∂a_i, ∂L_i/∂p_i, ∂L_i/∂n_i for each row i of the per-triplet loss (no reduction)."""
    positive_gap = anchors - positives
    negative_gap = anchors - negatives
    loss = (positive_gap**2).sum(dim=1) - (negative_gap**2).sum(dim=1) + margin
    active = (loss > 0).to(anchors.dtype)[:, None]
    grad_anchor = 2.0 * (negatives - positives) * active
    grad_positive = -2.0 * positive_gap * active
    grad_negative = 2.0 * negative_gap * active
    return grad_anchor, grad_positive, grad_negative
