"""What several operation families share: image input, the collection's thresholds, paging."""

from __future__ import annotations

import asyncio
from typing import Any

from service.api.rekognition.errors import InvalidParameter
from service.api.rekognition.gateway import Context
from service.domain.face_index import QualityLevel, identify_threshold_of
from service.domain.similarity import to_distance

DEFAULT_MATCH_PERCENT = 80.0  # Rekognition's default FaceMatchThreshold / SimilarityThreshold
DEFAULT_MAX_RESULTS = 1000  # a page of ListFaces / ListCollections / ListUsers without MaxResults
DEFAULT_MAX_MATCHES = 10  # SearchFaces* MaxFaces and SearchUsers* MaxUsers when not given


def image_bytes(params: dict[str, Any], member: str = "Image") -> bytes:
    """``Image.Bytes`` (already base64-decoded by the model check); S3 is not served."""
    image = params[member]
    data = image.get("Bytes")
    if data is None:
        if "S3Object" in image:
            raise InvalidParameter(
                f"{member}.S3Object is not supported: this server only takes {member}.Bytes."
            )
        raise InvalidParameter(f"{member}.Bytes is required.")
    assert isinstance(data, bytes)
    return data


def quality_level(params: dict[str, Any], default: QualityLevel) -> QualityLevel:
    value = params.get("QualityFilter")
    return QualityLevel(value) if value is not None else default


async def identify_threshold(context: Context, collection: str) -> tuple[int, float]:
    """The collection's key and the identify threshold in force (its own or the service default):
    what /v1 identify decides with, and what Similarity 80 means for it."""
    services = context.services
    return await asyncio.to_thread(identify_threshold_of, services.gallery, services.thresholds, collection)


def max_distance(params: dict[str, Any], member: str, threshold: float) -> float:
    """The caller's percentage (default 80) as the largest squared distance it accepts."""
    percent = params.get(member)
    return to_distance(DEFAULT_MATCH_PERCENT if percent is None else float(percent), threshold)


def page_size(params: dict[str, Any]) -> int:
    size = params.get("MaxResults")
    return DEFAULT_MAX_RESULTS if not size else int(size)
