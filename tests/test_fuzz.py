"""Schema-driven fuzzing of every operation (schemathesis + hypothesis), on SQLite and PostgreSQL.

The app runs under a real uvicorn, auth on, and every request carries the key, so the generated
requests reach the validators. Seeded and bounded: the same few thousand requests every time.
Every check schemathesis has runs (the CLI's ``--checks all``: status, content type, body and
headers as documented, no 5xx, schema-valid requests accepted and schema-violating ones refused,
auth enforced, a deleted resource gone): the OpenAPI document and the behaviour agree. A valid
request may still be refused for what it means (bytes that are no image, a photo without a face),
never by the schema layer. Half of the image uploads are real LFW photos, and half of the valid
requests are aimed at a collection, subject and face that exist, so the store and the face
pipeline are reached. The stateful test follows the document's links (create → enroll → the face,
its thumbnail, its deletion).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks, negative_data_rejection

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
STATEFUL_EXAMPLES = 30
IMAGE_FIELDS = ("images", "image", "image_a", "image_b")
KEY = "fuzz-key"  # auth on: the key middleware is on every request's path
AUTH = {"X-API-Key": KEY}
SCHEMA.config.update(headers=AUTH)  # the key is the caller's, not generated: the auth checks know it
# Strings as the document's text pattern says (no NUL, UTF-8 encodable); schemathesis's own string
# shortcuts would otherwise ignore the pattern now and then.
SCHEMA.config.generation.update(allow_x00=False, codec="utf-8")
# A schema-valid request may still be refused for what it means: bytes that are no image (415, the
# type is sniffed from the content), an image with no face or a collection too small to calibrate
# (422 with a domain code). Only the schema layer's own 422 (``validation_error``) says the document
# and the service disagree; ``validation_is_documented`` catches that one.
SCHEMA.config.checks.positive_data_acceptance.expected_statuses = [
    *SCHEMA.config.checks.positive_data_acceptance.expected_statuses,
    "415",
    "422",
]
load_all_checks()


def validation_is_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request generated from the document is never refused by the schema layer."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 422:
        return None
    code = response.json().get("code")
    assert code != "validation_error", f"schema-valid request refused by validation: {response.text[:500]}"
    return None


ALL_CHECKS = [*CHECKS.get_all(), validation_is_documented]  # the CLI's `--checks all`, and one more
# A valid request whose image fields this test replaced by photos is still valid: the negative-data
# check (which schemathesis applies once the body was changed after generation) is for invalid ones.
CHECKS_FOR = {
    GenerationMode.POSITIVE: [check for check in ALL_CHECKS if check is not negative_data_rejection],
    GenerationMode.NEGATIVE: ALL_CHECKS,
}
FACES = [("Colin_Powell", 1), ("Serena_Williams", 1), ("George_W_Bush", 2), ("Hugo_Chavez", 1)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, lfw_image: Any
) -> Iterator[tuple[httpx.Client, dict[str, str], list[bytes]]]:
    """The app under a real uvicorn on one store, with a collection 'fuzz' holding subject 'alice'
    and one face. Real HTTP, so the checks that send requests of their own (auth probes, a read
    after a delete) reach the same server."""
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    settings_ = make_settings(tmp, database_url=store_url(request.param, request, tmp), api_keys=[KEY])
    photos = [lfw_image(person, n).read_bytes() for person, n in FACES]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings_), host="127.0.0.1", port=_free_port(), log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": KEY}) as client:
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
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _send(client: httpx.Client, case: Any) -> Any:
    """The generated request as httpx sends it (multipart parts of any JSON type allowed)."""
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url).rstrip("/"))
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


def _use_photos(case: Any, photo: Any) -> None:
    """The generated image fields replaced by real LFW photos (``photo()`` picks one)."""
    for field in IMAGE_FIELDS:
        if isinstance(case.body.get(field), list):
            case.body[field] = [photo() for _ in case.body[field]]
        elif field in case.body:
            case.body[field] = photo()
    case.body.pop("source_hash", None)  # random hashes would mostly miscount the photos


def _file_part(part: Any) -> tuple[Any, ...]:
    """A requests-style multipart part as httpx takes it (bytes or str content only)."""
    filename, value, *rest = part if isinstance(part, tuple) else (None, part)
    if not isinstance(value, bytes | str):
        value = json.dumps(value)
    return (filename, value, *rest)


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_operation_never_fails_and_answers_as_documented(
    target: tuple[httpx.Client, dict[str, str], list[bytes]], method: str, path: str, mode: GenerationMode
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
        # Valid requests are aimed at rows that exist and carry real photos, half of the time; an
        # invalid one is sent as generated, so what makes it invalid is still there.
        positive = mode is GenerationMode.POSITIVE
        if positive and method != "DELETE" and data.draw(st.booleans(), label="aim at existing rows"):
            for name, value in known.items():
                if name in (case.path_parameters or {}):
                    case.path_parameters[name] = value
        if positive and isinstance(case.body, dict) and data.draw(st.booleans(), label="real photos"):
            _use_photos(case, lambda: data.draw(st.sampled_from(photos)))
        # The one rule JSON Schema cannot say (documented): one source_hash per image, or none.
        hashes = case.body.get("source_hash") if positive and isinstance(case.body, dict) else None
        if hashes is not None and len(hashes) != len(case.body.get("images") or []):
            del case.body["source_hash"]
        case.headers = {**(case.headers or {}), **AUTH}
        response = _send(client, case)
        case.validate_response(
            response,
            checks=CHECKS_FOR[mode],
            headers=AUTH,
            transport_kwargs={"base_url": str(client.base_url).rstrip("/"), "headers": AUTH},
        )

    run()


def test_stateful_links_reach_every_resource(
    target: tuple[httpx.Client, dict[str, str], list[bytes]],
) -> None:
    """The stateful phase: sequences that follow the document's links (create collection → subject →
    enroll real photos → the face, its thumbnail, its deletion), every response checked."""
    client, _known, photos = target
    base_url = str(client.base_url).rstrip("/")
    reached: set[str] = set()
    # The resource chain only: creations, and the single resources they link to (everything else
    # is fuzzed above, and with fewer rules to choose from each scenario follows the links further).
    graph = SCHEMA.include(
        name=[
            "POST /v1/collections",
            "POST /v1/collections/{collection}/subjects",
            "POST /v1/collections/{collection}/subjects/{subject_id}/faces",
            "GET /v1/collections/{collection}/faces/{face_id}",
            "GET /v1/collections/{collection}/faces/{face_id}/thumbnail",
            "DELETE /v1/collections/{collection}/faces/{face_id}",
        ]
    )
    machine = graph.as_state_machine()

    class Links(machine):  # type: ignore[valid-type, misc]
        def setup(self) -> None:
            # Every scenario starts from the same rows (Hypothesis replays choices; a collection
            # left over from an earlier scenario would answer 409 where it answered 201).
            for listed in client.get("/v1/collections").json()["collections"]:
                if listed["name"] != "fuzz":
                    client.delete(f"/v1/collections/{listed['name']}")

        def before_call(self, case: Any) -> None:
            if isinstance(case.body, dict):
                if isinstance(case.body.get("images"), list):
                    del case.body["images"][2:]  # two photos are enough to follow the links, and quick
                _use_photos(case, lambda: photos[len(reached) % len(photos)])
            case.headers = {**(case.headers or {}), **AUTH}
            if "Idempotency-Key" in case.headers:
                # A fresh key per call: a generated key repeats across scenarios, and its replayed
                # first answer would describe rows the scenario's clean start has removed.
                case.headers["Idempotency-Key"] = str(uuid.uuid4())

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "headers": AUTH}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if response.status_code < 300:
                reached.add(f"{case.method} {case.path}")

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(
                response, checks=CHECKS_FOR[GenerationMode.POSITIVE], headers=AUTH, transport_kwargs=kwargs
            )

    Links.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=10,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    for route in (
        "GET /v1/collections/{collection}/faces/{face_id}",
        "GET /v1/collections/{collection}/faces/{face_id}/thumbnail",
        "DELETE /v1/collections/{collection}/faces/{face_id}",
    ):
        assert route in reached, "\n".join(sorted(reached))
