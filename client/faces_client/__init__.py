"""A typed, synchronous Python client for the faces server's HTTP API (``/v1``), on httpx.

    from faces_client import FacesClient

    with FacesClient("http://127.0.0.1:8000") as faces:
        faces.create_collection("staff")
        faces.enroll("staff", "alice", ["alice.jpg"], create_subject=True)
        print(faces.identify("staff", "who.jpg").faces[0].match)

Errors are typed by problem family (``NotFoundError``, ``ImageRejectedError``...; all ``ApiError``,
all ``FacesError``). Installable alone: ``pip install ./client`` brings httpx and tqdm only.
"""

from faces_client.client import DEFAULT_BASE_URL, FacesClient, FaceSelection, ImageInput, RetryPolicy
from faces_client.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FacesError,
    ImageRejectedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServerUnreachableError,
    ServiceUnavailableError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from faces_client.models import (
    Calibration,
    Candidate,
    Collection,
    Enrollment,
    EnrollResult,
    Face,
    FaceQuality,
    Health,
    Identification,
    IdentifiedFace,
    ImageProblem,
    OperatingPoint,
    Subject,
    SubjectPage,
    Threshold,
    Verification,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "Calibration",
    "Candidate",
    "Collection",
    "ConflictError",
    "EnrollResult",
    "Enrollment",
    "Face",
    "FaceQuality",
    "FaceSelection",
    "FacesClient",
    "FacesError",
    "Health",
    "Identification",
    "IdentifiedFace",
    "ImageInput",
    "ImageProblem",
    "ImageRejectedError",
    "NotFoundError",
    "OperatingPoint",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "ServerUnreachableError",
    "ServiceUnavailableError",
    "Subject",
    "SubjectPage",
    "Threshold",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "Verification",
]
