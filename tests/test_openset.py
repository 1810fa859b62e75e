"""Open-set protocol (models/openset.py) against a brute-force reference on small synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from models.openset import (
    effective_gallery_size,
    evaluate_openset,
    find_config,
    fpir_at_threshold,
    person_disjoint_check,
    rotation_split,
    threshold_at_fpir,
)


def synthetic(
    people: int = 40, seed: int = 1, spread: float = 1.0
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Unit vectors clustered per person, 1..9 photos each (some people have a single photo)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 10, size=people)
    centres = rng.normal(size=(people, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(people, dtype=np.int64) * 7 + 3, counts)  # ids need not be 0..n-1
    vectors = np.repeat(centres, counts, axis=0) + spread * rng.normal(size=(labels.size, 16)) / 4.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shuffle = rng.permutation(labels.size)
    return vectors[shuffle].astype(np.float32), labels[shuffle]


def brute_force(
    embeddings: NDArray[np.float32],
    labels: NDArray[np.int64],
    enrolled: dict[int, list[int]],
    probes: list[int],
) -> list[tuple[float, int]]:
    """(d² to closest subject, that subject) per probe, one distance at a time."""
    answers = []
    for p in probes:
        best = (np.inf, -1)
        for person, images in enrolled.items():
            d = min(float(((embeddings[p].astype(np.float64) - embeddings[i]) ** 2).sum()) for i in images)
            if d < best[0]:
                best = (d, person)
        answers.append(best)
    return answers


def test_threshold_at_fpir_is_the_largest_cut_within_target() -> None:
    rng = np.random.default_rng(3)
    impostors = np.round(rng.uniform(0.5, 3.5, size=997), 2)  # rounded: many ties
    for fpir in (0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0):
        t = threshold_at_fpir(impostors, fpir)
        assert 0.0 <= t <= 4.0
        accepted = int((impostors <= t).sum())
        assert accepted <= np.floor(fpir * impostors.size + 1e-9)
        above = impostors[impostors > t]
        if above.size:  # the next distinct impostor distance would break the target
            assert (impostors <= above.min()).sum() > np.floor(fpir * impostors.size + 1e-9)
        assert fpir_at_threshold(impostors, t) == accepted / impostors.size
    with pytest.raises(ValueError, match="fpir"):
        threshold_at_fpir(impostors, 1.5)


def test_split_is_person_disjoint_and_complete() -> None:
    _, labels = synthetic()
    for k in (1, 3):
        size, _ = effective_gallery_size(labels, 10, k)
        split = rotation_split(labels, size, k, seed=0, rotation=2)
        gallery = set(split.gallery_people.tolist())
        assert split.enrolled.shape == (size, k)
        for row, person in enumerate(split.gallery_people):
            assert set(labels[split.enrolled[row]].tolist()) == {int(person)}
        assert set(labels[split.genuine_probes].tolist()) <= gallery
        assert not set(labels[split.unknown_probes].tolist()) & gallery
        everything = np.concatenate([split.enrolled.ravel(), split.genuine_probes, split.unknown_probes])
        assert np.array_equal(np.sort(everything), np.arange(labels.size))
        # another rotation draws other people
        other = rotation_split(labels, size, k, seed=0, rotation=3)
        assert not np.array_equal(other.gallery_people, split.gallery_people)


def test_metrics_match_brute_force() -> None:
    embeddings, labels = synthetic()
    gallery_request, k, rotations = 12, 2, 3
    report = evaluate_openset(
        embeddings,
        labels,
        gallery_sizes=(gallery_request,),
        enroll_counts=(k,),
        fpirs=(0.2, 0.05),
        rotations=rotations,
        seed=5,
    )
    block = find_config(report, gallery_request, k)
    rank1: list[float] = []
    dirs: list[float] = []
    thresholds: list[float] = []
    for rotation in range(rotations):
        split = rotation_split(labels, block["gallery_size"], k, seed=5, rotation=rotation)
        enrolled = {int(p): split.enrolled[row].tolist() for row, p in enumerate(split.gallery_people)}
        genuine = brute_force(embeddings, labels, enrolled, split.genuine_probes.tolist())
        unknown = brute_force(embeddings, labels, enrolled, split.unknown_probes.tolist())
        correct = [who == labels[p] for (_, who), p in zip(genuine, split.genuine_probes, strict=True)]
        rank1.append(float(np.mean(correct)))
        impostor = np.array([d for d, _ in unknown])
        # brute force threshold: scan every candidate cut, keep the largest within 5% FPIR
        candidates = np.unique(np.concatenate([[0.0], impostor, [4.0]]))
        allowed = np.floor(0.05 * impostor.size + 1e-9)
        inside = [c for c in candidates if (impostor <= c).sum() <= allowed]
        outside = [c for c in candidates if (impostor <= c).sum() > allowed]
        t = threshold_at_fpir(impostor, 0.05)
        assert max(inside) <= t < min(outside)
        thresholds.append(t)
        dirs.append(float(np.mean([c and d <= t for (d, _), c in zip(genuine, correct, strict=True)])))
    # hard enough that a wrong scorer shows
    assert min(rank1) > 0.5
    assert max(rank1) < 1.0
    assert block["rank1"]["per_rotation"] == pytest.approx(rank1, abs=1e-12)
    assert block["threshold_at_fpir"]["0.05"]["per_rotation"] == pytest.approx(thresholds, abs=1e-5)
    assert block["dir_at_fpir"]["0.05"]["per_rotation"] == pytest.approx(dirs, abs=1e-12)
    assert block["rank1"]["mean"] == pytest.approx(np.mean(rank1))
    assert block["rank1"]["std"] == pytest.approx(np.std(rank1))
    for achieved in block["fpir_achieved"]["0.05"]["per_rotation"]:
        assert achieved <= 0.05
    held = block["heldout"]
    assert held["choose_rotations"] == [0, 1]
    assert held["measure_rotations"] == [2]
    assert held["0.2"]["fpir_measured"]["mean"] > 0.0


def test_gallery_capped_to_the_data_and_said_so() -> None:
    embeddings, labels = synthetic(people=30)
    report = evaluate_openset(
        embeddings, labels, gallery_sizes=(1000,), enroll_counts=(5,), fpirs=(0.1,), rotations=2
    )
    block = report["results"][0]
    people, counts = np.unique(labels, return_counts=True)
    assert block["capped"] is True
    assert block["gallery_size"] == int((counts >= 6).sum()) < 1000
    assert "photos" in block["cap_reason"]
    assert block["gallery_faces"] == block["gallery_size"] * 5
    assert report["n_people"] == people.size


def test_rejects_non_unit_rows() -> None:
    embeddings, labels = synthetic()
    with pytest.raises(ValueError, match="L2-normalised"):
        evaluate_openset(embeddings * 2.0, labels, gallery_sizes=(5,), enroll_counts=(1,))


def test_person_disjoint_check_chooses_and_measures_on_different_people() -> None:
    embeddings, labels = synthetic(people=200, seed=4)
    check = person_disjoint_check(
        embeddings, labels, gallery_size=30, enroll_count=1, target_fpir=0.1, rotations=3, seed=2
    )
    assert check["gallery_size"] == 30
    assert sum(check["people_per_half"]) == 200
    capped = person_disjoint_check(embeddings, labels, gallery_size=1000, enroll_count=1, target_fpir=0.1)
    assert capped["gallery_size"] < 100  # what each half allows
    assert [d["chosen_on_half"] for d in check["directions"]] == [0, 1]
    for direction in check["directions"]:
        measured = direction["fpir_measured"]
        assert len(measured["per_rotation"]) == 3
        assert direction["ratio_to_target"] == pytest.approx(measured["mean"] / 0.1)
        assert 0.0 < measured["mean"] < 0.5
    assert check["worst_factor_off_target"] >= 1.0
