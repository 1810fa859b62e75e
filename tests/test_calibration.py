"""Self-calibration math (service/domain/calibration.py) against a brute-force reference."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy.typing import NDArray

from service.domain.calibration import (
    TOO_FEW_FACES,
    TOO_FEW_SUBJECTS,
    CalibrationSlot,
    calibrate,
    probe_distances,
)
from service.errors import CalibrationBusy, CalibrationNotPossible


def clustered(
    subjects: int, seed: int = 0, spread: float = 1.0, max_faces: int = 6
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Unit vectors around one centre per subject, 1..max_faces faces each, rows shuffled."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_faces + 1, size=subjects)
    centres = rng.normal(size=(subjects, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    owners = np.repeat(np.arange(subjects, dtype=np.int64) * 3 + 100, counts)
    vectors = np.repeat(centres, counts, axis=0) + spread * rng.normal(size=(owners.size, 16)) / 4.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = rng.permutation(owners.size)
    return np.ascontiguousarray(vectors[order], dtype=np.float32), owners[order]


def test_probe_distances_match_brute_force() -> None:
    vectors, owners = clustered(25)
    probes = np.arange(owners.size, dtype=np.int64)
    got = probe_distances(vectors, owners, probes)
    for i in probes:
        d = ((vectors.astype(np.float64) - vectors[i]) ** 2).sum(axis=1)
        others = d[owners != owners[i]]
        own = d[(owners == owners[i]) & (np.arange(owners.size) != i)]
        assert got.impostor_best[i] == pytest.approx(others.min(), abs=1e-5)
        if own.size:
            assert got.genuine_best[i] == pytest.approx(own.min(), abs=1e-5)
        else:
            assert np.isinf(got.genuine_best[i])


def test_calibration_meets_its_target_and_reports_both_points() -> None:
    vectors, owners = clustered(300, seed=1)
    result = calibrate(vectors, owners, target_fpir=0.05, current_threshold=1.4)
    assert result.faces == owners.size
    assert result.subjects == 300
    assert result.impostor_probes == owners.size
    assert not result.sampled
    assert result.recommended.estimated_fpir <= 0.05
    # the largest such threshold: a slightly looser one lets more strangers in
    looser = result.recommended.threshold + 0.02
    loose = calibrate(vectors, owners, target_fpir=0.05, current_threshold=looser)
    assert loose.current.estimated_fpir > 0.05 or loose.current.threshold >= 4.0
    assert result.current.threshold == 1.4
    assert result.current.estimated_fpir > result.recommended.estimated_fpir
    assert result.recommended.genuine_accept_rate is not None
    assert 0.0 < result.recommended.genuine_accept_rate < 1.0
    assert result.current.genuine_accept_rate is not None
    assert result.current.genuine_accept_rate >= result.recommended.genuine_accept_rate
    assert result.warnings == []  # 300 subjects, ~1000 faces at 5%: enough


def test_calibration_warns_when_it_rests_on_little_data() -> None:
    vectors, owners = clustered(8, seed=2)
    result = calibrate(vectors, owners, target_fpir=0.01, current_threshold=1.0)
    text = " ".join(result.warnings)
    assert "8 subjects" in text
    assert "stable estimate" in text
    singles = np.arange(10, dtype=np.int64)  # one face each: no genuine rate
    result = calibrate(vectors[:10], singles, target_fpir=0.1, current_threshold=1.0)
    assert result.recommended.genuine_accept_rate is None
    assert any("genuine" in w for w in result.warnings)


def test_a_recommendation_is_withheld_when_the_faces_cannot_support_one() -> None:
    """The raw estimate is kept, but on too few subjects or too few faces for the target nothing is
    recommended (or applied), and the reasons say why."""
    vectors, owners = clustered(8, seed=2)  # 8 subjects, fewer than 1/0.01 faces
    few = calibrate(vectors, owners, target_fpir=0.01, current_threshold=1.0)
    assert few.recommendation is None
    assert few.withheld == [TOO_FEW_SUBJECTS, TOO_FEW_FACES]
    assert few.recommended.estimated_fpir == 0.0  # the estimate a bare number used to offer
    measurable = calibrate(vectors, owners, target_fpir=0.2, current_threshold=1.0)
    assert owners.size * 0.2 >= 1.0
    assert measurable.withheld == [TOO_FEW_SUBJECTS]
    assert measurable.recommendation is None
    vectors, owners = clustered(30, seed=4, max_faces=2)  # enough subjects, too few faces for 1%
    assert owners.size < 100
    sparse = calibrate(vectors, owners, target_fpir=0.01, current_threshold=1.0)
    assert sparse.withheld == [TOO_FEW_FACES]
    assert sparse.recommendation is None
    enough = calibrate(vectors, owners, target_fpir=0.05, current_threshold=1.0)
    assert enough.withheld == []
    assert enough.recommendation == enough.recommended


def test_a_recommendation_is_never_looser_than_the_verification_threshold() -> None:
    vectors, owners = clustered(300, seed=1)
    free = calibrate(vectors, owners, target_fpir=0.05, current_threshold=1.4)
    assert free.recommendation == free.recommended
    assert not free.capped
    cap = free.recommended.threshold - 0.1
    capped = calibrate(vectors, owners, target_fpir=0.05, current_threshold=1.4, verify_threshold=cap)
    assert capped.capped
    assert capped.recommended == free.recommended  # the estimate itself is unchanged
    assert capped.recommendation is not None
    assert capped.recommendation.threshold == cap
    assert capped.recommendation.estimated_fpir < free.recommended.estimated_fpir
    roomy = calibrate(vectors, owners, target_fpir=0.05, current_threshold=1.4, verify_threshold=cap + 0.2)
    assert roomy.recommendation == free.recommended
    assert not roomy.capped


def test_calibration_needs_two_subjects() -> None:
    vectors, _ = clustered(3)
    with pytest.raises(CalibrationNotPossible):
        calibrate(vectors, np.zeros(len(vectors), dtype=np.int64), target_fpir=0.01, current_threshold=1.0)
    with pytest.raises(CalibrationNotPossible):
        calibrate(
            np.empty((0, 0), np.float32), np.empty(0, np.int64), target_fpir=0.01, current_threshold=1.0
        )


def test_large_collections_are_sampled() -> None:
    vectors, owners = clustered(400, seed=3)
    result = calibrate(vectors, owners, target_fpir=0.05, current_threshold=1.0, max_probes=500)
    assert result.sampled
    assert result.impostor_probes == 500
    assert result.faces == owners.size
    full = calibrate(vectors, owners, target_fpir=0.05, current_threshold=1.0)
    assert abs(result.recommended.threshold - full.recommended.threshold) < 0.1


def test_one_calibration_at_a_time() -> None:
    slot = CalibrationSlot()
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with slot.hold():
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    assert entered.wait(5)
    with pytest.raises(CalibrationBusy), slot.hold():
        pass
    release.set()
    worker.join()
    with slot.hold():  # free again
        pass
