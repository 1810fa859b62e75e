"""``FacesClient``: the whole ``/v1`` API of a faces server, synchronous, typed, on httpx.

Retries only where a repeat cannot do harm: GET, DELETE, and any request that carries an
``Idempotency-Key`` header (the server answers a repeat with the first answer). A refused
connection proves nothing was sent, so it is retried too, except on the very first contact: a server
that never answered is not running, and waiting for it only hides that. 429 and 503 are retried
after the server's ``Retry-After``. One client may be shared by threads (httpx's pool is).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from faces_client.errors import (
    FacesError,
    NotFoundError,
    ServerUnreachableError,
    TransportError,
    UnexpectedResponseError,
    api_error,
    retry_after_seconds,
)
from faces_client.models import (
    Calibration,
    Collection,
    Enrollment,
    EnrollResult,
    Face,
    Health,
    Identification,
    Subject,
    SubjectPage,
    Verification,
)

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
FaceSelection = Literal["strict", "largest"]
ImageInput = bytes | str | os.PathLike[str] | tuple[str, bytes]
"""A file path, raw bytes (JPEG/PNG/WebP), or ``(filename, bytes)``."""

# Answers that mean "not now": the request may be repeated if repeating it is safe.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# After these the request may have been carried out although no answer came back.
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Transport failures where the request never left: nothing can have happened on the server.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Transport failures after sending: the server may have carried the request out.
LOST_REPLY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` repeats at most, full-jitter exponential backoff capped at ``max_backoff_s``."""

    retries: int = 3
    backoff_base_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        return backoff_delay(attempt, self.backoff_base_s, retry_after_s, cap_s=self.max_backoff_s)


def backoff_delay(
    attempt: int, base_s: float, retry_after_s: float | None = None, *, cap_s: float = 30.0
) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is honoured as a lower bound."""
    delay = random.uniform(0.0, min(cap_s, base_s * (2**attempt)))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap_s))
    return delay


def _segment(value: str) -> str:
    return quote(value, safe="")


def _content_type(filename: str, data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    suffix = Path(filename).suffix.lower()
    return {".png": "image/png", ".webp": "image/webp"}.get(suffix, "image/jpeg")


def image_part(image: ImageInput, default_name: str = "image.jpg") -> tuple[str, bytes, str]:
    """``(filename, bytes, content type)`` for a multipart upload."""
    if isinstance(image, tuple):
        filename, data = image
    elif isinstance(image, bytes):
        filename, data = default_name, image
    else:
        path = Path(image)
        filename, data = path.name, path.read_bytes()
    return filename, data, _content_type(filename, data)


class FacesClient:
    """A faces server's ``/v1`` API. Use as a context manager, or call ``close()``.

    ``transport`` replaces httpx's network transport (tests, or a custom proxy setup).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._reached = False
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"X-API-Key": api_key} if api_key else {},
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    def __enter__(self) -> FacesClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        idempotency_key: str | None = None,
        accept: Sequence[int] = (),
        recover: Callable[[int], T | None] | None = None,
        parse: Callable[[httpx.Response, int], T],
        **kwargs: Any,
    ) -> T:
        """Send until answered with a success (or a status in ``accept``); ``parse`` the answer.

        ``recover(attempts)`` runs before a retry that follows a lost reply (the request may have been
        carried out): a value from it ends the retries, so the repeat never happens.
        """
        headers = dict(kwargs.pop("headers", None) or {})
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        repeatable = method in SAFE_METHODS or idempotency_key is not None
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except NOT_SENT_ERRORS as exc:
                if not self._reached:
                    raise ServerUnreachableError(self.base_url, _describe(exc), attempts=attempt) from exc
                failure: FacesError = TransportError(
                    f"{type(exc).__name__}: {_describe(exc)}", attempts=attempt
                )
                ambiguous = False
                may_retry = True
            except LOST_REPLY_ERRORS as exc:
                failure = TransportError(f"{type(exc).__name__}: {_describe(exc)}", attempts=attempt)
                ambiguous = True
                may_retry = repeatable
            except httpx.TransportError as exc:  # a bad URL, proxy or protocol: repeating cannot help
                raise TransportError(f"{type(exc).__name__}: {_describe(exc)}", attempts=attempt) from exc
            else:
                self._reached = True
                if response.is_success or response.status_code in accept:
                    try:
                        return parse(response, attempt)
                    except (KeyError, TypeError, ValueError, AttributeError) as exc:
                        raise UnexpectedResponseError(
                            f"{method} {path}: {response.status_code} answer not understood "
                            f"({type(exc).__name__}: {exc})"
                        ) from exc
                failure = api_error(response, attempts=attempt)
                retry_after = retry_after_seconds(response)
                ambiguous = response.status_code in AMBIGUOUS_STATUSES
                may_retry = repeatable and response.status_code in RETRYABLE_STATUSES
            if not may_retry or attempt > self.retry.retries:
                raise failure
            time.sleep(self.retry.delay(attempt - 1, retry_after))
            if ambiguous and recover is not None:
                try:
                    settled = recover(attempt)
                except FacesError:
                    settled = None
                if settled is not None:
                    return settled

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, parse=lambda r, _n: r.json(), **kwargs)

    def _none(self, method: str, path: str, **kwargs: Any) -> None:
        self._call(method, path, parse=lambda _r, _n: None, **kwargs)

    @staticmethod
    def _collection_path(collection: str) -> str:
        return f"/v1/collections/{_segment(collection)}"

    def _subject_path(self, collection: str, subject_id: str) -> str:
        return f"{self._collection_path(collection)}/subjects/{_segment(subject_id)}"

    # -- health -----------------------------------------------------------------------------------

    def healthz(self) -> Health:
        """Liveness: the process answers."""
        return Health.from_json(self._json("GET", "/healthz"))

    def readyz(self) -> Health:
        """Readiness (models loaded, index in sync); ``.ready`` is False while starting, never raises 503."""
        return self._call("GET", "/readyz", accept=(503,), parse=lambda r, _n: Health.from_json(r.json()))

    # -- collections ------------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        description: str = "",
        identify_threshold: float | None = None,
        idempotency_key: str | None = None,
    ) -> Collection:
        body: dict[str, Any] = {"name": name, "description": description}
        if identify_threshold is not None:
            body["identify_threshold"] = identify_threshold
        data = self._json("POST", "/v1/collections", json=body, idempotency_key=idempotency_key)
        return Collection.from_json(data)

    def list_collections(self) -> list[Collection]:
        data = self._json("GET", "/v1/collections")
        return [Collection.from_json(c) for c in data.get("collections", ())]

    def get_collection(self, name: str) -> Collection:
        return Collection.from_json(self._json("GET", self._collection_path(name)))

    def update_collection(
        self,
        name: str,
        *,
        description: str | None = None,
        identify_threshold: float | None = None,
        reset_identify_threshold: bool = False,
    ) -> Collection:
        """PATCH: only the fields given change.

        ``reset_identify_threshold`` returns the collection to the service's default threshold.
        """
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if identify_threshold is not None and reset_identify_threshold:
            raise ValueError("give identify_threshold or reset_identify_threshold, not both")
        if identify_threshold is not None:
            body["identify_threshold"] = identify_threshold
        if reset_identify_threshold:
            body["identify_threshold"] = None
        return Collection.from_json(self._json("PATCH", self._collection_path(name), json=body))

    def delete_collection(self, name: str) -> None:
        """Deletes the collection with all its subjects and faces."""
        self._none("DELETE", self._collection_path(name))

    def calibrate(self, name: str, *, target_fpir: float = 0.01, apply: bool = False) -> Calibration:
        """Estimate the identify threshold giving ``target_fpir`` from the collection's own faces;
        ``apply`` stores it as the collection's threshold."""
        params = {"target_fpir": target_fpir, "apply": "true" if apply else "false"}
        data = self._json("POST", f"{self._collection_path(name)}/calibrate", params=params)
        return Calibration.from_json(data)

    # -- subjects ---------------------------------------------------------------------------------

    def create_subject(
        self,
        collection: str,
        subject_id: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Subject:
        body: dict[str, Any] = {"subject_id": subject_id, "metadata": dict(metadata or {})}
        if name is not None:
            body["name"] = name
        path = f"{self._collection_path(collection)}/subjects"
        return Subject.from_json(self._json("POST", path, json=body, idempotency_key=idempotency_key))

    def get_subject(self, collection: str, subject_id: str) -> Subject:
        return Subject.from_json(self._json("GET", self._subject_path(collection, subject_id)))

    def update_subject(
        self,
        collection: str,
        subject_id: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Subject:
        """PATCH: only the fields given change (``metadata`` is replaced as a whole)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if metadata is not None:
            body["metadata"] = dict(metadata)
        path = self._subject_path(collection, subject_id)
        return Subject.from_json(self._json("PATCH", path, json=body))

    def delete_subject(self, collection: str, subject_id: str) -> None:
        """Deletes the subject and all its faces."""
        self._none("DELETE", self._subject_path(collection, subject_id))

    def list_subjects(
        self, collection: str, *, offset: int = 0, limit: int = 100, id_prefix: str | None = None
    ) -> SubjectPage:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if id_prefix is not None:
            params["id_prefix"] = id_prefix
        data = self._json("GET", f"{self._collection_path(collection)}/subjects", params=params)
        return SubjectPage.from_json(data)

    def iter_subjects(
        self, collection: str, *, id_prefix: str | None = None, page_size: int = 100
    ) -> Iterator[Subject]:
        """Every subject of the collection, fetching ``page_size`` at a time as the loop goes."""
        offset = 0
        while True:
            page = self.list_subjects(collection, offset=offset, limit=page_size, id_prefix=id_prefix)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    # -- faces ------------------------------------------------------------------------------------

    def enroll(
        self,
        collection: str,
        subject_id: str,
        images: Sequence[ImageInput],
        *,
        source_hashes: Sequence[str] | None = None,
        create_subject: bool = False,
        face_selection: FaceSelection = "strict",
        idempotency_key: str | None = None,
    ) -> Enrollment:
        """Enroll one or more images of one subject; one ``EnrollResult`` per image.

        When no image could be enrolled the server refuses the request: ``ImageRejectedError``
        (``PayloadTooLargeError`` for oversized files), with the per-image ``results``.
        ``source_hashes`` (the sha256 of each file) are stored with the faces: when an answer is
        lost, the retry first looks for them on the subject, so a face is never enrolled twice
        even by a server that ignores ``idempotency_key``. Without a key, a POST is not repeated.
        """
        parts = [image_part(image, f"image-{i}.jpg") for i, image in enumerate(images)]
        hashes = [h.lower() for h in source_hashes or ()]
        if hashes and len(hashes) != len(parts):
            raise ValueError("give one source hash per image, or none")
        path = f"{self._subject_path(collection, subject_id)}/faces"
        params = {"create_subject": "true" if create_subject else "false", "face_selection": face_selection}

        def already_enrolled(attempts: int) -> Enrollment | None:
            try:
                faces = {f.source_hash: f for f in self.list_faces(collection, subject_id)}
            except NotFoundError:
                return None
            if not hashes or not all(h in faces for h in hashes):
                return None
            results = tuple(
                EnrollResult(
                    filename=name,
                    status="enrolled",
                    face_id=faces[h].face_id,
                    box=faces[h].box,
                    source_hash=h,
                )
                for (name, _data, _type), h in zip(parts, hashes, strict=True)
            )
            return Enrollment(collection, subject_id, len(results), 0, results, attempts=attempts)

        return self._call(
            "POST",
            path,
            params=params,
            data={"source_hash": hashes} if hashes else None,
            files=[("images", part) for part in parts],
            idempotency_key=idempotency_key,
            recover=already_enrolled if hashes else None,
            parse=lambda r, attempts: Enrollment.from_json(r.json(), attempts=attempts),
        )

    def list_faces(self, collection: str, subject_id: str) -> list[Face]:
        data = self._json("GET", f"{self._subject_path(collection, subject_id)}/faces")
        return [Face.from_json(f) for f in data.get("faces", ())]

    def get_face(self, collection: str, face_id: str) -> Face:
        return Face.from_json(
            self._json("GET", f"{self._collection_path(collection)}/faces/{_segment(face_id)}")
        )

    def delete_face(self, collection: str, face_id: str) -> None:
        self._none("DELETE", f"{self._collection_path(collection)}/faces/{_segment(face_id)}")

    def thumbnail(self, collection: str, face_id: str) -> bytes:
        """The face's aligned crop kept at enrollment, a small JPEG."""
        path = f"{self._collection_path(collection)}/faces/{_segment(face_id)}/thumbnail"
        return self._call("GET", path, parse=lambda r, _n: r.content)

    # -- search -----------------------------------------------------------------------------------

    def identify(
        self,
        collection: str,
        image: ImageInput,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        max_faces: int | None = None,
    ) -> Identification:
        """1:N: each face of the photo against the collection (``threshold``: max d² for a match)."""
        params = {
            k: v
            for k, v in (("top_k", top_k), ("threshold", threshold), ("max_faces", max_faces))
            if v is not None
        }
        data = self._json(
            "POST",
            f"{self._collection_path(collection)}/identify",
            params=params,
            files=[("image", image_part(image))],
        )
        return Identification.from_json(data)

    def verify(
        self, image_a: ImageInput, image_b: ImageInput, *, threshold: float | None = None
    ) -> Verification:
        """1:1: are the faces of two photos the same person?"""
        params = {"threshold": threshold} if threshold is not None else {}
        files = [("image_a", image_part(image_a, "a.jpg")), ("image_b", image_part(image_b, "b.jpg"))]
        return Verification.from_json(self._json("POST", "/v1/verify", params=params, files=files))

    def verify_subject(
        self, collection: str, subject_id: str, image: ImageInput, *, threshold: float | None = None
    ) -> Verification:
        """1:1 against an enrolled subject: the photo's face against the subject's closest face."""
        params = {"threshold": threshold} if threshold is not None else {}
        data = self._json(
            "POST",
            f"{self._subject_path(collection, subject_id)}/verify",
            params=params,
            files=[("image", image_part(image))],
        )
        return Verification.from_json(data)


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
