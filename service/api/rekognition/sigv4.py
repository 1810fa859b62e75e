"""AWS Signature Version 4 on incoming requests, computed by botocore's own signer.

Two steps, because the signature covers the payload's hash: ``parse`` reads the ``Authorization``
and ``X-Amz-Date`` headers before a byte of the body is received (unknown access-key id, a
malformed header or a signature older than 15 minutes are refused there), and ``verify`` runs once
the size-capped body is in: botocore's ``SigV4Auth`` rebuilds the canonical request from the
headers the client signed, with the client's timestamp, and the result is compared in constant time.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from service.api.rekognition.errors import (
    AwsError,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

MAX_CLOCK_SKEW = timedelta(minutes=15)
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)/aws4_request\s*,\s*"
    r"SignedHeaders=(?P<headers>[a-z0-9\-;]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})\s*$"
)


class IncompleteSignature(AwsError):
    code, status = "IncompleteSignatureException", 400


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the ``Authorization`` header claims; ``verify`` checks it against the body."""

    access_key_id: str
    timestamp: str  # X-Amz-Date, e.g. 20261203T080000Z
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse(headers: list[tuple[bytes, bytes]], *, now: datetime | None = None) -> SignedRequest:
    """The request's SigV4 claim, before the body: MissingAuthenticationToken without one,
    IncompleteSignature when malformed, InvalidSignature when expired (or dated in the future)."""
    authorization = _header(headers, b"authorization")
    if authorization is None:
        raise MissingAuthenticationToken("Missing Authentication Token: sign the request with SigV4.")
    found = _AUTHORIZATION.match(authorization)
    if found is None:
        raise IncompleteSignature("The Authorization header is not a well-formed AWS4-HMAC-SHA256 value.")
    amz_date = _header(headers, b"x-amz-date")
    if amz_date is None:
        raise IncompleteSignature("Signed requests need an X-Amz-Date header.")
    try:
        when = datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise IncompleteSignature("X-Amz-Date is not of the form YYYYMMDDTHHMMSSZ.") from exc
    if amz_date[:8] != found["date"]:
        raise InvalidSignature("The credential scope's date does not match X-Amz-Date.")
    current = now or datetime.now(UTC)
    if abs(current - when) > MAX_CLOCK_SKEW:
        raise InvalidSignature(
            f"Signature expired: {amz_date} is more than 15 minutes from the server time "
            f"{current.strftime(AMZ_DATE_FORMAT)}."
        )
    signed = tuple(found["headers"].split(";"))
    if "host" not in signed:
        raise IncompleteSignature("SignedHeaders must include host.")
    return SignedRequest(
        access_key_id=found["akid"],
        timestamp=amz_date,
        region=found["region"],
        service=found["service"],
        signed_headers=signed,
        signature=found["signature"],
    )


class _IncomingSigV4(SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
    """botocore's signer, over exactly the headers the client signed (not every header present)."""

    def __init__(self, credentials: Credentials, service: str, region: str, signed: HTTPHeaders) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        del request
        return self._signed


def verify(
    claim: SignedRequest,
    secret: str,
    *,
    method: str,
    raw_path: str,
    query_string: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    """InvalidSignature unless ``claim.signature`` is SigV4 of this request under ``secret``."""
    signed = HTTPHeaders()
    for name in claim.signed_headers:
        values = [v.decode("latin-1") for k, v in headers if k.decode("latin-1").lower() == name]
        if not values:
            raise InvalidSignature(f"Signed header {name!r} is missing from the request.")
        for value in values:
            signed[name] = value
    host = signed["host"]
    url = f"http://{host}{raw_path}" + (f"?{query_string}" if query_string else "")
    request = AWSRequest(method=method, url=url, headers={}, data=body)
    request.context["timestamp"] = claim.timestamp
    signer = _IncomingSigV4(Credentials(claim.access_key_id, secret), claim.service, claim.region, signed)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(str(expected).encode(), claim.signature.encode()):
        raise InvalidSignature(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )


def unknown_access_key() -> UnrecognizedClient:
    return UnrecognizedClient("The security token included in the request is invalid.")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
