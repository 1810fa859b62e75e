"""CreateUser, DeleteUser, ListUsers, AssociateFaces, DisassociateFaces: users are our subjects.

A user's faces are the subject's faces (``/v1`` sees them under ``subject_id`` = UserId);
DeleteUser keeps the faces, free-standing, as AWS does.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np

from service.api.rekognition.common import identify_threshold, max_distance
from service.api.rekognition.errors import ConflictError, InvalidParameter, ResourceNotFound
from service.api.rekognition.gateway import Context, Handler
from service.api.rekognition.shapes import decode_token, encode_token
from service.domain import face_index
from service.domain.faces import squared_distance
from service.domain.similarity import similarity_percent
from service.errors import SubjectExists, SubjectNotFound

DEFAULT_USER_MATCH_PERCENT = 75.0  # AssociateFaces' default UserMatchThreshold (AWS's)
DEFAULT_LIST_USERS = 500
# What /v1 accepts as a subject id (service/api/schemas.py SubjectId), within AWS's UserId.
_V1_SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$")


def _check_user_id(user_id: str) -> None:
    if not _V1_SUBJECT_ID.match(user_id):
        raise InvalidParameter("UserId must start with a letter or digit on this server.")


async def create_user(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id = params["UserId"]
    _check_user_id(user_id)
    try:
        await asyncio.to_thread(
            context.services.gallery.create_subject, params["CollectionId"], user_id, None, {}
        )
    except SubjectExists as exc:
        raise ConflictError(f"User '{user_id}' already exists.") from exc
    return {}


async def delete_user(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    try:
        await asyncio.to_thread(
            context.services.gallery.release_subject, params["CollectionId"], params["UserId"]
        )
    except SubjectNotFound as exc:
        raise ResourceNotFound(exc.detail) from exc
    return {}


async def list_users(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    after = decode_token(params.get("NextToken"), "users")
    limit = int(params.get("MaxResults") or DEFAULT_LIST_USERS)
    records = await asyncio.to_thread(
        face_index.subjects_page, context.services.gallery, params["CollectionId"], after, limit + 1
    )
    page = records[:limit]
    out: dict[str, Any] = {"Users": [{"UserId": r.subject_id, "UserStatus": "ACTIVE"} for r in page]}
    if len(records) > limit:
        out["NextToken"] = encode_token("users", page[-1].subject_id)
    return out


async def associate_faces(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Faces that are free-standing join the user when they match the user's existing faces at
    UserMatchThreshold (default 75, on the collection's identify scale); a user without faces
    takes them as they are."""
    collection, user_id = params["CollectionId"], params["UserId"]
    face_ids: list[str] = list(dict.fromkeys(params["FaceIds"]))
    gallery = context.services.gallery
    _pk, threshold = await identify_threshold(context, collection)
    try:
        enrolled = await asyncio.to_thread(face_index.subject_embeddings, gallery, collection, user_id)
    except SubjectNotFound as exc:
        raise ResourceNotFound(exc.detail) from exc
    found = await asyncio.to_thread(
        face_index.faces_by_id, gallery, collection, face_ids, with_embedding=True
    )
    params.setdefault("UserMatchThreshold", DEFAULT_USER_MATCH_PERCENT)
    limit = max_distance(params, "UserMatchThreshold", threshold)
    unsuccessful: list[dict[str, Any]] = []
    eligible: list[str] = []
    for face_id in face_ids:
        record = found.get(face_id)
        if record is None:
            unsuccessful.append({"FaceId": face_id, "Reasons": ["FACE_NOT_FOUND"]})
            continue
        if record.subject_id is not None and record.subject_id != user_id:
            unsuccessful.append(
                {
                    "FaceId": face_id,
                    "UserId": record.subject_id,
                    "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"],
                }
            )
            continue
        if enrolled.size and record.embedding is not None and record.subject_id is None:
            distance = squared_distance(float(np.max(enrolled @ record.embedding)))
            if distance > limit:
                unsuccessful.append(
                    {
                        "FaceId": face_id,
                        "UserId": user_id,
                        "Confidence": similarity_percent(distance, threshold),
                        "Reasons": ["LOW_MATCH_CONFIDENCE"],
                    }
                )
                continue
        eligible.append(face_id)
    changed = set(await asyncio.to_thread(gallery.associate_faces, collection, user_id, eligible))
    for face_id in eligible:
        if face_id not in changed:  # taken by another user in between
            unsuccessful.append({"FaceId": face_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
    return {
        "AssociatedFaces": [{"FaceId": f} for f in eligible if f in changed],
        "UnsuccessfulFaceAssociations": unsuccessful,
        "UserStatus": "ACTIVE",
    }


async def disassociate_faces(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    collection, user_id = params["CollectionId"], params["UserId"]
    face_ids: list[str] = list(dict.fromkeys(params["FaceIds"]))
    gallery = context.services.gallery
    found = await asyncio.to_thread(face_index.faces_by_id, gallery, collection, face_ids)
    try:
        changed = set(await asyncio.to_thread(gallery.disassociate_faces, collection, user_id, face_ids))
    except SubjectNotFound as exc:
        raise ResourceNotFound(exc.detail) from exc
    unsuccessful: list[dict[str, Any]] = []
    for face_id in face_ids:
        if face_id in changed:
            continue
        record = found.get(face_id)
        if record is None:
            unsuccessful.append({"FaceId": face_id, "Reasons": ["FACE_NOT_FOUND"]})
        else:
            entry: dict[str, Any] = {"FaceId": face_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
            if record.subject_id is not None:
                entry["UserId"] = record.subject_id
            unsuccessful.append(entry)
    return {
        "DisassociatedFaces": [{"FaceId": f} for f in face_ids if f in changed],
        "UnsuccessfulFaceDisassociations": unsuccessful,
        "UserStatus": "ACTIVE",
    }


HANDLERS: dict[str, Handler] = {
    "CreateUser": create_user,
    "DeleteUser": delete_user,
    "ListUsers": list_users,
    "AssociateFaces": associate_faces,
    "DisassociateFaces": disassociate_faces,
}
