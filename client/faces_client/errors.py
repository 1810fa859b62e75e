"""What the client raises: the server's RFC 9457 problems as one exception class per family.

Every problem keeps the server's ``status``, stable ``code`` and human ``detail``; an enrollment in
which no image could be enrolled also carries the per-image ``results``. Catch ``ApiError`` for any
answer the server refused, ``FacesError`` for anything at all.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from faces_client.models import EnrollResult, enroll_results


class FacesError(Exception):
    """Base class of everything the client raises."""


class TransportError(FacesError):
    """No answer from the server (network error, timeout) after the retries allowed."""

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class UnexpectedResponseError(FacesError):
    """A success answer the client cannot read (not the JSON this API sends): a proxy, or another server."""


class ServerUnreachableError(TransportError):
    """The server refused the connection: nothing listens at the address (is it running?)."""

    def __init__(self, base_url: str, cause: str, *, attempts: int = 1) -> None:
        super().__init__(
            f"cannot connect to {base_url} ({cause}): is the server running at {base_url}? "
            "start it with `faces serve`",
            attempts=attempts,
        )
        self.base_url = base_url


class ApiError(FacesError):
    """The server answered with a problem (RFC 9457 ``application/problem+json``)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str = "",
        body: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.body: Mapping[str, Any] = dict(body or {})
        self.retry_after_s = retry_after_s
        self.attempts = attempts

    @property
    def results(self) -> tuple[EnrollResult, ...] | None:
        """Per-image results, when the server sent them (an enrollment where nothing was enrolled)."""
        raw = self.body.get("results")
        return enroll_results(raw) if isinstance(raw, list) else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        """``validation_error``: each invalid field (``loc``, ``msg``, ``type``)."""
        raw = self.body.get("errors")
        return [dict(e) for e in raw if isinstance(e, Mapping)] if isinstance(raw, list) else []


class BadRequestError(ApiError):
    """400: the request was malformed (unparsable body, too many images...)."""


class AuthenticationError(ApiError):
    """401: missing or invalid API key."""


class PermissionDeniedError(ApiError):
    """403: the API key may not use this collection."""


class NotFoundError(ApiError):
    """404: no such collection, subject, face or thumbnail (``code`` says which)."""


class ConflictError(ApiError):
    """409: it exists already (``collection_exists``, ``subject_exists``)."""


class PayloadTooLargeError(ApiError):
    """413: the body, a file or its pixels exceed the server's limits."""


class ImageRejectedError(ApiError):
    """415/422: the image cannot be used (not an image, no usable face...); ``results`` per image."""


class ValidationError(ApiError):
    """422: a parameter or body field is invalid (``errors``), or the data cannot support the call."""


class RateLimitedError(ApiError):
    """429: too many requests of this kind at once (a calibration already running); see ``retry_after_s``."""


class ServiceUnavailableError(ApiError):
    """503: starting, busy or its vector engine is down; see ``retry_after_s``."""


class ServerError(ApiError):
    """500 and other 5xx: the server failed (it never shows internals; its log has the details)."""


# 422 codes that are the image's verdict rather than a bad parameter.
IMAGE_CODES = frozenset(
    {
        "invalid_image",
        "image_too_many_pixels",
        "face_error",
        "no_face",
        "multiple_faces",
        "low_quality",
        "no_image_enrolled",
        "unsupported_media_type",
    }
)

_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: ImageRejectedError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_class(status: int, code: str) -> type[ApiError]:
    """The exception family of a problem, by status (and, for 422, by code)."""
    if status == 422:
        return ImageRejectedError if code in IMAGE_CODES else ValidationError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or unparsable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def api_error(response: httpx.Response, *, attempts: int = 1) -> ApiError:
    """The typed exception for a non-success answer, from its problem body or its status line."""
    status = response.status_code
    code = f"http_{status}"
    detail = response.reason_phrase or "request failed"
    title = ""
    body: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        parsed = response.json()
        if isinstance(parsed, dict):
            body = parsed
            code = str(parsed.get("code") or code)
            title = str(parsed.get("title") or "")
            detail = str(parsed.get("detail") or title or detail)
    cls = error_class(status, code)
    return cls(
        status,
        code,
        detail,
        title=title,
        body=body,
        retry_after_s=retry_after_seconds(response),
        attempts=attempts,
    )
