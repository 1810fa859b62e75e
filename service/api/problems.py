"""The one place where errors become HTTP: RFC 9457 problem+json, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.api.schemas import Problem
from service.errors import ServiceError

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "not_ready",
}


def problem_type(code: str) -> str:
    return f"urn:faces:problem:{code}"


def problem_body(
    status: int, code: str, title: str, detail: str, instance: str, **extra: Any
) -> dict[str, Any]:
    """The RFC 9457 members every error response carries, plus extension members."""
    body: dict[str, Any] = {
        "type": problem_type(code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
    }
    body.update({k: v for k, v in extra.items() if k not in body})
    return body


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    request: Request,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, code, title, detail, request.url.path, **extra)
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = "ApiKey"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=all_headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status >= 500:
        logger.error("%s: %s", exc.code, exc.detail)
    return problem_response(
        exc.status, exc.code, exc.title, exc.detail, request, headers=exc.headers(), **exc.extra
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]
    return problem_response(
        422,
        "validation_error",
        "Request validation failed",
        "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors),
        request,
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    title = code.replace("_", " ").capitalize()
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(exc.status_code, code, title, str(exc.detail), request, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (Starlette names only the first route's)."""
    allowed = []
    for method in _METHODS:
        probe = {"type": "http", "path": request.scope["path"], "root_path": "", "method": method}
        if any(route.matches(dict(probe))[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_problem_handlers(app: FastAPI) -> None:
    """Domain errors, validation errors and HTTP errors → problem+json. Anything unexpected is the
    last-resort 500 of ``InternalErrorGuard`` (service/api/middleware.py)."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


# -- OpenAPI -----------------------------------------------------------------------------------

_DESCRIPTIONS = {
    400: "Malformed request (unparsable body, too many images, one source_hash per image, a malformed "
    "Idempotency-Key)",
    401: "Missing or invalid API key (when keys are configured)",
    403: "The API key may not use this collection",
    404: "Collection, subject or face not found",
    409: "Already exists, or a request with the same Idempotency-Key is still in progress",
    413: "Body or file larger than the configured limits",
    415: "Not a JPEG, PNG or WebP image, or a JSON body sent without Content-Type: application/json",
    422: "Invalid parameters or body, an image without a usable face, or an Idempotency-Key used "
    "before for another request",
    503: "The service is starting",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status documented as an application/problem+json Problem."""
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


def problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` that declares error bodies as ``application/problem+json`` (what they are)."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                        if status.isdigit() and int(status) >= 400 and ref.endswith("/Problem"):
                            content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
                    _declare_json_media_type_problem(operation)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _declare_json_media_type_problem(operation: dict[str, Any]) -> None:
    """Every operation with a JSON body can answer 415 (``service/api/content_type.py``)."""
    body = operation.get("requestBody", {}).get("content", {})
    if "application/json" in body and "415" not in operation.get("responses", {}):
        operation.setdefault("responses", {})["415"] = {
            "description": _DESCRIPTIONS[415],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
