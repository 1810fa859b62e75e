"""The one place where errors become HTTP: RFC 9457 problem+json, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, code, title, detail, request.url.path, **extra)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers or None)


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
    return problem_response(exc.status_code, code, title, str(exc.detail), request)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500, "internal_error", "Internal error", "The server failed to process the request.", request
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
