"""JSON bodies must say they are JSON: one check for every route that reads a JSON body.

Without it a body sent as a form (``curl -d``), as multipart (``curl -F``) or with no content type
reaches the schema as raw bytes and fails as a cryptic 422 ("Input should be a valid dictionary").
"""

from __future__ import annotations

from email.message import Message

from fastapi import Request
from fastapi.params import Form
from fastapi.routing import APIRoute

from service.errors import UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters ignored: what FastAPI parses as JSON."""
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def takes_json_body(route: object) -> bool:
    """The route declares a body that is not a form or file upload."""
    if not isinstance(route, APIRoute) or route.body_field is None:
        return False
    return not isinstance(route.body_field.field_info, Form)  # File is a Form


async def require_json_content_type(request: Request) -> None:
    """App-wide dependency: 415 ``unsupported_media_type`` for a non-empty body that is not declared
    JSON on a route that takes JSON. An empty body is left to the schema (422 "Field required")."""
    if not takes_json_body(request.scope.get("route")):
        return
    content_type = request.headers.get("content-type")
    if is_json_media_type(content_type) or not await request.body():
        return
    sent = f"'{content_type}'" if content_type else "no Content-Type"
    raise UnsupportedMediaType(
        f"This endpoint takes a JSON body: send it with 'Content-Type: {JSON_MEDIA_TYPE}' (got {sent}).",
        expected=JSON_MEDIA_TYPE,
    )
