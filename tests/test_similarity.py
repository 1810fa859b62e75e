"""The d² → Similarity (0–100) map of the Rekognition-compatible API, checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest

from service.domain.similarity import similarity_percent, to_distance

THRESHOLDS = [0.0, 0.3, 0.917, 1.0, 1.2345, 2.0, 3.99, 4.0]
GRID = np.linspace(0.0, 4.0, 4001)


@pytest.mark.parametrize("t", THRESHOLDS)
def test_decreasing_from_100_to_0_in_range(t: float) -> None:
    values = np.array([similarity_percent(float(d), t) for d in GRID])
    assert values.min() >= 0.0
    assert values.max() <= 100.0
    assert np.all(np.diff(values) <= 0.0)
    if 0.0 < t < 4.0:
        assert np.all(np.diff(values) < 0.0)  # strictly: no two distances share a percentage
        assert values[0] == 100.0
        assert values[-1] == 0.0


@pytest.mark.parametrize("t", THRESHOLDS)
def test_threshold_maps_to_80_and_80_back_to_threshold_exactly(t: float) -> None:
    assert to_distance(80.0, t) == t
    if t > 0.0:  # with t = 0 only identical vectors match, and they score 100
        assert similarity_percent(t, t) == 80.0


@pytest.mark.parametrize("t", THRESHOLDS)
def test_default_filter_accepts_exactly_what_the_threshold_accepts(t: float) -> None:
    rng = np.random.default_rng(7)
    distances = np.concatenate([GRID, rng.uniform(0, 4, 2000), [np.nextafter(t, 5.0), np.nextafter(t, -1)]])
    for d in distances:
        d = float(min(max(d, 0.0), 4.0))
        assert (d <= to_distance(80.0, t)) == (d <= t)


@pytest.mark.parametrize("t", [0.3, 0.917, 1.2345, 2.0, 3.99])
def test_round_trip_and_caller_thresholds(t: float) -> None:
    for percent in np.linspace(0.0, 100.0, 1001):
        d = to_distance(float(percent), t)
        assert 0.0 <= d <= 4.0
        assert similarity_percent(d, t) == pytest.approx(percent, abs=1e-9)
    for d in GRID:
        assert to_distance(similarity_percent(float(d), t), t) == pytest.approx(float(d), abs=1e-9)
    # A stricter percentage never accepts more: brute force over the grid.
    accepted = [int(np.sum(to_distance(p, t) >= GRID)) for p in (40.0, 80.0, 90.0, 99.0)]
    assert accepted == sorted(accepted, reverse=True)
