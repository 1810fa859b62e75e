"""Domain errors: every failure a client can cause or see, with a stable code and HTTP status.

The HTTP layer maps these to RFC 9457 problem+json in one place (service/api/problems.py).
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base class: ``code`` is stable and documented, ``status`` the HTTP status it maps to."""

    code: str = "internal_error"
    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def headers(self) -> dict[str, str]:
        """HTTP headers the response carries besides the problem body."""
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in the large-image worker process and re-raised here: keep detail and extra.
        return (_rebuild, (type(self), self.detail, self.extra))


def _rebuild(cls: type[ServiceError], detail: str, extra: dict[str, Any]) -> ServiceError:
    return cls(detail, **extra)


class NotFound(ServiceError):
    code, status, title = "not_found", 404, "Not found"


class CollectionNotFound(NotFound):
    code = "collection_not_found"
    title = "Collection not found"


class SubjectNotFound(NotFound):
    code = "subject_not_found"
    title = "Subject not found"


class FaceNotFound(NotFound):
    code = "face_not_found"
    title = "Face not found"


class ThumbnailNotFound(NotFound):
    code = "thumbnail_not_found"
    title = "Thumbnail not found"


class ThumbnailsDisabled(NotFound):
    code = "thumbnails_disabled"
    title = "Face thumbnails are turned off"


class Conflict(ServiceError):
    code, status, title = "conflict", 409, "Conflict"


class CollectionExists(Conflict):
    code = "collection_exists"
    title = "Collection already exists"


class SubjectExists(Conflict):
    code = "subject_exists"
    title = "Subject already exists"


class InvalidRequest(ServiceError):
    code, status, title = "invalid_request", 400, "Invalid request"


class ValidationFailed(ServiceError):
    """A value the schema allows but the service cannot keep (unsafe text, oversized metadata)."""

    code, status, title = "validation_error", 422, "Request validation failed"


class PayloadTooLarge(ServiceError):
    code, status, title = "payload_too_large", 413, "Payload too large"


class RequestTooManyPixels(ServiceError):
    """The images of one request add up to more pixels than the per-request budget."""

    code, status, title = "request_too_many_pixels", 413, "Request has too many pixels"


class UnsupportedMediaType(ServiceError):
    code, status, title = "unsupported_media_type", 415, "Unsupported media type"


class ImageError(ServiceError):
    """An image that was accepted as a file but cannot be used (undecodable, too many pixels...)."""

    code, status, title = "invalid_image", 422, "Invalid image"


class ImageTooManyPixels(ImageError):
    code = "image_too_many_pixels"
    title = "Image has too many pixels"


class FaceError(ServiceError):
    """The image is fine but its faces are not usable for the operation."""

    code, status, title = "face_error", 422, "Face not usable"


class NoFaceFound(FaceError):
    code = "no_face"
    title = "No face found"


class MultipleFaces(FaceError):
    code = "multiple_faces"
    title = "More than one face found"


class LowQualityFace(FaceError):
    code = "low_quality"
    title = "Face quality too low"


class NoImageEnrolled(ServiceError):
    """Enrollment where every image was rejected, for different reasons (see its per-image results)."""

    code, status, title = "no_image_enrolled", 422, "No image could be enrolled"


class Unauthorized(ServiceError):
    code, status, title = "unauthorized", 401, "Missing or invalid API key"


class Forbidden(ServiceError):
    code, status, title = "forbidden", 403, "API key not allowed for this collection"


class NotReady(ServiceError):
    code, status, title = "not_ready", 503, "Service not ready"


class CalibrationNotPossible(FaceError):
    """The collection's faces cannot support a calibration (fewer than two subjects)."""

    code = "calibration_not_possible"
    title = "Not enough enrolled faces to calibrate"


class CalibrationBusy(ServiceError):
    code, status, title = "calibration_busy", 429, "A calibration is already running"


class ServerBusy(ServiceError):
    """The large-image lane is full; the client should retry after ``retry_after`` seconds."""

    code, status, title = "server_busy", 503, "Server busy"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.extra.get("retry_after", 1))}


class InvalidModelCard(ServiceError):
    """The configured model card does not describe its ONNX graph (or names what this service lacks).

    Raised at start-up, before anything is served; never reaches a client."""

    code, status, title = "invalid_model_card", 500, "Invalid model card"


class VectorEngineUnavailable(ServiceError):
    """The vector engine (Milvus) did not answer; the store, the source of truth, is unaffected.

    Reads (identify) answer it as 503 with ``Retry-After``. Writes never do: the Gallery stores them
    and acknowledges them as not yet searchable (service/domain/gallery.py)."""

    code, status, title = "index_unavailable", 503, "Vector engine unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.extra.get("retry_after", 5))}


class IdempotencyKeyInvalid(InvalidRequest):
    """The ``Idempotency-Key`` header is not one key of 1 to 255 visible ASCII characters."""

    code = "idempotency_key_invalid"
    title = "Malformed Idempotency-Key header"


class IdempotencyKeyReused(ServiceError):
    """The key was used before for a different request (method, path, query, caller or body)."""

    code, status, title = "idempotency_key_reused", 422, "Idempotency key used for another request"


class IdempotencyKeyInFlight(Conflict):
    """A request with the same key is still being processed; retry after it has answered."""

    code = "idempotency_key_in_flight"
    title = "A request with this idempotency key is in progress"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.extra.get("retry_after", 1))}
