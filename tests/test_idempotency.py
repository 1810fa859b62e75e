"""Idempotency-Key on POST enroll / create collection / create subject, over real HTTP (TestClient)
with the real models on real LFW photos, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.deps import Services
from service.domain.idempotency import (
    Answer,
    IdempotencyKeys,
    json_digest,
    parse_key,
    request_fingerprint,
)
from service.errors import IdempotencyKeyInFlight, IdempotencyKeyInvalid
from service.main import create_app
from service.settings import Settings
from service.storage.records import NewFace
from service.storage.store import FaceStore
from tests.helpers import no_face_photo
from tests.postgres import store_url

LfwImage = Callable[[str, int], Path]
PROBLEM = "application/problem+json"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(str(request.param), request, tmp_path)


def settings_for(url: str, tmp: Path, **overrides: Any) -> Settings:
    return Settings(database_url=url, index_dir=tmp / "index", **overrides)


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def enroll(client: TestClient, person: str, photo: bytes, key: str | None, **params: Any) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(
        f"/v1/collections/office/subjects/{person}/faces",
        params={"create_subject": "true", "face_selection": "largest", **params},
        files={"images": (f"{person}.jpg", photo, "image/jpeg")},
        headers=headers,
    )


def face_ids(client: TestClient, person: str) -> list[str]:
    response = client.get(f"/v1/collections/office/subjects/{person}/faces")
    assert response.status_code == 200, response.text
    return [f["face_id"] for f in response.json()["faces"]]


def test_blind_retries_return_the_first_answer_and_store_once(
    database_url: str, tmp_path: Path, lfw_image: LfwImage
) -> None:
    photo = lfw_image("Colin_Powell", 1).read_bytes()
    with TestClient(create_app(settings_for(database_url, tmp_path))) as client:
        created = client.post(
            "/v1/collections", json={"name": "office"}, headers={"Idempotency-Key": '"c-1"'}
        )
        assert created.status_code == 201, created.text
        again = client.post("/v1/collections", json={"name": "office"}, headers={"Idempotency-Key": '"c-1"'})
        assert again.status_code == 201, again.text  # not 409 collection_exists: the first answer
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == created.json()
        assert "Idempotent-Replayed" not in created.headers

        first = enroll(client, "Colin_Powell", photo, "enroll-0001")
        assert first.status_code == 201, first.text
        assert first.json()["searchable"] is True
        ids = [r["face_id"] for r in first.json()["results"]]
        assert len(ids) == 1
        assert ids[0]
        for _ in range(3):  # a fresh multipart boundary each time: the parts are what count
            retry = enroll(client, "Colin_Powell", photo, "enroll-0001")
            assert retry.status_code == 201, retry.text
            assert retry.json() == first.json()
            assert retry.headers["Idempotent-Replayed"] == "true"
        assert face_ids(client, "Colin_Powell") == ids
        assert client.get("/v1/collections/office").json()["face_count"] == 1
        # Without a key a retry is a new request: the old behaviour, a second face.
        assert enroll(client, "Colin_Powell", photo, None).status_code == 201
        assert len(face_ids(client, "Colin_Powell")) == 2

        # Subjects: the retry gets the 201 again, not 409 subject_exists.
        body = {"subject_id": "tony", "name": "Tony", "metadata": {"team": "b"}}
        made = client.post("/v1/collections/office/subjects", json=body, headers={"Idempotency-Key": "s-1"})
        assert made.status_code == 201, made.text
        made_again = client.post(
            "/v1/collections/office/subjects",
            json=dict(reversed(body.items())),
            headers={"Idempotency-Key": "s-1"},
        )
        assert made_again.status_code == 201, made_again.text
        assert made_again.json() == made.json()
        assert client.post("/v1/collections/office/subjects", json=body).status_code == 409

    # A restart (a new app on the same store): the record is still there.
    with TestClient(create_app(settings_for(database_url, tmp_path))) as client:
        retry = enroll(client, "Colin_Powell", photo, "enroll-0001")
        assert retry.status_code == 201, retry.text
        assert retry.json() == first.json()
        assert len(face_ids(client, "Colin_Powell")) == 2
        match = client.post(
            "/v1/collections/office/identify", files={"image": lfw_image("Colin_Powell", 2).read_bytes()}
        ).json()["faces"][0]["match"]
        assert match["subject_id"] == "Colin_Powell"


def test_the_same_key_for_another_request_is_refused(
    database_url: str, tmp_path: Path, lfw_image: LfwImage
) -> None:
    photo = lfw_image("Tony_Blair", 1).read_bytes()
    with TestClient(create_app(settings_for(database_url, tmp_path))) as client:
        assert client.post("/v1/collections", json={"name": "office"}).status_code == 201
        assert enroll(client, "Tony_Blair", photo, "k-1").status_code == 201
        other_photo = enroll(client, "Tony_Blair", lfw_image("Tony_Blair", 2).read_bytes(), "k-1")
        other_query = enroll(client, "Tony_Blair", photo, "k-1", face_selection="strict")
        other_subject = enroll(client, "Someone_Else", photo, "k-1")
        other_route = client.post(
            "/v1/collections", json={"name": "other"}, headers={"Idempotency-Key": "k-1"}
        )
        for refused in (other_photo, other_query, other_subject, other_route):
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith(PROBLEM)
            assert refused.json()["code"] == "idempotency_key_reused"
        assert len(face_ids(client, "Tony_Blair")) == 1
        assert client.get("/v1/collections/other").status_code == 404

        # Malformed keys: 400, nothing stored.
        for bad in ('""', "a b", "x" * 256, '"unterminated', "tab\there", '"bad \\n escape"'):
            response = enroll(client, "Tony_Blair", photo, bad)
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["code"] == "idempotency_key_invalid"
        assert len(face_ids(client, "Tony_Blair")) == 1

        # A request that stores nothing releases its key: the retry runs again (same answer).
        for _ in range(2):
            rejected = enroll(client, "Tony_Blair", no_face_photo(), "k-2")
            assert rejected.status_code == 422, rejected.text
            assert rejected.json()["code"] == "no_face"
            assert "Idempotent-Replayed" not in rejected.headers
        assert enroll(client, "Tony_Blair", photo, "k-2").status_code == 201  # now free for a real one
        missing = client.post(
            "/v1/collections/nowhere/subjects/x/faces",
            params={"create_subject": "true"},
            files={"images": ("x.jpg", photo, "image/jpeg")},
            headers={"Idempotency-Key": "k-3"},
        )
        assert missing.status_code == 404
        assert enroll(client, "Tony_Blair", photo, "k-3").status_code == 201
        assert len(face_ids(client, "Tony_Blair")) == 3

    openapi = create_app(settings_for(database_url, tmp_path)).openapi()
    for path in ("/v1/collections", "/v1/collections/{collection}/subjects"):
        assert "Idempotency-Key" in {p["name"] for p in openapi["paths"][path]["post"]["parameters"]}
    enroll_op = openapi["paths"]["/v1/collections/{collection}/subjects/{subject_id}/faces"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in enroll_op["parameters"]}


def test_keys_are_per_api_key(tmp_path: Path, lfw_image: LfwImage) -> None:
    settings = settings_for(f"sqlite:///{tmp_path}/faces.db", tmp_path, api_keys=["alpha", "beta"])
    photo = lfw_image("Serena_Williams", 1).read_bytes()
    with TestClient(create_app(settings)) as client:
        assert (
            client.post(
                "/v1/collections", json={"name": "office"}, headers={"X-API-Key": "alpha"}
            ).status_code
            == 201
        )
        for api_key in ("alpha", "beta", "alpha"):
            response = client.post(
                "/v1/collections/office/subjects/serena/faces",
                params={"create_subject": "true"},
                files={"images": ("s.jpg", photo, "image/jpeg")},
                headers={"X-API-Key": api_key, "Idempotency-Key": "same"},
            )
            assert response.status_code == 201, response.text
        listed = client.get("/v1/collections/office/subjects/serena/faces", headers={"X-API-Key": "alpha"})
        assert len(listed.json()["faces"]) == 2  # one per caller; alpha's retry replayed


def test_in_flight_expiry_and_purge(tmp_path: Path, lfw_image: LfwImage) -> None:
    settings = settings_for(
        f"sqlite:///{tmp_path}/faces.db",
        tmp_path,
        idempotency_key_ttl_s=2.0,
        idempotency_in_flight_timeout_s=1.0,
    )
    photo = lfw_image("Gerhard_Schroeder", 1).read_bytes()
    with TestClient(create_app(settings)) as client:
        services = services_of(client)
        # An attempt still running (claimed, not answered) holds the key: 409 with Retry-After.
        digest = json_digest({"name": "office", "description": "", "identify_threshold": None})
        fingerprint = request_fingerprint("POST", "/v1/collections", [], "", digest)
        claimed = services.idempotency.begin("", "busy", fingerprint)
        assert not isinstance(claimed, Answer)
        busy = client.post("/v1/collections", json={"name": "office"}, headers={"Idempotency-Key": "busy"})
        assert busy.status_code == 409, busy.text
        assert busy.json()["code"] == "idempotency_key_in_flight"
        assert int(busy.headers["Retry-After"]) >= 1
        time.sleep(1.1)  # that attempt died: after the in-flight timeout the key is taken over
        taken = client.post("/v1/collections", json={"name": "office"}, headers={"Idempotency-Key": "busy"})
        assert taken.status_code == 201, taken.text
        # The dead attempt's late completion cannot record over the new one: 409, its write undone.
        store = services.gallery.store
        with pytest.raises(IdempotencyKeyInFlight):
            store.subjects.create_subject(
                "office",
                "late",
                None,
                {},
                within=services.idempotency.in_transaction(claimed, lambda _r: Answer(201, {})),
            )
        assert client.get("/v1/collections/office/subjects/late").status_code == 404

        first = enroll(client, "Gerhard_Schroeder", photo, "short-lived")
        assert first.status_code == 201
        time.sleep(2.1)  # past the TTL: the key is forgotten, the same request enrolls again
        assert services.idempotency.purge_expired() >= 1
        second = enroll(client, "Gerhard_Schroeder", photo, "short-lived")
        assert second.status_code == 201
        assert "Idempotent-Replayed" not in second.headers
        assert second.json()["results"][0]["face_id"] != first.json()["results"][0]["face_id"]
        assert len(face_ids(client, "Gerhard_Schroeder")) == 2


def test_the_key_record_and_the_faces_commit_together(tmp_path: Path) -> None:
    """Nothing half-done: a completion that fails rolls the faces back, and a write that fails
    (no such subject) leaves the key unclaimed."""
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    now = [1000.0]
    keys = IdempotencyKeys(store.idempotency, ttl_s=60, in_flight_timeout_s=5, clock=lambda: now[0])
    store.collections.create_collection("c")
    face = NewFace(np.ones(128, dtype=np.float32) / np.sqrt(128), (0, 0, 1, 1), {})

    claim = keys.begin("", "k", "fp")
    assert not isinstance(claim, Answer)
    now[0] += 10  # past the in-flight timeout: another attempt takes it over
    other = keys.begin("", "k", "fp")
    assert not isinstance(other, Answer)
    assert other.token != claim.token
    with pytest.raises(IdempotencyKeyInFlight):
        store.faces.add_faces(
            "c",
            "s",
            [face],
            create_subject=True,
            within=keys.in_transaction(claim, lambda _r: Answer(201, {})),
        )
    assert store.collections.get_collection("c").face_count == 0
    assert store.collections.get_collection("c").subject_count == 0

    records = store.faces.add_faces(
        "c",
        "s",
        [face],
        create_subject=True,
        within=keys.in_transaction(other, lambda r: Answer(201, [x.face_id for x in r])),
    )
    assert keys.begin("", "k", "fp") == Answer(201, [records[0].face_id])
    assert store.collections.get_collection("c").face_count == 1
    now[0] += 61
    assert keys.purge_expired() == 1


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ('"abc"', "abc"),
        ("abc", "abc"),
        ('"a\\"b"', 'a"b'),
        ('"with space"', "with space"),
        ("  tok  ", "tok"),
    ],
)
def test_key_syntax(raw: str, key: str) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize("raw", ['""', "", "a,b", '"x', "é", '"\\x"', "x" * 256])
def test_malformed_keys(raw: str) -> None:
    with pytest.raises(IdempotencyKeyInvalid):
        parse_key(raw)
