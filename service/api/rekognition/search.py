"""SearchFacesByImage, SearchFaces (face by face) and SearchUsersByImage, SearchUsers (per user).

Similarity is ``similarity_percent(d², t)`` with ``t`` the collection's identify threshold in force,
and the filters compare distances: at the default 80, SearchUsersByImage's best user is exactly
/v1 identify's match, and SearchFaces* return the faces /v1 identify would accept.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from service.api.rekognition.common import (
    DEFAULT_MAX_MATCHES,
    identify_threshold,
    image_bytes,
    max_distance,
    quality_level,
)
from service.api.rekognition.errors import InvalidParameter, ResourceNotFound
from service.api.rekognition.faces import aws_reasons
from service.api.rekognition.gateway import Context, Handler
from service.api.rekognition.shapes import bounding_box, confidence, face_detail, stored_face
from service.domain import face_index
from service.domain.face_index import ImageFaces, Probe, QualityLevel, probe_face
from service.domain.ranking import Candidate, FaceHit
from service.domain.similarity import similarity_percent
from service.errors import SubjectNotFound


async def _probe(context: Context, params: dict[str, Any]) -> Probe:
    services = context.services
    found = await probe_face(
        services.engine,
        image_bytes(params),
        level=quality_level(params, QualityLevel.NONE),
        max_pixels=services.settings.max_image_pixels,
    )
    if isinstance(found, ImageFaces):
        if not found.faces:
            raise InvalidParameter("There are no faces in the image.")
        raise InvalidParameter("No face in the image passes the QualityFilter.")
    return found


def _face_matches(hits: list[FaceHit], threshold: float, model_version: str) -> list[dict[str, Any]]:
    return [
        {"Similarity": similarity_percent(h.distance, threshold), "Face": stored_face(h.face, model_version)}
        for h in hits
    ]


async def search_faces_by_image(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    collection = params["CollectionId"]
    pk, threshold = await identify_threshold(context, collection)
    probe = await _probe(context, params)
    hits = await asyncio.to_thread(
        context.services.gallery.search_faces,
        pk,
        probe.face.embedding,
        int(params.get("MaxFaces") or DEFAULT_MAX_MATCHES),
        max_distance(params, "FaceMatchThreshold", threshold),
    )
    return {
        "SearchedFaceBoundingBox": bounding_box(probe.face.box, probe.size),
        "SearchedFaceConfidence": confidence(probe.face.analyzed),
        "FaceMatches": _face_matches(hits, threshold, context.model_version),
        "FaceModelVersion": context.model_version,
    }


async def search_faces(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    collection, face_id = params["CollectionId"], params["FaceId"]
    pk, threshold = await identify_threshold(context, collection)
    gallery = context.services.gallery
    found = await asyncio.to_thread(
        face_index.faces_by_id, gallery, collection, [face_id], with_embedding=True
    )
    record = found.get(face_id)
    if record is None or record.embedding is None:
        raise ResourceNotFound(f"Face '{face_id}' not found in '{collection}'.")
    hits = await asyncio.to_thread(
        gallery.search_faces,
        pk,
        record.embedding,
        int(params.get("MaxFaces") or DEFAULT_MAX_MATCHES),
        max_distance(params, "FaceMatchThreshold", threshold),
        record.pk,
    )
    return {
        "SearchedFaceId": face_id,
        "FaceMatches": _face_matches(hits, threshold, context.model_version),
        "FaceModelVersion": context.model_version,
    }


def _user_matches(
    candidates: list[Candidate], threshold: float, limit: float, max_users: int
) -> list[dict[str, Any]]:
    return [
        {
            "Similarity": similarity_percent(c.distance, threshold),
            "User": {"UserId": c.subject_id, "UserStatus": "ACTIVE"},
        }
        for c in candidates
        if c.distance <= limit
    ][:max_users]


async def search_users_by_image(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    collection = params["CollectionId"]
    pk, threshold = await identify_threshold(context, collection)
    probe = await _probe(context, params)
    max_users = int(params.get("MaxUsers") or DEFAULT_MAX_MATCHES)
    queries = np.ascontiguousarray(probe.face.embedding[None, :])
    (candidates,) = await asyncio.to_thread(context.services.gallery.search, pk, queries, max_users)
    return {
        "UserMatches": _user_matches(
            candidates, threshold, max_distance(params, "UserMatchThreshold", threshold), max_users
        ),
        "FaceModelVersion": context.model_version,
        "SearchedFace": {"FaceDetail": face_detail(probe.face.analyzed, probe.size)},
        "UnsearchedFaces": [
            {"FaceDetails": face_detail(u.face, probe.size), "Reasons": aws_reasons(u.reasons)}
            for u in probe.skipped
        ],
    }


async def search_users(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """By FaceId: that face's embedding. By UserId: each of the user's faces, best distance per
    other user (the user itself is left out)."""
    collection = params["CollectionId"]
    user_id, face_id = params.get("UserId"), params.get("FaceId")
    if (user_id is None) == (face_id is None):
        raise InvalidParameter("Give exactly one of UserId and FaceId.")
    pk, threshold = await identify_threshold(context, collection)
    gallery = context.services.gallery
    out: dict[str, Any] = {"FaceModelVersion": context.model_version}
    if face_id is not None:
        found = await asyncio.to_thread(
            face_index.faces_by_id, gallery, collection, [face_id], with_embedding=True
        )
        record = found.get(face_id)
        if record is None or record.embedding is None:
            raise ResourceNotFound(f"Face '{face_id}' not found in '{collection}'.")
        queries = np.ascontiguousarray(record.embedding[None, :])
        out["SearchedFace"] = {"FaceId": face_id}
    else:
        assert user_id is not None
        try:
            queries = await asyncio.to_thread(face_index.subject_embeddings, gallery, collection, user_id)
        except SubjectNotFound as exc:
            raise ResourceNotFound(exc.detail) from exc
        out["SearchedUser"] = {"UserId": user_id}
    max_users = int(params.get("MaxUsers") or DEFAULT_MAX_MATCHES)
    best: dict[str, Candidate] = {}
    if queries.size:
        ranked = await asyncio.to_thread(context.services.gallery.search, pk, queries, max_users + 1)
        for candidates in ranked:
            for c in candidates:
                if c.subject_id != user_id and (
                    c.subject_id not in best or c.distance < best[c.subject_id].distance
                ):
                    best[c.subject_id] = c
    ordered = sorted(best.values(), key=lambda c: c.distance)
    out["UserMatches"] = _user_matches(
        ordered, threshold, max_distance(params, "UserMatchThreshold", threshold), max_users
    )
    return out


HANDLERS: dict[str, Handler] = {
    "SearchFacesByImage": search_faces_by_image,
    "SearchFaces": search_faces,
    "SearchUsersByImage": search_users_by_image,
    "SearchUsers": search_users,
}
