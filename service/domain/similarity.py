"""Similarity in percent (0–100), as AWS Rekognition reports it, from our squared distance d².

A piecewise-linear, strictly decreasing map anchored on the threshold ``t`` in force, so that the
percentage clients already filter on (80, Rekognition's default) means exactly our decision:

    d² = 0 → 100,   d² = t → 80,   d² = 4 → 0      (linear in between)

``similarity(d², t) >= 80`` ⇔ ``d² <= t``. A caller's own percentage maps back through the inverse
(``to_distance``): ``FaceMatchThreshold=90`` accepts d² ≤ t/2, ``FaceMatchThreshold=40`` accepts
d² ≤ t + (4 − t)/2. Filters compare distances (never the rounded percentage), so the default
threshold accepts exactly what ``/v1`` identify (at the collection's threshold) or ``/v1/verify``
(at the verification threshold) accepts.
"""

from __future__ import annotations

ANCHOR_PERCENT = 80.0  # what the threshold in force maps to (Rekognition's default match threshold)
_MAX_D2 = 4.0


def similarity_percent(distance: float, threshold: float) -> float:
    """d² in [0, 4] → similarity in [0, 100], 80 exactly at ``threshold``."""
    d = min(max(float(distance), 0.0), _MAX_D2)
    t = min(max(float(threshold), 0.0), _MAX_D2)
    if d <= t:
        if t == 0.0:
            return 100.0
        return 100.0 - (100.0 - ANCHOR_PERCENT) * (d / t)
    return ANCHOR_PERCENT * ((_MAX_D2 - d) / (_MAX_D2 - t))


def to_distance(percent: float, threshold: float) -> float:
    """The largest d² whose similarity is at least ``percent`` (the inverse of ``similarity_percent``).

    ``to_distance(80, t) == t`` exactly, so the default filter is the threshold itself.
    """
    p = min(max(float(percent), 0.0), 100.0)
    t = min(max(float(threshold), 0.0), _MAX_D2)
    if p >= ANCHOR_PERCENT:
        return t * ((100.0 - p) / (100.0 - ANCHOR_PERCENT))
    return _MAX_D2 - (_MAX_D2 - t) * (p / ANCHOR_PERCENT)
