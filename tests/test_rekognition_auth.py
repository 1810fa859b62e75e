"""SigV4 on the Rekognition-compatible API: access-key ids on the key ring, scopes shared with /v1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.rekognition_server import FacesServer, rekognition

pytestmark = pytest.mark.slow

KEYS = "ops=SECRET1;cam=SECRET2:lobby;legacy-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FacesServer]:
    srv = FacesServer(tmp_path_factory.mktemp("rekognition-auth"), {"FACES_API_KEYS": KEYS})
    srv.start()
    yield srv
    srv.stop()


def code_of(call: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return f"{response['Error']['Code']}/{response['ResponseMetadata']['HTTPStatusCode']}"


def test_keys_ids_and_scopes(server: FacesServer, lfw_image: Any) -> None:
    ops = rekognition(server.url, "ops", "SECRET1")
    cam = rekognition(server.url, "cam", "SECRET2")
    ops.create_collection(CollectionId="lobby")
    ops.create_collection(CollectionId="vault")
    assert set(ops.list_collections()["CollectionIds"]) == {"lobby", "vault"}
    # A scoped key sees and uses only its collections, on both APIs.
    assert cam.list_collections()["CollectionIds"] == ["lobby"]
    photo = Path(lfw_image("Colin_Powell", 1)).read_bytes()
    assert cam.index_faces(CollectionId="lobby", Image={"Bytes": photo})["FaceRecords"]
    assert code_of(lambda: cam.index_faces(CollectionId="vault", Image={"Bytes": photo})) == (
        "AccessDeniedException/400"
    )
    assert code_of(lambda: cam.create_collection(CollectionId="other")) == "AccessDeniedException/400"
    v1 = f"{server.url}/v1/collections"
    assert httpx.get(f"{v1}/lobby", headers={"X-API-Key": "SECRET2"}).status_code == 200
    assert httpx.get(f"{v1}/vault", headers={"X-API-Key": "SECRET2"}).status_code == 403
    assert httpx.get(f"{v1}/vault", headers={"X-API-Key": "legacy-key"}).status_code == 200
    # A key without an id works on /v1 only; neither its text nor a secret is an access-key id.
    assert code_of(lambda: rekognition(server.url, "legacy-key", "legacy-key").list_collections()) == (
        "UnrecognizedClientException/403"
    )
    assert code_of(lambda: rekognition(server.url, "SECRET1", "SECRET1").list_collections()) == (
        "UnrecognizedClientException/403"
    )
    assert code_of(lambda: rekognition(server.url, "ops", "SECRET2").list_collections()) == (
        "InvalidSignatureException/403"
    )


def test_tampered_expired_and_unsigned_requests(server: FacesServer) -> None:
    ops = rekognition(server.url, "ops", "SECRET1")

    def tamper(request: Any, **_: Any) -> None:  # after signing, before sending
        request.body = request.body.replace(b"lobby", b"vault")

    ops.meta.events.register("before-send.rekognition.DescribeCollection", tamper)
    assert code_of(lambda: ops.describe_collection(CollectionId="lobby")) == "InvalidSignatureException/403"

    stale = datetime.now(UTC) - timedelta(minutes=16)
    with mock.patch("botocore.auth.get_current_datetime", return_value=stale.replace(tzinfo=None)):
        with pytest.raises(ClientError) as caught:
            rekognition(server.url, "ops", "SECRET1").list_collections()
        message = str(caught.value.response["Error"]["Message"])
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "expired" in message
    recent = datetime.now(UTC) - timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=recent.replace(tzinfo=None)):
        assert "CollectionIds" in rekognition(server.url, "ops", "SECRET1").list_collections()

    unsigned = httpx.post(
        f"{server.url}/",
        content=b"{}",
        headers={
            "X-Amz-Target": "RekognitionService.ListCollections",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    assert unsigned.status_code == 403
    assert unsigned.json()["__type"] == "MissingAuthenticationTokenException"
    # The key is checked before the body is read: an unknown id with an oversized body is refused as
    # unknown, not as too large.
    huge = httpx.post(
        f"{server.url}/",
        content=b"x" * (20 * 1024 * 1024),
        headers={
            "X-Amz-Target": "RekognitionService.ListCollections",
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "Authorization": "AWS4-HMAC-SHA256 Credential=nobody/"
            + datetime.now(UTC).strftime("%Y%m%d")
            + "/us-east-1/rekognition/aws4_request, SignedHeaders=host;x-amz-date, Signature="
            + "0" * 64,
        },
        timeout=60,
    )
    assert huge.json()["__type"] == "UnrecognizedClientException"
