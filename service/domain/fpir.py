"""The threshold for a target false-positive identification rate: one rule for the model card's
identification threshold (models/openset.py) and for a collection's self-calibration."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


def threshold_at_fpir(impostor_best: NDArray[np.float64], fpir: float) -> float:
    """A d² threshold (accept d² <= t) letting at most ``fpir`` of the impostor probes in.

    ``impostor_best`` holds each stranger probe's distance to its closest enrolled subject. The
    threshold sits halfway between the last impostor distance allowed in and the first one kept out
    (ties stay out), so the rate on these probes is <= ``fpir`` and any looser threshold beyond that
    gap exceeds it. When none may come in (fewer than 1/fpir probes), it sits just below the closest
    impostor: the data say nothing about how much stricter it should be.
    """
    if not 0.0 <= fpir <= 1.0:
        raise ValueError(f"fpir must be in [0, 1], got {fpir}")
    u = np.sort(np.asarray(impostor_best, dtype=np.float64).ravel())
    if u.size == 0:
        raise ValueError("no impostor distances")
    allowed = math.floor(fpir * u.size + 1e-9)
    if allowed >= u.size:
        return 4.0
    cut = float(u[allowed])
    if cut <= 0.0:
        return 0.0
    below = u[:allowed][u[:allowed] < cut]
    if below.size == 0:
        return float(min(np.nextafter(cut, 0.0), 4.0))
    return float(np.clip((float(below[-1]) + cut) / 2.0, 0.0, 4.0))
