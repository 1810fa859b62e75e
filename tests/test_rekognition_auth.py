"""SigV4 on the Rekognition-compatible API: access-key ids on the key ring, scopes shared with /v1;
the AWS CLI and the JavaScript SDK v3 signing against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from botocore.exceptions import ClientError

from service.testing.server import ServerProcess
from tests.conftest import REPO_ROOT
from tests.rekognition_server import rekognition

pytestmark = pytest.mark.slow

KEYS = "ops=SECRET1;cam=SECRET2:lobby;legacy-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("rekognition-auth"), env={"FACES_API_KEYS": KEYS})
    srv.start()
    yield srv
    srv.stop()


def code_of(call: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return f"{response['Error']['Code']}/{response['ResponseMetadata']['HTTPStatusCode']}"


def test_keys_ids_and_scopes(server: ServerProcess, lfw_image: Any) -> None:
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


def test_tampered_expired_and_unsigned_requests(server: ServerProcess) -> None:
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


def aws_cli(server: ServerProcess, tmp: Path, *args: str) -> Any:
    """``aws rekognition ... --endpoint-url`` (PyPI awscli), signing with the ``ops`` key."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "ops",
        "AWS_SECRET_ACCESS_KEY": "SECRET1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "awscli",
            "rekognition",
            *args,
            "--endpoint-url",
            server.url,
            "--output",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def test_aws_cli(server: ServerProcess, lfw_image: Any, tmp_path: Path) -> None:
    person = "Tony_Blair"
    aws_cli(server, tmp_path, "create-collection", "--collection-id", "cli")
    indexed = aws_cli(
        server,
        tmp_path,
        "index-faces",
        "--collection-id",
        "cli",
        "--image-bytes",
        f"fileb://{lfw_image(person, 1)}",
        "--external-image-id",
        f"{person}_1",
        "--max-faces",
        "1",
    )
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    found = aws_cli(
        server,
        tmp_path,
        "search-faces-by-image",
        "--collection-id",
        "cli",
        "--image-bytes",
        f"fileb://{lfw_image(person, 2)}",
    )
    assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [face_id]
    listed = aws_cli(server, tmp_path, "list-faces", "--collection-id", "cli", "--page-size", "1")
    assert [f["FaceId"] for f in listed["Faces"]] == [face_id]
    assert "cli" in aws_cli(server, tmp_path, "list-collections")["CollectionIds"]
    aws_cli(server, tmp_path, "delete-collection", "--collection-id", "cli")


JS_DIR = REPO_ROOT / "tests" / "js"


def test_javascript_sdk_v3(server: ServerProcess, lfw_image: Any) -> None:
    """index -> search -> delete with @aws-sdk/client-rekognition (installed by .ci/run: npm ci)."""
    node = shutil.which("node")
    installed = (JS_DIR / "node_modules" / "@aws-sdk" / "client-rekognition").is_dir()
    if node is None or not installed:
        reason = "node is not installed" if node is None else "run `npm ci` in tests/js"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the JavaScript SDK test")
        pytest.skip(reason)
    person = "Gerhard_Schroeder"
    done = subprocess.run(
        [
            node,
            str(JS_DIR / "index_search_delete.mjs"),
            server.url,
            "ops",
            "SECRET1",
            "js-sdk",
            str(lfw_image(person, 1)),
            str(lfw_image(person, 2)),
        ],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["externalImageId"] == "js-indexed"
    assert [m["faceId"] for m in result["matches"]] == [result["faceId"]]
    assert 80.0 <= result["matches"][0]["similarity"] <= 100.0
    assert result["deleted"] == [result["faceId"]]
    assert result["remaining"] == 0
