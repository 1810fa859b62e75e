"""Is a detected face good enough to enroll or trust? Cheap, explainable checks with stable reason codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from service.runtime.types import DetectedFace

FACE_TOO_SMALL = "face_too_small"
LOW_DETECTOR_SCORE = "low_detector_score"
BLURRY = "blurry"


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Thresholds; ``min_sharpness`` 0 disables the blur check (its scale depends on the camera)."""

    min_face_size_px: float = 40.0
    min_detector_score: float = 0.7
    min_sharpness: float = 0.0


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """``face_size_px`` is the shorter side of the detector box in original-image pixels;
    ``sharpness`` the variance of the Laplacian of the aligned crop's gray image."""

    face_size_px: float
    detector_score: float
    sharpness: float
    passed: bool
    reasons: list[str] = field(default_factory=list)


def laplacian_variance(crop: NDArray[np.uint8]) -> float:
    """Focus measure (Pech-Pacheco et al. 2000): low on blurred crops, measured after alignment so
    every face is judged at the same scale."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assess_quality(face: DetectedFace, crop: NDArray[np.uint8], config: QualityConfig) -> FaceQuality:
    size = float(min(face.box[2], face.box[3]))
    sharpness = laplacian_variance(crop)
    reasons: list[str] = []
    if size < config.min_face_size_px:
        reasons.append(FACE_TOO_SMALL)
    if face.score < config.min_detector_score:
        reasons.append(LOW_DETECTOR_SCORE)
    if sharpness < config.min_sharpness:
        reasons.append(BLURRY)
    return FaceQuality(
        face_size_px=size,
        detector_score=float(face.score),
        sharpness=sharpness,
        passed=not reasons,
        reasons=reasons,
    )
