"""Shared shapes of the face front end: what a detector returns and what an embedder takes.

Images are always RGB ``uint8`` arrays of shape (H, W, 3), C-contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

RGBImage = NDArray[np.uint8]
Embeddings = NDArray[np.float32]
# Aligned crops for an embedder: one (N, H, W, 3) uint8 array per model input, rows = faces. A
# one-input model also takes the bare array.
CropBatch = NDArray[np.uint8] | Sequence[NDArray[np.uint8]]


def crop_arrays(crops: CropBatch) -> tuple[NDArray[np.uint8], ...]:
    """A CropBatch as one array per input, checked to hold the same number of faces."""
    arrays = (crops,) if isinstance(crops, np.ndarray) else tuple(crops)
    if not arrays:
        raise ValueError("no crop arrays given")
    counts = {len(a) for a in arrays}
    if len(counts) != 1:
        raise ValueError(f"crop arrays of one batch hold different face counts: {[len(a) for a in arrays]}")
    return arrays


@dataclass(frozen=True, slots=True)
class DetectedFace:
    """One face in original-image pixel coordinates.

    ``landmarks`` is (5, 2) float32 in the order: right eye, left eye, nose tip,
    right mouth corner, left mouth corner (subject's right = image left), the
    order of the ArcFace 112x112 template.
    """

    box: tuple[float, float, float, float]  # x, y, w, h
    score: float
    landmarks: NDArray[np.float32]

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


class FaceDetector(Protocol):
    """Finds faces and their 5 landmarks; the seam where detection plugs in."""

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        """All faces above the detector's score threshold, largest first."""
        ...


class Embedder(Protocol):
    """Maps aligned crops to L2-normalised embeddings."""

    @property
    def dim(self) -> int: ...

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the aligned crop the model expects."""
        ...

    def embed(self, crops: CropBatch) -> Embeddings:
        """(N, H, W, 3) RGB uint8 aligned crops (one array per model input) → (N, dim) float32,
        unit L2 norm, C-contiguous."""
        ...
