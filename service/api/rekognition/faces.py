"""IndexFaces, ListFaces, DeleteFaces: faces one by one, free-standing unless under a user."""

from __future__ import annotations

import asyncio
from typing import Any

from service.api.rekognition.common import image_bytes, page_size, quality_level
from service.api.rekognition.errors import InvalidPaginationToken, ResourceNotFound
from service.api.rekognition.gateway import Context, Handler
from service.api.rekognition.shapes import decode_token, encode_token, face_detail, stored_face
from service.domain import face_index
from service.domain.face_index import (
    BLURRY,
    EXCEEDS_MAX_FACES,
    FACE_TOO_SMALL,
    LOW_DETECTOR_SCORE,
    NOT_LARGEST,
    QualityLevel,
    index_image,
)
from service.errors import SubjectNotFound

# Our quality reason codes under AWS's Reason names.
AWS_REASONS = {
    FACE_TOO_SMALL: "SMALL_BOUNDING_BOX",
    LOW_DETECTOR_SCORE: "LOW_CONFIDENCE",
    BLURRY: "LOW_SHARPNESS",
    EXCEEDS_MAX_FACES: "EXCEEDS_MAX_FACES",
    NOT_LARGEST: "FACE_NOT_LARGEST",
}


def aws_reasons(reasons: list[str]) -> list[str]:
    return [AWS_REASONS.get(r, "LOW_FACE_QUALITY") for r in reasons]


async def index_faces(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    services = context.services
    outcome = await index_image(
        services.engine,
        services.gallery,
        params["CollectionId"],
        image_bytes(params),
        external_image_id=params.get("ExternalImageId"),
        max_faces=params.get("MaxFaces"),
        level=quality_level(params, QualityLevel.AUTO),
        max_pixels=services.settings.max_image_pixels,
        keep_thumbnails=services.settings.thumbnails_enabled,
    )
    records = []
    for face, record in outcome.indexed:
        detail = face_detail(face, outcome.size)
        stored = stored_face(record, context.model_version)
        stored["BoundingBox"] = detail["BoundingBox"]
        stored.pop("IndexFacesModelVersion", None)
        records.append({"Face": stored, "FaceDetail": detail})
    return {
        "FaceRecords": records,
        "FaceModelVersion": context.model_version,
        "UnindexedFaces": [
            {"Reasons": aws_reasons(u.reasons), "FaceDetail": face_detail(u.face, outcome.size)}
            for u in outcome.unindexed
        ],
    }


async def list_faces(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    after = decode_token(params.get("NextToken"), "faces")
    if after is not None and not after.isdigit():
        raise InvalidPaginationToken("The NextToken is not one this server issued.")
    after_pk = int(after) if after is not None else 0
    limit = page_size(params)
    try:
        records = await asyncio.to_thread(
            lambda: face_index.faces_page(
                context.services.gallery,
                params["CollectionId"],
                after_pk=after_pk,
                limit=limit + 1,
                subject_id=params.get("UserId"),
                face_ids=params.get("FaceIds"),
            )
        )
    except SubjectNotFound as exc:
        raise ResourceNotFound(exc.detail) from exc
    page = records[:limit]
    out: dict[str, Any] = {
        "Faces": [stored_face(r, context.model_version) for r in page],
        "FaceModelVersion": context.model_version,
    }
    if len(records) > limit:
        out["NextToken"] = encode_token("faces", str(page[-1].pk))
    return out


async def delete_faces(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    collection = params["CollectionId"]
    face_ids: list[str] = list(dict.fromkeys(params["FaceIds"]))
    gallery = context.services.gallery
    existing = await asyncio.to_thread(face_index.faces_by_id, gallery, collection, face_ids)
    deleted = await asyncio.to_thread(gallery.delete_free_faces, collection, face_ids)
    gone = {r.face_id for r in deleted}
    unsuccessful = []
    for face_id in face_ids:
        if face_id in gone:
            continue
        record = existing.get(face_id)
        if record is not None and record.subject_id is not None:
            unsuccessful.append(
                {
                    "FaceId": face_id,
                    "UserId": record.subject_id,
                    "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"],
                }
            )
        else:
            unsuccessful.append({"FaceId": face_id, "Reasons": ["FACE_NOT_FOUND"]})
    return {"DeletedFaces": [f for f in face_ids if f in gone], "UnsuccessfulFaceDeletions": unsuccessful}


HANDLERS: dict[str, Handler] = {
    "IndexFaces": index_faces,
    "ListFaces": list_faces,
    "DeleteFaces": delete_faces,
}
