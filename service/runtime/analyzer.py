"""Image → aligned, quality-checked faces: the CPU half of the pipeline, before batched embedding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.runtime.alignment import ARCFACE_5PT_112, AlignmentTemplate
from service.runtime.quality import FaceQuality, QualityConfig, assess_quality
from service.runtime.types import DetectedFace, FaceDetector, RGBImage


@dataclass(frozen=True)
class AnalyzedFace:
    face: DetectedFace
    quality: FaceQuality
    # One (height, width, 3) RGB crop per embedder input, aligned as that input's card entry says.
    crops: tuple[NDArray[np.uint8], ...]

    @property
    def crop(self) -> NDArray[np.uint8]:
        """The first input's crop (the one the quality gate grades)."""
        return self.crops[0]


def crop_targets(
    alignments: tuple[int, int] | AlignmentTemplate | Sequence[AlignmentTemplate],
) -> tuple[AlignmentTemplate, ...]:
    """A (width, height) means the ArcFace template at that size (the single-input default)."""
    if isinstance(alignments, AlignmentTemplate):
        return (alignments,)
    if len(alignments) == 2 and all(isinstance(v, int) for v in alignments):
        width, height = alignments
        assert isinstance(width, int)
        assert isinstance(height, int)
        return (ARCFACE_5PT_112.at_size((width, height)),)
    targets = tuple(a for a in alignments if isinstance(a, AlignmentTemplate))
    if not targets or len(targets) != len(alignments):
        raise ValueError(f"expected a (width, height) or alignment templates, got {alignments!r}")
    return targets


class FaceAnalyzer:
    """Detect, align and grade every face of an image; synchronous (run it in a worker thread).

    ``alignments``: the embedder's (``OnnxEmbedder.alignments``), one crop per model input; a
    (width, height) pair stands for the ArcFace template at that size."""

    def __init__(
        self,
        detector: FaceDetector,
        alignments: tuple[int, int] | AlignmentTemplate | Sequence[AlignmentTemplate],
        quality: QualityConfig,
    ) -> None:
        self.detector = detector
        self.alignments = crop_targets(alignments)
        self.crop_size = self.alignments[0].size  # (width, height) of the first input's crop
        self.quality = quality

    def align(self, image: RGBImage, landmarks: NDArray[np.float32]) -> tuple[NDArray[np.uint8], ...]:
        """The crops of one face, one per alignment."""
        return tuple(template.align(image, landmarks) for template in self.alignments)

    def analyze(self, image: RGBImage, max_faces: int | None = None) -> list[AnalyzedFace]:
        """Faces largest first, at most ``max_faces``; an empty list when none is found."""
        faces = sorted(self.detector.detect(image), key=lambda face: face.area, reverse=True)
        if max_faces is not None:
            faces = faces[: max(max_faces, 0)]
        results: list[AnalyzedFace] = []
        for face in faces:
            crops = self.align(image, face.landmarks)
            results.append(
                AnalyzedFace(face=face, quality=assess_quality(face, crops[0], self.quality), crops=crops)
            )
        return results
