"""Property-based fuzz of the Rekognition-compatible API's JSON bodies: whatever a client sends, the
answer is AWS-shaped and never a 5xx.

Bodies are drawn from botocore's own input shapes (right members with right or wrong types, values
in and out of the model's limits, real and broken images) and from arbitrary JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.rekognition import HANDLERS
from service.api.rekognition.model import load_model
from service.main import create_app
from service.settings import Settings
from tests.helpers import no_face_photo

MODEL = load_model()
OPERATIONS = sorted(HANDLERS)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, lfw_root: Path) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("rekognition-fuzz")
    app = create_app(Settings(database_url=f"sqlite:///{tmp}/faces.db", index_dir=tmp / "index"))
    with TestClient(app) as test_client:
        photo = (lfw_root / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
        IMAGES.extend([base64.b64encode(photo).decode(), base64.b64encode(no_face_photo()).decode()])
        call(test_client, "CreateCollection", {"CollectionId": "fuzz"})
        call(test_client, "IndexFaces", {"CollectionId": "fuzz", "Image": {"Bytes": IMAGES[0]}})
        yield test_client


IMAGES: list[str] = []


def call(client: TestClient, operation: str, body: Any) -> Any:
    return client.post(
        "/",
        content=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        headers={
            "X-Amz-Target": f"RekognitionService.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )


def from_shape(name: str, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for the model's shape ``name``: mostly of the right type (in or out of its limits),
    sometimes any JSON at all."""
    shape = MODEL.shapes[name]
    kind = shape["type"]
    right: st.SearchStrategy[Any]
    if name == "CollectionId":
        right = st.sampled_from(["fuzz", "missing"]) | st.text(max_size=300)
    elif kind == "structure":
        members = {m: from_shape(spec["shape"], depth + 1) for m, spec in shape.get("members", {}).items()}
        right = st.fixed_dictionaries({}, optional=members) if depth < 4 else st.just({})
    elif kind == "list":
        right = st.lists(from_shape(shape["member"]["shape"], depth + 1), max_size=4)
    elif kind == "string":
        enum = shape.get("enum")
        right = (st.sampled_from(enum) | st.text(max_size=8)) if enum else st.text(max_size=300)
    elif kind in ("integer", "long"):
        right = st.integers(-10, 10_000)
    elif kind in ("float", "double"):
        right = st.floats(-10, 200) | st.sampled_from([float("nan"), float("inf")])
    elif kind == "boolean":
        right = st.booleans()
    elif kind == "blob":
        right = (
            st.sampled_from(IMAGES or ["AA=="])
            | st.text(max_size=40)
            | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
        )
    else:
        right = JSON_VALUES
    return st.one_of(right, right, right, JSON_VALUES)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Any]:
    operation = draw(st.sampled_from(OPERATIONS))
    shape = MODEL.input_shape(operation)
    body = draw(from_shape(shape) if shape else JSON_VALUES)
    return operation, body


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_no_body_yields_a_5xx(client: TestClient, request: tuple[str, Any]) -> None:
    operation, body = request
    response = call(client, operation, body)
    assert response.status_code < 500, (operation, body, response.text)
    if response.status_code >= 400:
        error = response.json()
        assert response.headers["x-amzn-errortype"] == error["__type"]
        assert isinstance(error["message"], str)
    else:
        assert isinstance(response.json(), dict)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200), operation=st.sampled_from(OPERATIONS))
def test_no_raw_bytes_yield_a_5xx(client: TestClient, body: bytes, operation: str) -> None:
    response = call(client, operation, body)
    assert response.status_code < 500, (operation, body, response.text)
    answer = response.json()
    assert isinstance(answer, dict)
    if response.status_code >= 400:  # an empty body is ``{}``: valid for ListCollections
        assert response.headers["x-amzn-errortype"] == answer["__type"]
