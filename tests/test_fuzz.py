"""Schema-driven fuzzing of every operation (schemathesis + hypothesis), on SQLite and PostgreSQL.

Auth is on and every request carries the key, so the generated requests reach the validators
(tests/test_hardening.py checks that a missing or wrong key is refused). Seeded and bounded
the same few thousand requests every time in about a minute. Every response must be a non-5xx
whose status, content type and body the OpenAPI document declares. Valid (positive) and invalid
(negative) requests are both generated; half of the image uploads are real LFW photos, and half of
the requests are aimed at a collection, subject and face that exist, so the store and the face
pipeline are reached, not just the validators.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.main import create_app
from tests.postgres import store_url
from tests.test_api import make_settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _without_prefix_items(node: Any) -> Any:
    """``prefixItems`` of one repeated type → ``items`` (same meaning for the boxes, four numbers):
    schemathesis 4.32 rewrites ``prefixItems`` into an ``items`` array and then rejects it."""
    if isinstance(node, list):
        return [_without_prefix_items(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _without_prefix_items(value) for key, value in node.items()}
    prefix = out.get("prefixItems")
    if isinstance(prefix, list) and prefix and all(item == prefix[0] for item in prefix):
        del out["prefixItems"]
        out["items"] = prefix[0]
    return out


_SPEC = create_app(make_settings(Path("/nonexistent"))).openapi()  # the document; no app is started
SCHEMA = schemathesis.openapi.from_dict(_without_prefix_items(_SPEC))
# (method, path, mode): invalid requests only where there is something to get wrong.
CASES = [
    (method.upper(), path, mode)
    for path, ops in _SPEC["paths"].items()
    for method, op in ops.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or op.get("parameters") or op.get("requestBody")
]
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}
IMAGE_FIELDS = ("images", "image", "image_a", "image_b")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
KEY = "fuzz-key"  # auth on: the key middleware is on every request's path
FACES = [("Colin_Powell", 1), ("Serena_Williams", 1), ("George_W_Bush", 2), ("Hugo_Chavez", 1)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, lfw_image: Any
) -> Iterator[tuple[TestClient, dict[str, str], list[bytes]]]:
    """The app on one store, with a collection 'fuzz' holding subject 'alice' and one face."""
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    settings_ = make_settings(tmp, database_url=store_url(request.param, request, tmp), api_keys=[KEY])
    photos = [lfw_image(person, n).read_bytes() for person, n in FACES]
    with TestClient(create_app(settings_)) as client:
        client.headers["X-API-Key"] = KEY
        assert client.post("/v1/collections", json={"name": "fuzz"}).status_code == 201
        enrolled = client.post(
            "/v1/collections/fuzz/subjects/alice/faces",
            params={"create_subject": "true"},
            files=[("images", ("a.jpg", photos[0], "image/jpeg"))],
        )
        assert enrolled.status_code == 201, enrolled.text
        known = {
            "collection": "fuzz",
            "subject_id": "alice",
            "face_id": enrolled.json()["results"][0]["face_id"],
        }
        yield client, known, photos


def _send(client: TestClient, case: Any) -> Any:
    """The generated request through the app's own test client (its lifespan, its event loop)."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "params": kwargs.get("params"),
        "headers": kwargs.get("headers"),
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, bytes | str):
        request["content"] = data
    elif data is not None:
        request["data"] = data
    if kwargs.get("files"):
        request["files"] = [(name, _file_part(part)) for name, part in kwargs["files"]]
    prepared = client.build_request(**request)
    prepared.read()  # multipart bodies stream; the checks read the request back
    return client.send(prepared)


def _file_part(part: Any) -> tuple[Any, ...]:
    """A requests-style multipart part as httpx takes it (bytes or str content only)."""
    filename, value, *rest = part if isinstance(part, tuple) else (None, part)
    if not isinstance(value, bytes | str):
        value = json.dumps(value)
    return (filename, value, *rest)


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_operation_never_fails_and_answers_as_documented(
    target: tuple[TestClient, dict[str, str], list[bytes]], method: str, path: str, mode: GenerationMode
) -> None:
    client, known, photos = target
    operation = SCHEMA[path][method]

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        if method != "DELETE" and data.draw(st.booleans(), label="aim at existing rows"):
            for name, value in known.items():
                if name in (case.path_parameters or {}):
                    case.path_parameters[name] = value
        if isinstance(case.body, dict) and data.draw(st.booleans(), label="real photos"):
            for field in IMAGE_FIELDS:
                if isinstance(case.body.get(field), list):
                    case.body[field] = [data.draw(st.sampled_from(photos)) for _ in case.body[field]]
                elif field in case.body:
                    case.body[field] = data.draw(st.sampled_from(photos))
            case.body.pop("source_hash", None)  # random hashes would mostly miscount the photos
        case.headers = {**(case.headers or {}), "X-API-Key": KEY}
        response = _send(client, case)
        case.validate_response(response, checks=CHECKS)

    run()
