"""The AWS Rekognition-compatible API: same process, store and index as /v1 (README "Coming from
AWS Rekognition")."""

from __future__ import annotations

from service.api.rekognition import collections, detect, faces, search, users
from service.api.rekognition.gateway import Handler, RekognitionGateway
from service.api.rekognition.model import RekognitionModel, load_model

HANDLERS: dict[str, Handler] = {
    **collections.HANDLERS,
    **faces.HANDLERS,
    **search.HANDLERS,
    **detect.HANDLERS,
    **users.HANDLERS,
}
# Two images of AWS's 5 MB blob limit, base64 (4/3), plus room for the rest of the JSON.
_IMAGE_LIMIT = 5 * 1024 * 1024
MAX_BODY_BYTES = 2 * (4 * -(-_IMAGE_LIMIT // 3)) + 64 * 1024


def served_model() -> RekognitionModel:
    """botocore's Rekognition model (read at start-up), checked to name every operation served."""
    model = load_model()
    unknown = sorted(set(HANDLERS) - set(model.operations))
    if unknown:
        raise RuntimeError(f"handlers for operations botocore's model lacks: {unknown}")
    return model


__all__ = ["HANDLERS", "MAX_BODY_BYTES", "RekognitionGateway", "served_model"]
