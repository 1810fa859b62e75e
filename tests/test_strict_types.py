"""JSON request bodies take JSON types as the OpenAPI document declares them: no coercion.

Before, ``{"identify_threshold": true}`` was stored as 1.0, ``false`` as 0.0 (a collection that then
never matches anyone) and ``"0.5"`` as 0.5, on create and on PATCH.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.test_api import assert_problem, make_settings

# A wrong JSON type for each kind of field a request body has.
WRONG_NUMBERS = [True, False, "0.5", "1", "", [0.5], {"value": 0.5}]
WRONG_STRINGS = [5, 0.5, True, False, ["a"], {"a": 1}]
WRONG_OBJECTS = ["{}", 5, True, ["a"]]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("strict")
    with TestClient(create_app(make_settings(tmp))) as test_client:
        created = test_client.post("/v1/collections", json={"name": "kept", "identify_threshold": 0.9})
        assert created.status_code == 201, created.text
        subject = test_client.post(
            "/v1/collections/kept/subjects", json={"subject_id": "s", "name": "S", "metadata": {"a": 1}}
        )
        assert subject.status_code == 201, subject.text
        yield test_client


def _refused(response: Any, field: str) -> None:
    body = assert_problem(response, 422, "validation_error")
    assert any(error["loc"][-1] == field or field in error["loc"] for error in body["errors"]), body


@pytest.mark.parametrize("value", WRONG_NUMBERS, ids=json.dumps)
def test_number_fields_refuse_booleans_and_strings(client: TestClient, value: Any) -> None:
    created = client.post("/v1/collections", json={"name": "wrong", "identify_threshold": value})
    _refused(created, "identify_threshold")
    assert_problem(client.get("/v1/collections/wrong"), 404, "collection_not_found")
    patched = client.patch("/v1/collections/kept", json={"identify_threshold": value})
    _refused(patched, "identify_threshold")
    threshold = client.get("/v1/collections/kept").json()["identify_threshold"]
    assert (threshold["value"], threshold["source"]) == (0.9, "collection")


@pytest.mark.parametrize("value", [0, 2, 0.5, None])
def test_number_fields_take_json_numbers_and_null(client: TestClient, value: float | None) -> None:
    patched = client.patch("/v1/collections/kept", json={"identify_threshold": value})
    assert patched.status_code == 200, patched.text
    threshold = patched.json()["identify_threshold"]
    if value is None:  # back to the service's default, whichever it is
        assert threshold["source"] != "collection"
    else:
        assert (threshold["source"], threshold["value"]) == ("collection", value)
    assert client.patch("/v1/collections/kept", json={"identify_threshold": 0.9}).status_code == 200


@pytest.mark.parametrize("value", WRONG_STRINGS, ids=json.dumps)
def test_string_fields_refuse_numbers_booleans_and_containers(client: TestClient, value: Any) -> None:
    _refused(client.post("/v1/collections", json={"name": value}), "name")
    _refused(client.post("/v1/collections", json={"name": "wrong", "description": value}), "description")
    _refused(client.patch("/v1/collections/kept", json={"description": value}), "description")
    _refused(client.post("/v1/collections/kept/subjects", json={"subject_id": value}), "subject_id")
    _refused(client.post("/v1/collections/kept/subjects", json={"subject_id": "w", "name": value}), "name")
    _refused(client.patch("/v1/collections/kept/subjects/s", json={"name": value}), "name")
    assert_problem(client.get("/v1/collections/kept/subjects/w"), 404, "subject_not_found")
    assert client.get("/v1/collections/kept/subjects/s").json()["name"] == "S"


@pytest.mark.parametrize("value", WRONG_OBJECTS, ids=json.dumps)
def test_object_fields_refuse_other_types(client: TestClient, value: Any) -> None:
    body = {"subject_id": "w", "metadata": value}
    _refused(client.post("/v1/collections/kept/subjects", json=body), "metadata")
    _refused(client.patch("/v1/collections/kept/subjects/s", json={"metadata": value}), "metadata")
    assert client.get("/v1/collections/kept/subjects/s").json()["metadata"] == {"a": 1}


def test_openapi_declares_the_types_that_are_enforced(tmp_path: Path) -> None:
    schemas = create_app(make_settings(tmp_path)).openapi()["components"]["schemas"]
    threshold = schemas["CollectionPatch"]["properties"]["identify_threshold"]
    assert {"type": "number", "minimum": 0.0, "maximum": 4.0}.items() <= threshold["anyOf"][0].items()
    assert schemas["SubjectCreate"]["properties"]["metadata"]["type"] == "object"
