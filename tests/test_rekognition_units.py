"""The Rekognition API's pieces without a server: key ring ids, SigV4 verification against requests
signed by botocore itself, the service model check, and the domain-error map."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi.testclient import TestClient

from service.api.auth import KeyRing
from service.api.rekognition import HANDLERS, sigv4
from service.api.rekognition.errors import (
    AwsError,
    ImageTooLarge,
    InvalidImageFormat,
    InvalidParameter,
    InvalidSignature,
    MissingAuthenticationToken,
    ResourceAlreadyExists,
    ResourceNotFound,
    Throttling,
    from_service_error,
)
from service.api.rekognition.model import load_model
from service.errors import (
    CollectionExists,
    CollectionNotFound,
    ImageError,
    ImageTooManyPixels,
    NoFaceFound,
    ServerBusy,
    UnsupportedMediaType,
)
from service.main import create_app
from service.settings import Settings
from tests.helpers import giant_png

URL = "http://127.0.0.1:8000/"


def test_key_ring_ids() -> None:
    ring = KeyRing.parse(["ops=SECRET1", "cam=SECRET2:lobby", "legacy", "padded=="])
    assert ring.keys == {"SECRET1": None, "SECRET2": frozenset({"lobby"}), "legacy": None, "padded==": None}
    assert ring.access_keys == {"ops": "SECRET1", "cam": "SECRET2"}
    assert ring.secret_for("cam") == ("SECRET2", frozenset({"lobby"}))
    assert ring.secret_for("SECRET2") is None
    assert ring.secret_for("legacy") is None
    with pytest.raises(ValueError, match="access-key id 'ops' is listed twice"):
        KeyRing.parse(["ops=a", "ops=b"])
    with pytest.raises(ValueError, match="names no collection"):
        KeyRing.parse(["ops=a:"])
    with pytest.raises(ValueError, match="same key is listed twice"):
        KeyRing.parse(["ops=a", "cam=a"])


def signed(body: bytes, secret: str = "SECRET1", when: datetime | None = None) -> AWSRequest:
    request = AWSRequest(
        method="POST",
        url=URL,
        data=body,
        headers={
            "X-Amz-Target": "RekognitionService.ListCollections",
            "Content-Type": "application/x-amz-json-1.1",
            "Host": "127.0.0.1:8000",
        },
    )
    moment = (when or datetime.now(UTC)).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
        SigV4Auth(Credentials("ops", secret), "rekognition", "eu-west-1").add_auth(request)
    return request


def raw_headers(request: AWSRequest) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), str(v).encode()) for k, v in request.headers.items()]


def check(request: AWSRequest, body: bytes, secret: str = "SECRET1") -> None:
    headers = raw_headers(request)
    claim = sigv4.parse(headers)
    sigv4.verify(claim, secret, method="POST", raw_path="/", query_string="", headers=headers, body=body)


def test_sigv4_accepts_botocore_signatures_and_nothing_else() -> None:
    body = b'{"MaxResults": 3}'
    request = signed(body)
    check(request, body)
    with pytest.raises(InvalidSignature):
        check(request, b'{"MaxResults": 4}')  # the body changed
    with pytest.raises(InvalidSignature):
        check(request, body, secret="SECRET2")
    tampered = raw_headers(request)
    tampered = [
        (k, b"RekognitionService.DeleteCollection" if k == b"x-amz-target" else v) for k, v in tampered
    ]
    claim = sigv4.parse(tampered)
    with pytest.raises(InvalidSignature):
        sigv4.verify(
            claim, "SECRET1", method="POST", raw_path="/", query_string="", headers=tampered, body=body
        )
    missing = [(k, v) for k, v in raw_headers(request) if k != b"x-amz-target"]
    with pytest.raises(InvalidSignature, match="missing"):
        sigv4.verify(
            sigv4.parse(missing),
            "SECRET1",
            method="POST",
            raw_path="/",
            query_string="",
            headers=missing,
            body=body,
        )


def test_sigv4_clock_window_and_malformed_headers() -> None:
    fresh = signed(b"{}", when=datetime.now(UTC) - timedelta(minutes=14))
    check(fresh, b"{}")
    for minutes in (-16, 16):
        old = signed(b"{}", when=datetime.now(UTC) + timedelta(minutes=minutes))
        with pytest.raises(InvalidSignature, match="expired"):
            sigv4.parse(raw_headers(old))
    with pytest.raises(MissingAuthenticationToken):
        sigv4.parse([(b"host", b"x")])
    with pytest.raises(sigv4.IncompleteSignature):
        sigv4.parse([(b"authorization", b"Bearer token")])


def test_every_handled_operation_is_in_botocore_model() -> None:
    model = load_model()
    assert set(HANDLERS) <= set(model.operations)
    assert model.target_prefix == "RekognitionService"
    checked = model.validate("IndexFaces", {"CollectionId": "c", "Image": {"Bytes": "aGVsbG8="}, "Extra": 1})
    assert checked == {"CollectionId": "c", "Image": {"Bytes": b"hello"}}
    with pytest.raises(InvalidParameter, match="MaxFaces"):
        model.validate("IndexFaces", {"CollectionId": "c", "Image": {"Bytes": "aGVsbG8="}, "MaxFaces": 0})
    with pytest.raises(InvalidParameter, match="QualityFilter"):
        model.validate(
            "IndexFaces", {"CollectionId": "c", "Image": {"Bytes": "aGk="}, "QualityFilter": "BEST"}
        )
    with pytest.raises(ImageTooLarge):
        model.validate("DetectFaces", {"Image": {"Bytes": "A" * (8 * 1024 * 1024)}})


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        (CollectionNotFound("x"), ResourceNotFound, 400),
        (CollectionExists("x"), ResourceAlreadyExists, 400),
        (UnsupportedMediaType("x"), InvalidImageFormat, 400),
        (ImageError("x"), InvalidImageFormat, 400),
        (ImageTooManyPixels("x"), ImageTooLarge, 400),
        (NoFaceFound("x"), InvalidParameter, 400),
        (ServerBusy("x", retry_after=1), Throttling, 500),
    ],
)
def test_domain_errors_map_to_aws(error: Exception, expected: type[AwsError], status: int) -> None:
    assert isinstance(error, Exception)
    mapped = from_service_error(error)  # type: ignore[arg-type]
    assert type(mapped) is expected
    assert mapped.status == status


def test_a_full_large_image_lane_is_throttling(tmp_path: Path) -> None:
    """Our 503 server_busy is Rekognition's ThrottlingException (HTTP 500, which SDKs retry)."""
    giant = base64.b64encode(giant_png()).decode()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/faces.db",
        index_dir=tmp_path / "index",
        large_image_queue_pixels=6324 * 6324,  # room for one giant image at a time
    )
    headers = {"X-Amz-Target": "RekognitionService.DetectFaces", "Content-Type": "application/x-amz-json-1.1"}
    body = json.dumps({"Image": {"Bytes": giant}})
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.services.engine  # type: ignore[attr-defined]
        results: dict[str, Any] = {}
        first = threading.Thread(
            target=lambda: results.update(first=client.post("/", content=body, headers=headers))
        )
        first.start()
        deadline = time.monotonic() + 60
        while engine.lanes.queued_pixels == 0 and first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        busy = client.post("/", content=body, headers=headers)
        first.join()
    assert busy.status_code == 500, busy.text
    assert busy.headers["x-amzn-errortype"] == "ThrottlingException"
    assert busy.json()["__type"] == "ThrottlingException"
    assert results["first"].status_code == 200
    assert results["first"].json() == {"FaceDetails": []}  # flat grey: no face
