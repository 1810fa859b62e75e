"""Image → aligned, quality-checked faces: the CPU half of the pipeline, before batched embedding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.runtime.alignment import ARCFACE_5PT_112, AlignmentTemplate
from service.runtime.imaging import decode_at_least
from service.runtime.quality import FaceQuality, QualityConfig, assess_quality
from service.runtime.types import DetectedFace, FaceDetector, RGBImage

# Crops are warped from pixels where the smallest kept face box is at least this many crop sides
# across, so decoding a large photo at reduced size never costs a crop any detail.
CROP_SOURCE_OVERSAMPLE = 1.5


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
        detection_side: int = 640,
    ) -> None:
        self.detector = detector
        self.alignments = crop_targets(alignments)
        self.crop_size = self.alignments[0].size  # (width, height) of the first input's crop
        self.quality = quality
        # The longer side the detector works at: no need to decode more pixels than this to detect.
        self.detection_side = detection_side

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

    def analyze_encoded(
        self, data: bytes, *, max_pixels: int, max_faces: int | None = None
    ) -> list[AnalyzedFace]:
        """``analyze`` on an encoded image, decoding no more pixels than detection and the crops need.

        Detection runs on a decode at least ``detection_side`` long (the detector downsizes to that
        anyway). When a kept face is too small there for a full-quality crop, the image is decoded
        again at the size that makes it large enough (at most full resolution) and cropped from that.
        Boxes and landmarks come back in full-resolution coordinates, as from ``analyze``.
        """
        first = decode_at_least(data, max_pixels=max_pixels, min_long_side=self.detection_side)
        if not first.reduced:
            return self.analyze(first.pixels, max_faces)
        faces = sorted(self.detector.detect(first.pixels), key=lambda face: face.area, reverse=True)
        if max_faces is not None:
            faces = faces[: max(max_faces, 0)]
        if not faces:
            return []
        source = first
        smallest = min(min(face.box[2], face.box[3]) for face in faces)
        needed = CROP_SOURCE_OVERSAMPLE * max(max(t.size) for t in self.alignments)
        if smallest < needed:
            long_side = max(first.size) * needed / max(smallest, 1.0)
            source = decode_at_least(
                data,
                max_pixels=max_pixels,
                min_long_side=None if long_side >= max(first.full_size) else math.ceil(long_side),
            )
        to_source = np.array(first.factor_to(source.size), dtype=np.float32)
        to_full = np.array(first.factor_to(first.full_size), dtype=np.float32)
        results: list[AnalyzedFace] = []
        for face in faces:
            crops = self.align(source.pixels, face.landmarks * to_source)
            full = _scaled(face, to_full)
            results.append(
                AnalyzedFace(face=full, quality=assess_quality(full, crops[0], self.quality), crops=crops)
            )
        return results


def _scaled(face: DetectedFace, factor: NDArray[np.float32]) -> DetectedFace:
    x, y, w, h = face.box
    fx, fy = float(factor[0]), float(factor[1])
    landmarks = np.ascontiguousarray(face.landmarks * factor, dtype=np.float32)
    return DetectedFace(box=(x * fx, y * fy, w * fx, h * fy), score=face.score, landmarks=landmarks)
