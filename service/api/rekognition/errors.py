"""Errors of the Rekognition-compatible API, in AWS's JSON shape, and the one map from domain errors.

AWS JSON 1.1 errors are ``{"__type": "<Code>", "message": "..."}`` with the code repeated in the
``x-amzn-ErrorType`` header; boto3 and the JS SDK read either. Statuses are the ones AWS documents for
Rekognition: 400 for every client error, 500 for InternalServerError and ThrottlingException (which
SDKs retry by themselves), 403 for the signature errors of AWS's common errors.
"""

from __future__ import annotations

import logging

from service.errors import (
    CollectionExists,
    CollectionNotFound,
    FaceNotFound,
    ImageError,
    ImageTooManyPixels,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RequestTooManyPixels,
    ServerBusy,
    ServiceError,
    SubjectExists,
    UnsupportedMediaType,
    VectorEngineUnavailable,
)

logger = logging.getLogger(__name__)


class AwsError(Exception):
    """An error answered as AWS would: ``code`` is the ``__type``, ``status`` the HTTP status."""

    code: str = "InternalServerError"
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(AwsError):
    code, status = "InvalidParameterException", 400


class SerializationError(AwsError):
    code, status = "SerializationException", 400


class ImageTooLarge(AwsError):
    code, status = "ImageTooLargeException", 400


class InvalidImageFormat(AwsError):
    code, status = "InvalidImageFormatException", 400


class ResourceNotFound(AwsError):
    code, status = "ResourceNotFoundException", 400


class ResourceAlreadyExists(AwsError):
    code, status = "ResourceAlreadyExistsException", 400


class ConflictError(AwsError):
    code, status = "ConflictException", 400


class InvalidPaginationToken(AwsError):
    code, status = "InvalidPaginationTokenException", 400


class AccessDenied(AwsError):
    code, status = "AccessDeniedException", 400


class UnrecognizedClient(AwsError):
    code, status = "UnrecognizedClientException", 403


class InvalidSignature(AwsError):
    code, status = "InvalidSignatureException", 403


class MissingAuthenticationToken(AwsError):
    code, status = "MissingAuthenticationTokenException", 403


class UnknownOperation(AwsError):
    code, status = "UnknownOperationException", 400


class Throttling(AwsError):
    code, status = "ThrottlingException", 500


class InternalServerError(AwsError):
    code, status = "InternalServerError", 500


def from_service_error(exc: ServiceError) -> AwsError:
    """Our domain errors as the AWS errors a Rekognition client expects; never a 5xx for bad input."""
    detail = exc.detail
    if isinstance(exc, CollectionExists | SubjectExists):
        return ResourceAlreadyExists(detail)
    if isinstance(exc, CollectionNotFound | FaceNotFound | NotFound):
        return ResourceNotFound(detail)
    if isinstance(exc, PayloadTooLarge | RequestTooManyPixels | ImageTooManyPixels):
        return ImageTooLarge(detail)
    if isinstance(exc, UnsupportedMediaType | ImageError):
        return InvalidImageFormat(detail)
    if isinstance(exc, ServerBusy | NotReady | VectorEngineUnavailable):
        return Throttling(detail)
    if exc.status < 500:
        return InvalidParameter(detail)
    logger.error("%s: %s", exc.code, exc.detail)
    return InternalServerError("The server failed to process the request.")
