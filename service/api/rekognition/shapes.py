"""Output shapes (Face, FaceDetail, BoundingBox, Landmarks ...) built from our records, and page tokens.

Geometry is in ratios of the upright image (AWS's convention); percentages are 0–100.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import cv2
import numpy as np

from service.api.rekognition.errors import InvalidPaginationToken
from service.domain.face_index import AnalyzedFace
from service.domain.gallery import FaceRecord

# Our five landmarks (service/runtime/types.py: image-left eye, image-right eye, nose tip, image-left
# and image-right mouth corner) under AWS's names, which are also from the viewer's side.
LANDMARK_TYPES = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")
# Sharpness = 100·v/(v + SHARPNESS_HALF): v is the Laplacian variance of the aligned crop (the value
# /v1 reports as quality.sharpness); SHARPNESS_HALF scores 50.
SHARPNESS_HALF = 100.0


def bounding_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> dict[str, float]:
    x, y, w, h = box
    width, height = max(size[0], 1), max(size[1], 1)
    return {"Width": w / width, "Height": h / height, "Left": x / width, "Top": y / height}


def landmarks(face: AnalyzedFace, size: tuple[int, int]) -> list[dict[str, Any]]:
    width, height = max(size[0], 1), max(size[1], 1)
    points = face.face.landmarks
    return [
        {"Type": kind, "X": float(points[i][0]) / width, "Y": float(points[i][1]) / height}
        for i, kind in enumerate(LANDMARK_TYPES)
    ]


def image_quality(face: AnalyzedFace) -> dict[str, float]:
    gray = cv2.cvtColor(face.crop, cv2.COLOR_RGB2GRAY)
    brightness = float(np.mean(gray)) / 255.0 * 100.0
    v = float(face.quality.sharpness)
    return {"Brightness": brightness, "Sharpness": 100.0 * v / (v + SHARPNESS_HALF)}


def confidence(face: AnalyzedFace) -> float:
    return float(min(max(face.face.score, 0.0), 1.0)) * 100.0


def face_detail(face: AnalyzedFace, size: tuple[int, int]) -> dict[str, Any]:
    """FaceDetail: box, the five landmarks, brightness and sharpness, detector confidence."""
    return {
        "BoundingBox": bounding_box(face.face.box, size),
        "Landmarks": landmarks(face, size),
        "Quality": image_quality(face),
        "Confidence": confidence(face),
    }


def compared_face(face: AnalyzedFace, size: tuple[int, int]) -> dict[str, Any]:
    detail = face_detail(face, size)
    return {k: detail[k] for k in ("BoundingBox", "Confidence", "Landmarks", "Quality")}


def stored_face(record: FaceRecord, model_version: str) -> dict[str, Any]:
    """Face: a stored face as AWS lists it. Faces enrolled through /v1 carry no image size, so no
    BoundingBox; free-standing faces no UserId."""
    out: dict[str, Any] = {"FaceId": record.face_id, "IndexFacesModelVersion": model_version}
    size = record.quality.get("image_size")
    if isinstance(size, list) and len(size) == 2:
        out["BoundingBox"] = bounding_box(record.box, (int(size[0]), int(size[1])))
    if record.image_id is not None:
        out["ImageId"] = record.image_id
    if record.external_image_id is not None:
        out["ExternalImageId"] = record.external_image_id
    score = record.quality.get("detector_score")
    if isinstance(score, int | float):
        out["Confidence"] = float(min(max(score, 0.0), 1.0)) * 100.0
    if record.subject_id is not None:
        out["UserId"] = record.subject_id
    return out


def encode_token(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_token(token: str | None, kind: str) -> str | None:
    """The position a NextToken of ``kind`` holds (None: the first page)."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidPaginationToken("The NextToken is not one this server issued.") from exc
    found_kind, colon, value = text.partition(":")
    if not colon or found_kind != kind:
        raise InvalidPaginationToken("The NextToken is not one this server issued for this operation.")
    return value
