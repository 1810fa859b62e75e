"""What the generated OpenAPI document cannot say by itself: how operations lead to one another.

OpenAPI ``links`` name, for a successful answer, the operations a client can call next and where
their parameters come from (create a collection → read it; enroll → the face, its thumbnail, its
deletion). Clients and generators (schemathesis's stateful phase) follow them. Multipart bodies
also say that form fields they do not name are ignored, which is what the service does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.api.schemas import SAFE_TEXT_PATTERN

_COLLECTION = "/v1/collections/{collection}"
_SUBJECT = _COLLECTION + "/subjects/{subject_id}"
_FACE = _COLLECTION + "/faces/{face_id}"

# (path, method, status) of a producer → {link name: (path, method, {parameter: runtime expression})}
_LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/v1/collections", "post", "201"): {
        "GetCollection": (_COLLECTION, "get", {"collection": "$response.body#/name"}),
        "CreateSubject": (_COLLECTION + "/subjects", "post", {"collection": "$response.body#/name"}),
    },
    (_COLLECTION + "/subjects", "post", "201"): {
        name: (
            path,
            method,
            {"collection": "$request.path.collection", "subject_id": "$response.body#/subject_id"},
        )
        for name, path, method in (
            ("GetSubject", _SUBJECT, "get"),
            ("EnrollFaces", _SUBJECT + "/faces", "post"),
            ("DeleteSubject", _SUBJECT, "delete"),
        )
    },
    (_SUBJECT + "/faces", "post", "201"): {
        "GetFace": (
            _FACE,
            "get",
            {"collection": "$response.body#/collection", "face_id": "$response.body#/results/0/face_id"},
        ),
        "GetFaceThumbnail": (
            _FACE + "/thumbnail",
            "get",
            {"collection": "$response.body#/collection", "face_id": "$response.body#/results/0/face_id"},
        ),
        "DeleteFace": (
            _FACE,
            "delete",
            {"collection": "$response.body#/collection", "face_id": "$response.body#/results/0/face_id"},
        ),
        "GetEnrolledSubject": (
            _SUBJECT,
            "get",
            {"collection": "$response.body#/collection", "subject_id": "$response.body#/subject_id"},
        ),
    },
    (_SUBJECT + "/faces", "get", "200"): {
        "GetListedFace": (
            _FACE,
            "get",
            {"collection": "$request.path.collection", "face_id": "$response.body#/faces/0/face_id"},
        ),
    },
}


def with_links(generate: Callable[[], dict[str, Any]], *, max_images: int) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` that adds the links and the multipart notes to ``generate``'s (cached) document;
    ``max_images``: the configured images per request (more is a 400)."""
    completed: list[int] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if id(schema) not in completed:
            _declare_metadata_value(schema)
            _add_links(schema)
            _note_form_fields(schema, max_images)
            completed.append(id(schema))
        return schema

    return openapi


def _declare_metadata_value(schema: dict[str, Any]) -> None:
    """Any JSON value whose object keys and strings are safe text (no NUL, no lone surrogate)."""
    text = {"type": "string", "pattern": SAFE_TEXT_PATTERN}
    value_ref = {"$ref": "#/components/schemas/MetadataValue"}
    schema.setdefault("components", {}).setdefault("schemas", {})["MetadataValue"] = {
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "number"},
            text,
            {"type": "array", "items": value_ref},
            {"type": "object", "propertyNames": text, "additionalProperties": value_ref},
        ]
    }


def _add_links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    for (path, method, status), links in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        out = response.setdefault("links", {})
        for name, (target_path, target_method, parameters) in links.items():
            target = paths.get(target_path, {}).get(target_method)
            if target is None or "operationId" not in target:
                continue
            out[name] = {"operationId": target["operationId"], "parameters": dict(parameters)}


def _note_form_fields(schema: dict[str, Any], max_images: int) -> None:
    """Multipart bodies: fields not named are ignored (not refused), so the document allows them;
    a list of images holds at most ``max_images``."""
    components = schema.get("components", {}).get("schemas", {})
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("multipart/form-data", {}).get("schema", {}).get("$ref", "")
            body = components.get(ref.rsplit("/", 1)[-1]) if ref else None
            if body is not None:
                body.setdefault("additionalProperties", True)
                images = body.get("properties", {}).get("images")
                if images is not None and images.get("type") == "array":
                    images["maxItems"] = max_images
