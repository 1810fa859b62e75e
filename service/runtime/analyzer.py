"""Image → aligned, quality-checked faces: the CPU half of the pipeline, before batched embedding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.runtime.alignment import align_face
from service.runtime.quality import FaceQuality, QualityConfig, assess_quality
from service.runtime.types import DetectedFace, FaceDetector, RGBImage


@dataclass(frozen=True)
class AnalyzedFace:
    face: DetectedFace
    quality: FaceQuality
    crop: NDArray[np.uint8]  # (height, width, 3) RGB, aligned for the embedder


class FaceAnalyzer:
    """Detect, align and grade every face of an image; synchronous (run it in a worker thread)."""

    def __init__(self, detector: FaceDetector, crop_size: tuple[int, int], quality: QualityConfig) -> None:
        self.detector = detector
        self.crop_size = crop_size  # (width, height), as Embedder.input_size
        self.quality = quality

    def analyze(self, image: RGBImage, max_faces: int | None = None) -> list[AnalyzedFace]:
        """Faces largest first, at most ``max_faces``; an empty list when none is found."""
        faces = sorted(self.detector.detect(image), key=lambda face: face.area, reverse=True)
        if max_faces is not None:
            faces = faces[: max(max_faces, 0)]
        results: list[AnalyzedFace] = []
        for face in faces:
            crop = align_face(image, face.landmarks, self.crop_size)
            results.append(
                AnalyzedFace(face=face, quality=assess_quality(face, crop, self.quality), crop=crop)
            )
        return results
