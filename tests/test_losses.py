"""Losses and miners against brute-force loops, and the closed-form gradients against autograd."""

from __future__ import annotations

import itertools
import math

import pytest

pytest.importorskip("torch")

import torch
from torch import Tensor

from models.train.distances import pairwise_distances, pairwise_squared_distances
from models.train.gradients import l2_normalize_backward, triplet_loss_gradients
from models.train.losses import (
    EmbeddingLoss,
    LiftedStructuredLoss,
    SoftmaxRatioLoss,
    TripletMarginLoss,
)
from models.train.miners import (
    BatchAllMiner,
    BatchHardMiner,
    SemiHardMiner,
    Triplets,
    all_triplets,
)
from models.train.reducers import AvgNonZeroReducer, MeanReducer

pytestmark = pytest.mark.train

MARGIN = 0.3


def unit_embeddings(seed: int, batch: int, dim: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1
    )


def pk_labels(identities: int, per_identity: int) -> Tensor:
    return torch.arange(identities).repeat_interleave(per_identity)


# Uneven identity sizes (a singleton has no positive but still serves as a negative) and small
# dimensions, so that anchors without any farther negative occur and the semi-hard fallback runs.
CASES = [
    (0, pk_labels(4, 3), 8),
    (1, pk_labels(6, 4), 3),
    (2, torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4]), 2),
    (3, pk_labels(3, 5), 16),
]


@pytest.fixture(params=CASES, ids=[f"seed{c[0]}-B{len(c[1])}-D{c[2]}" for c in CASES])
def batch(request: pytest.FixtureRequest) -> tuple[Tensor, Tensor]:
    seed, labels, dim = request.param
    return unit_embeddings(seed, len(labels), dim), labels


# ---- brute-force references: plain Python over lists of floats ----------------------------------


def loop_squared_distance(x: list[float], y: list[float]) -> float:
    return sum((a - b) ** 2 for a, b in zip(x, y, strict=True))


def loop_matrix(embeddings: Tensor, squared: bool) -> list[list[float]]:
    rows = embeddings.tolist()
    out = []
    for x in rows:
        row = []
        for y in rows:
            d2 = loop_squared_distance(x, y)
            row.append(d2 if squared else math.sqrt(d2))
        out.append(row)
    return out


def loop_triplets(labels: list[int]) -> list[tuple[int, int, int]]:
    n = len(labels)
    return [
        (a, p, k)
        for a in range(n)
        for p in range(n)
        for k in range(n)
        if a != p and labels[a] == labels[p] and labels[k] != labels[a]
    ]


def loop_semihard_negative(d: list[list[float]], labels: list[int], a: int, p: int) -> int:
    negatives = [k for k in range(len(labels)) if labels[k] != labels[a]]
    farther = [k for k in negatives if d[a][k] > d[a][p]]
    if farther:
        return min(farther, key=lambda k: d[a][k])
    return max(negatives, key=lambda k: d[a][k])


def loop_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def loop_mean_nonzero(values: list[float]) -> float:
    return loop_mean([v for v in values if v > 0])


def hinge(d: list[list[float]], a: int, p: int, n: int) -> float:
    return max(0.0, d[a][p] - d[a][n] + MARGIN)


# ---- distances and miners -------------------------------------------------------------------------


def test_distance_matrices_match_loops(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, _ = batch
    squared = pairwise_squared_distances(embeddings)
    plain = pairwise_distances(embeddings)
    assert torch.allclose(squared, torch.tensor(loop_matrix(embeddings, squared=True), dtype=torch.float64))
    expected_plain = torch.tensor(loop_matrix(embeddings, squared=False), dtype=torch.float64)
    off_diagonal = ~torch.eye(len(embeddings), dtype=torch.bool)
    assert torch.allclose(plain[off_diagonal], expected_plain[off_diagonal])
    assert bool((squared >= 0).all())
    assert bool((squared <= 4 + 1e-9).all())


def as_set(triplets: Triplets) -> set[tuple[int, int, int]]:
    return set(
        zip(triplets.anchors.tolist(), triplets.positives.tolist(), triplets.negatives.tolist(), strict=True)
    )


def test_all_triplets_are_exactly_the_valid_ones(batch: tuple[Tensor, Tensor]) -> None:
    _, labels = batch
    mined = all_triplets(labels)
    reference = loop_triplets(labels.tolist())
    assert len(mined) == len(reference)
    assert as_set(mined) == set(reference)


def test_batch_hard_picks_farthest_positive_and_closest_negative(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, labels = batch
    d = loop_matrix(embeddings, squared=True)
    label_list = labels.tolist()
    mined = BatchHardMiner()(pairwise_squared_distances(embeddings), labels)
    expected = {}
    for a, label in enumerate(label_list):
        positives = [p for p in range(len(label_list)) if p != a and label_list[p] == label]
        negatives = [k for k in range(len(label_list)) if label_list[k] != label]
        if positives and negatives:
            expected[a] = (max(d[a][p] for p in positives), min(d[a][k] for k in negatives))
    assert sorted(mined.anchors.tolist()) == sorted(expected)
    for a, p, n in as_set(mined):
        assert label_list[p] == label_list[a]
        assert p != a
        assert label_list[n] != label_list[a]
        assert d[a][p] == pytest.approx(expected[a][0])
        assert d[a][n] == pytest.approx(expected[a][1])


def test_semihard_uses_every_positive_pair_and_the_documented_fallback(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, labels = batch
    d = loop_matrix(embeddings, squared=True)
    label_list = labels.tolist()
    mined = SemiHardMiner()(pairwise_squared_distances(embeddings), labels)
    pairs = [(a, p) for a, p, _ in loop_triplets(label_list)]
    assert sorted(zip(mined.anchors.tolist(), mined.positives.tolist(), strict=True)) == sorted(set(pairs))
    for a, p, n in as_set(mined):
        assert d[a][n] == pytest.approx(d[a][loop_semihard_negative(d, label_list, a, p)])


def test_semihard_cases_cover_both_branches() -> None:
    """The random cases above really exercise semi-hard picks and the fallback (else they prove little)."""
    picked_semihard = fallbacks = 0
    for seed, labels, dim in CASES:
        d = loop_matrix(unit_embeddings(seed, len(labels), dim), squared=True)
        label_list = labels.tolist()
        for a, p in {(a, p) for a, p, _ in loop_triplets(label_list)}:
            n = loop_semihard_negative(d, label_list, a, p)
            if d[a][n] <= d[a][p]:
                fallbacks += 1
            elif d[a][n] < d[a][p] + MARGIN:
                picked_semihard += 1
    assert picked_semihard > 0
    assert fallbacks > 0


# ---- losses ---------------------------------------------------------------------------------------


def test_triplet_batch_all_matches_loop(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, labels = batch
    d = loop_matrix(embeddings, squared=True)
    expected = loop_mean_nonzero([hinge(d, a, p, n) for a, p, n in loop_triplets(labels.tolist())])
    loss = TripletMarginLoss(MARGIN, BatchAllMiner(), AvgNonZeroReducer())(embeddings, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_triplet_batch_hard_matches_loop(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, labels = batch
    d = loop_matrix(embeddings, squared=True)
    label_list = labels.tolist()
    per_anchor = []
    for a, label in enumerate(label_list):
        positives = [p for p in range(len(label_list)) if p != a and label_list[p] == label]
        negatives = [k for k in range(len(label_list)) if label_list[k] != label]
        if positives and negatives:
            hardest = max(d[a][p] for p in positives) - min(d[a][k] for k in negatives)
            per_anchor.append(max(0.0, hardest + MARGIN))
    loss = TripletMarginLoss(MARGIN, BatchHardMiner(), MeanReducer())(embeddings, labels)
    assert loss.item() == pytest.approx(loop_mean(per_anchor), rel=1e-9, abs=1e-12)


def test_triplet_semihard_matches_loop(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, labels = batch
    d = loop_matrix(embeddings, squared=True)
    label_list = labels.tolist()
    pairs = sorted({(a, p) for a, p, _ in loop_triplets(label_list)})
    per_pair = [hinge(d, a, p, loop_semihard_negative(d, label_list, a, p)) for a, p in pairs]
    loss = TripletMarginLoss(MARGIN, SemiHardMiner(), MeanReducer())(embeddings, labels)
    assert loss.item() == pytest.approx(loop_mean(per_pair), rel=1e-9, abs=1e-12)


def test_softmax_ratio_matches_loop(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, labels = batch
    d = loop_matrix(embeddings, squared=False)
    per_triplet = []
    for a, p, n in loop_triplets(labels.tolist()):
        e_pos, e_neg = math.exp(d[a][p]), math.exp(d[a][n])
        soft_pos, soft_neg = e_pos / (e_pos + e_neg), e_neg / (e_pos + e_neg)
        per_triplet.append(soft_pos**2 + (soft_neg - 1.0) ** 2)
    loss = SoftmaxRatioLoss()(embeddings, labels)
    assert loss.item() == pytest.approx(loop_mean(per_triplet), rel=1e-9)


def test_lifted_structured_matches_loop(batch: tuple[Tensor, Tensor]) -> None:
    embeddings, labels = batch
    margin = 1.0
    d = loop_matrix(embeddings, squared=False)
    label_list = labels.tolist()
    n = len(label_list)
    total, pair_count = 0.0, 0
    for i, j in itertools.combinations(range(n), 2):
        if label_list[i] != label_list[j]:
            continue
        pair_count += 1
        terms = [math.exp(margin - d[i][k]) for k in range(n) if label_list[k] != label_list[i]]
        terms += [math.exp(margin - d[j][m]) for m in range(n) if label_list[m] != label_list[j]]
        j_ij = math.log(sum(terms)) + d[i][j]
        total += max(0.0, j_ij) ** 2
    expected = total / (2 * pair_count)
    assert LiftedStructuredLoss(margin)(embeddings, labels).item() == pytest.approx(expected, rel=1e-9)


def test_losses_agree_with_pytorch_metric_learning() -> None:
    """Where pytorch-metric-learning has the same loss, both give the same number."""
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    from pytorch_metric_learning import distances as pml_distances
    from pytorch_metric_learning import reducers as pml_reducers

    embeddings, labels = unit_embeddings(7, 16, 12), pk_labels(4, 4)
    ours = TripletMarginLoss(MARGIN, BatchAllMiner(), AvgNonZeroReducer())(embeddings, labels)
    theirs = pml_losses.TripletMarginLoss(
        margin=MARGIN, distance=pml_distances.LpDistance(power=2), reducer=pml_reducers.AvgNonZeroReducer()
    )(embeddings, labels)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    ours = LiftedStructuredLoss(1.0)(embeddings, labels)
    theirs = pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)(embeddings, labels)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)


@pytest.mark.parametrize(
    "loss",
    [
        TripletMarginLoss(MARGIN, SemiHardMiner(), MeanReducer()),
        TripletMarginLoss(MARGIN, BatchHardMiner(), MeanReducer()),
        TripletMarginLoss(MARGIN, BatchAllMiner(), AvgNonZeroReducer()),
        SoftmaxRatioLoss(),
        LiftedStructuredLoss(1.0),
    ],
    ids=["semihard", "batch_hard", "batch_all", "softmax_ratio", "lifted"],
)
def test_degenerate_batches_give_finite_zero_gradients(loss: EmbeddingLoss) -> None:
    """One identity only (no negatives), or repeated images (zero distances): no NaN, nothing to learn."""
    single = unit_embeddings(3, 4, 8).requires_grad_(True)
    value = loss(single, torch.zeros(4, dtype=torch.long))
    torch.autograd.backward(value)
    assert value.item() == 0.0
    assert single.grad is not None
    assert bool((single.grad == 0).all())

    repeated = unit_embeddings(4, 4, 8)[[0, 0, 1, 1, 2, 2, 3, 3]].clone().requires_grad_(True)
    value = loss(repeated, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    torch.autograd.backward(value)
    assert math.isfinite(value.item())
    assert repeated.grad is not None
    assert bool(torch.isfinite(repeated.grad).all())


# ---- gradients ------------------------------------------------------------------------------------


def test_l2_normalisation_gradient_closed_form() -> None:
    generator = torch.Generator().manual_seed(11)
    inputs = (3.0 * torch.randn(6, 5, generator=generator, dtype=torch.float64)).requires_grad_(True)
    upstream = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    torch.autograd.backward((torch.nn.functional.normalize(inputs, dim=1) * upstream).sum())
    closed_form = l2_normalize_backward(inputs.detach(), upstream)
    assert inputs.grad is not None
    assert torch.allclose(closed_form, inputs.grad, rtol=1e-10, atol=1e-12)
    # Only rotation survives: the gradient is orthogonal to the input.
    assert torch.allclose((closed_form * inputs.detach()).sum(dim=1), torch.zeros(6, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda x: torch.nn.functional.normalize(x, dim=1), (inputs,))


def test_triplet_gradient_closed_form_matches_autograd() -> None:
    generator = torch.Generator().manual_seed(12)
    anchors, positives, negatives = (
        torch.randn(64, 6, generator=generator, dtype=torch.float64).requires_grad_(True) for _ in range(3)
    )
    per_triplet = torch.relu(
        ((anchors - positives) ** 2).sum(1) - ((anchors - negatives) ** 2).sum(1) + MARGIN
    )
    active = per_triplet > 0
    assert 0 < int(active.sum()) < 64, "both active and inactive triplets must be exercised"
    torch.autograd.backward(per_triplet.sum())
    grads = triplet_loss_gradients(anchors.detach(), positives.detach(), negatives.detach(), MARGIN)
    for autograd_grad, closed_form in zip((anchors.grad, positives.grad, negatives.grad), grads, strict=True):
        assert autograd_grad is not None
        assert torch.allclose(closed_form, autograd_grad, rtol=1e-10, atol=1e-12)
    assert bool((grads[0][~active] == 0).all())
    assert torch.allclose(grads[0] + grads[1] + grads[2], torch.zeros_like(grads[0]))


def test_triplet_gradient_through_normalisation_chains() -> None:
    """Closed forms chained (loss → unit vectors → raw features) equal autograd through the whole loss."""
    generator = torch.Generator().manual_seed(13)
    raw = torch.randn(3, 32, 5, generator=generator, dtype=torch.float64).requires_grad_(True)
    unit = torch.nn.functional.normalize(raw, dim=2)
    per_triplet = torch.relu(((unit[0] - unit[1]) ** 2).sum(1) - ((unit[0] - unit[2]) ** 2).sum(1) + MARGIN)
    torch.autograd.backward(per_triplet.sum())
    with torch.no_grad():
        grads = triplet_loss_gradients(unit[0], unit[1], unit[2], MARGIN)
        chained = torch.stack([l2_normalize_backward(raw[i], grads[i]) for i in range(3)])
    assert raw.grad is not None
    assert torch.allclose(chained, raw.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "loss",
    [
        TripletMarginLoss(MARGIN, SemiHardMiner(), MeanReducer()),
        TripletMarginLoss(MARGIN, BatchHardMiner(), MeanReducer()),
        TripletMarginLoss(MARGIN, BatchAllMiner(), AvgNonZeroReducer()),
        SoftmaxRatioLoss(),
        LiftedStructuredLoss(1.0),
    ],
    ids=["semihard", "batch_hard", "batch_all", "softmax_ratio", "lifted"],
)
def test_loss_gradcheck_through_normalisation(loss: EmbeddingLoss) -> None:
    """Finite differences in float64 agree with autograd through normalisation, distances and mining."""
    generator = torch.Generator().manual_seed(21)
    raw = torch.randn(12, 6, generator=generator, dtype=torch.float64).requires_grad_(True)
    labels = pk_labels(4, 3)
    assert torch.autograd.gradcheck(
        lambda x: loss(torch.nn.functional.normalize(x, dim=1), labels), (raw,), eps=1e-6, atol=1e-5
    )
