"""5-point similarity alignment onto named templates, chosen by the model card.

Two templates, both in the landmark order of :class:`DetectedFace` (right eye, left eye, nose tip,
right mouth corner, left mouth corner; subject's right = image left):

- ``arcface_5pt_112``: the insightface / OpenCV FaceRecognizerSF 112×112 crop (SFace), bicubic.
- ``dlib_5pt_150``: dlib's 150×150 face chip with padding 0.25, the crop dlib's ResNet was trained on
  (``get_face_chip_details(det, 150, 0.25)`` in dlib/image_transforms/interpolation.h). dlib places
  its own landmarks on a mean face normalised to [0, 1]², a chip point being
  ``(padding + p) / (1 + 2·padding) · 150``. YuNet's five points are not dlib's five (dlib's are the
  four eye corners and the bottom of the nose), so each YuNet point goes to the same anatomical point
  of dlib's 68-point mean face (iBUG numbering), the template dlib's 5-point one is taken from:
  eye centre = mean of the eye contour (points 36–41 / 42–47), nose tip = point 30, mouth corners =
  points 48 / 54. Bilinear, as dlib's ``extract_image_chips``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np
from numpy.typing import NDArray

from service.errors import InvalidModelCard
from service.runtime.types import RGBImage

# insightface / OpenCV FaceRecognizerSF template, in the landmark order of DetectedFace.
ARCFACE_TEMPLATE_112: NDArray[np.float32] = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_TEMPLATE_112.setflags(write=False)

# Bicubic resampling keeps the eyes and mouth sharper than bilinear when LFW-sized faces (~90 px)
# are warped to 112 px: +0.10 points of LFW 10-fold accuracy with SFace (models/artifacts/README.md).
ALIGN_INTERPOLATION = cv2.INTER_CUBIC

# dlib's 68-point mean face (interpolation.h, points 17..67 in [0, 1]²), only the points used here.
DLIB_MEAN_FACE_POINTS: Mapping[int, tuple[float, float]] = MappingProxyType(
    {
        30: (0.490127, 0.515625),  # nose tip
        36: (0.121737, 0.216423),  # subject's right eye contour, 36..41
        37: (0.187122, 0.178758),
        38: (0.265825, 0.179852),
        39: (0.334606, 0.231733),
        40: (0.260918, 0.245099),
        41: (0.182743, 0.244077),
        42: (0.645647, 0.231733),  # subject's left eye contour, 42..47
        43: (0.714428, 0.179852),
        44: (0.793132, 0.178758),
        45: (0.858516, 0.216423),
        46: (0.797510, 0.244077),
        47: (0.719335, 0.245099),
        48: (0.254149, 0.780233),  # mouth corner, subject's right
        54: (0.726104, 0.780233),  # mouth corner, subject's left
    }
)
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25


def dlib_chip_template(size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING) -> NDArray[np.float32]:
    """YuNet's five points on dlib's face chip of ``size`` pixels with ``padding`` (see module docs)."""
    mean = {i: np.array(p, dtype=np.float64) for i, p in DLIB_MEAN_FACE_POINTS.items()}
    unit = np.stack(
        [
            np.mean([mean[i] for i in range(36, 42)], axis=0),
            np.mean([mean[i] for i in range(42, 48)], axis=0),
            mean[30],
            mean[48],
            mean[54],
        ]
    )
    return np.ascontiguousarray((padding + unit) / (1.0 + 2.0 * padding) * size, dtype=np.float32)


@dataclass(frozen=True, eq=False)  # identity equality: it holds an array
class AlignmentTemplate:
    """Where the five landmarks go in a crop of ``size`` (width, height), and how pixels are resampled."""

    name: str
    size: tuple[int, int]
    points: NDArray[np.float32]  # (5, 2), DetectedFace landmark order, pixel coordinates at ``size``
    interpolation: int

    def points_for(self, size: tuple[int, int] | None = None) -> NDArray[np.float32]:
        """The template scaled to a (width, height) crop (its own size when None)."""
        width, height = size or self.size
        scale = np.array([width / self.size[0], height / self.size[1]], dtype=np.float32)
        return np.ascontiguousarray(self.points * scale, dtype=np.float32)

    def at_size(self, size: tuple[int, int]) -> AlignmentTemplate:
        """The same template for a crop of another (width, height): points scaled, same name."""
        if size == self.size:
            return self
        points = self.points_for(size)
        points.setflags(write=False)
        return AlignmentTemplate(self.name, size, points, self.interpolation)

    def matrix(
        self, landmarks: NDArray[np.float32], size: tuple[int, int] | None = None
    ) -> NDArray[np.float64]:
        """The 2×3 image → crop similarity for these landmarks."""
        return estimate_similarity(landmarks, self.points_for(size))

    def align(
        self, image: RGBImage, landmarks: NDArray[np.float32], size: tuple[int, int] | None = None
    ) -> NDArray[np.uint8]:
        """Warp the full-resolution image so the landmarks land on the template; (h, w, 3) uint8."""
        crop_size = size or self.size
        crop = cv2.warpAffine(
            image,
            self.matrix(landmarks, crop_size),
            crop_size,
            flags=self.interpolation,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return np.ascontiguousarray(crop, dtype=np.uint8)


ARCFACE_5PT_112 = AlignmentTemplate("arcface_5pt_112", (112, 112), ARCFACE_TEMPLATE_112, ALIGN_INTERPOLATION)
_DLIB_POINTS = dlib_chip_template()
_DLIB_POINTS.setflags(write=False)
DLIB_5PT_150 = AlignmentTemplate(
    "dlib_5pt_150", (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE), _DLIB_POINTS, cv2.INTER_LINEAR
)

ALIGNMENTS: Mapping[str, AlignmentTemplate] = MappingProxyType(
    {template.name: template for template in (ARCFACE_5PT_112, DLIB_5PT_150)}
)


def get_alignment(name: str) -> AlignmentTemplate:
    """The named template; :class:`InvalidModelCard` (listing the known names) otherwise."""
    try:
        return ALIGNMENTS[name]
    except KeyError:
        raise InvalidModelCard(
            f"unknown alignment {name!r}; this service knows {sorted(ALIGNMENTS)}"
        ) from None


def template_for(size: tuple[int, int]) -> NDArray[np.float32]:
    """The ArcFace template scaled to a (width, height) crop."""
    return ARCFACE_5PT_112.points_for(size)


def estimate_similarity(src: NDArray[np.floating], dst: NDArray[np.floating]) -> NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991); returns the 2x3 matrix cv2.warpAffine takes.
    """
    src64 = np.asarray(src, dtype=np.float64)
    dst64 = np.asarray(dst, dtype=np.float64)
    if src64.shape != dst64.shape or src64.ndim != 2 or src64.shape[1] != 2 or src64.shape[0] < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src64.shape} and {dst64.shape}")
    src_mean = src64.mean(axis=0)
    dst_mean = dst64.mean(axis=0)
    src_c = src64 - src_mean
    dst_c = dst64 - dst_mean
    n = src64.shape[0]
    covariance = dst_c.T @ src_c / n
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(covariance) < 0:
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    src_var = float((src_c**2).sum() / n)
    scale = float((singular * sign).sum() / src_var) if src_var > 0 else 1.0
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(
    image: RGBImage,
    landmarks: NDArray[np.float32],
    size: tuple[int, int] | None = (112, 112),
    alignment: AlignmentTemplate = ARCFACE_5PT_112,
) -> NDArray[np.uint8]:
    """Warp the image so the 5 landmarks land on ``alignment`` scaled to ``size`` (None: its own size)."""
    return alignment.align(image, landmarks, size)
