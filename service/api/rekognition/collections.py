"""CreateCollection, DeleteCollection, ListCollections, DescribeCollection: our collections."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from service.api.rekognition.common import page_size
from service.api.rekognition.errors import InvalidParameter
from service.api.rekognition.gateway import Context, Handler
from service.api.rekognition.shapes import decode_token, encode_token
from service.domain import face_index

# What /v1 can name (service/api/schemas.py CollectionName): stricter than AWS's CollectionId.
_V1_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def collection_arn(name: str) -> str:
    return f"arn:aws:rekognition:local:000000000000:collection/{name}"


def _check_name(name: str) -> None:
    if not _V1_NAME.match(name):
        raise InvalidParameter(
            "CollectionId must start with a letter or digit and have at most 64 characters "
            "(letters, digits, '_', '.', '-') on this server."
        )


async def create_collection(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name = params["CollectionId"]
    _check_name(name)
    await asyncio.to_thread(context.services.gallery.create_collection, name, "")
    return {
        "StatusCode": 200,
        "CollectionArn": collection_arn(name),
        "FaceModelVersion": context.model_version,
    }


async def delete_collection(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(context.services.gallery.delete_collection, params["CollectionId"])
    return {"StatusCode": 200}


async def list_collections(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    after = decode_token(params.get("NextToken"), "collections")
    limit = page_size(params)
    records = await asyncio.to_thread(face_index.list_collections, context.services.gallery)
    names = [r.name for r in records if context.allows(r.name) and (after is None or r.name > after)]
    page = names[:limit]
    out: dict[str, Any] = {
        "CollectionIds": page,
        "FaceModelVersions": [context.model_version] * len(page),
    }
    if len(names) > limit:
        out["NextToken"] = encode_token("collections", page[-1])
    return out


async def describe_collection(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    record = await asyncio.to_thread(
        face_index.describe_collection, context.services.gallery, params["CollectionId"]
    )
    return {
        "FaceCount": record.face_count,
        "UserCount": record.subject_count,
        "FaceModelVersion": context.model_version,
        "CollectionARN": collection_arn(record.name),
        "CreationTimestamp": record.created_at.timestamp(),
    }


HANDLERS: dict[str, Handler] = {
    "CreateCollection": create_collection,
    "DeleteCollection": delete_collection,
    "ListCollections": list_collections,
    "DescribeCollection": describe_collection,
}
