"""Every endpoint through TestClient, with the real models on real LFW photos.

The API runs on SQLite and PostgreSQL with the embedded FAISS engine, and on Milvus (milvus-lite
in-process, the same pymilvus calls as a Milvus server); every answer must be the same on all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.runtime.model_card import ModelCard
from service.settings import DEFAULT_MODEL_DIR, Settings
from tests.helpers import group_photo, jpeg_bytes, no_face_photo, png_bytes
from tests.milvus_server import require_pymilvus
from tests.postgres import store_url

LfwImage = Callable[[str, int], Path]
PROBLEM = "application/problem+json"


def make_settings(tmp: Path, backend: str = "faiss", **overrides: Any) -> Settings:
    if backend == "milvus":
        overrides = {"vector_backend": "milvus", "milvus_uri": str(tmp / "milvus.db"), **overrides}
    return Settings(**{"database_url": f"sqlite:///{tmp}/faces.db", "index_dir": tmp / "index", **overrides})


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest) -> str:
    """The vector engine under test: embedded FAISS, or Milvus through milvus-lite."""
    if request.param == "milvus":
        require_pymilvus()
    return str(request.param)


# (store, vector engine): both stores on the default engine, and Milvus on the default store.
API_VARIANTS = {
    "sqlite-faiss": ("sqlite", "faiss"),
    "postgresql-faiss": ("postgresql", "faiss"),
    "sqlite-milvus": ("sqlite", "milvus"),
}


@pytest.fixture(scope="module", params=list(API_VARIANTS))
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The whole API on each store and each vector engine: all must answer the same."""
    store, engine = API_VARIANTS[request.param]
    if engine == "milvus":
        require_pymilvus()
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    settings = make_settings(tmp, engine, database_url=store_url(store, request, tmp))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def files_of(
    lfw_image: LfwImage, person: str, numbers: list[int]
) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("images", (f"{person}_{n}.jpg", lfw_image(person, n).read_bytes(), "image/jpeg")) for n in numbers
    ]


def enroll(client: TestClient, collection: str, person: str, files: list[Any], **params: Any) -> Any:
    return client.post(
        f"/v1/collections/{collection}/subjects/{person}/faces",
        params={"create_subject": "true", **params},
        files=files,
    )


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"].endswith(code)
    assert "Traceback" not in response.text
    return body


@pytest.fixture(scope="module")
def gallery(client: TestClient, lfw_root: Path) -> str:
    """A collection with three enrolled people (two photos each)."""
    assert client.post("/v1/collections", json={"name": "people"}).status_code == 201
    for person in ("George_W_Bush", "Colin_Powell", "Serena_Williams"):
        files = [
            (
                "images",
                (
                    f"{n}.jpg",
                    (lfw_root / "images" / person / f"{person}_{n:04d}.jpg").read_bytes(),
                    "image/jpeg",
                ),
            )
            for n in (1, 2)
        ]
        response = enroll(client, "people", person, files)
        assert response.status_code == 201, response.text
        assert response.json()["enrolled"] == 2
    return "people"


# -- collections -------------------------------------------------------------------------------


def test_collection_lifecycle(client: TestClient) -> None:
    created = client.post("/v1/collections", json={"name": "lifecycle", "description": "d"})
    assert created.status_code == 201
    assert created.json()["face_count"] == 0
    assert_problem(client.post("/v1/collections", json={"name": "lifecycle"}), 409, "collection_exists")
    names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    assert "lifecycle" in names
    assert client.get("/v1/collections/lifecycle").json()["description"] == "d"
    assert client.delete("/v1/collections/lifecycle").status_code == 204
    assert_problem(client.get("/v1/collections/lifecycle"), 404, "collection_not_found")
    assert_problem(client.delete("/v1/collections/lifecycle"), 404, "collection_not_found")


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 65, "-leading"])
def test_collection_name_is_validated(client: TestClient, name: str) -> None:
    assert_problem(client.post("/v1/collections", json={"name": name}), 422, "validation_error")


def test_malformed_json_is_a_problem_not_a_500(client: TestClient) -> None:
    response = client.post(
        "/v1/collections", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation_error")


# -- subjects ----------------------------------------------------------------------------------


def test_subject_crud_and_pagination(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "subjects"})
    for i in range(5):
        body = {"subject_id": f"person-{i}", "name": f"Person {i}", "metadata": {"badge": i}}
        assert client.post("/v1/collections/subjects/subjects", json=body).status_code == 201
    assert_problem(
        client.post("/v1/collections/subjects/subjects", json={"subject_id": "person-0"}),
        409,
        "subject_exists",
    )
    page = client.get("/v1/collections/subjects/subjects", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 5
    assert [s["subject_id"] for s in page["items"]] == ["person-1", "person-2"]
    one = client.get("/v1/collections/subjects/subjects/person-3").json()
    assert one == {**one, "name": "Person 3", "metadata": {"badge": 3}, "face_count": 0}
    patched = client.patch("/v1/collections/subjects/subjects/person-3", json={"metadata": {"badge": 99}})
    assert patched.status_code == 200
    assert patched.json()["metadata"] == {"badge": 99}
    assert patched.json()["name"] == "Person 3"  # untouched fields stay
    assert client.delete("/v1/collections/subjects/subjects/person-3").status_code == 204
    assert_problem(client.get("/v1/collections/subjects/subjects/person-3"), 404, "subject_not_found")
    assert_problem(client.get("/v1/collections/nope/subjects"), 404, "collection_not_found")
    assert_problem(
        client.post("/v1/collections/subjects/subjects", json={"subject_id": "x", "extra": 1}),
        422,
        "validation_error",
    )


# -- enrollment --------------------------------------------------------------------------------


def test_enrollment_reports_each_image(client: TestClient, lfw_image: LfwImage) -> None:
    client.post("/v1/collections", json={"name": "enroll"})
    files = files_of(lfw_image, "Tony_Blair", [2, 3])
    files.append(("images", ("notes.txt", b"definitely not an image", "text/plain")))
    files.append(("images", ("gradient.png", no_face_photo(), "image/png")))
    files.append(("images", ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 100, "image/jpeg")))
    response = enroll(client, "enroll", "Tony_Blair", files)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["enrolled"], body["rejected"]) == (2, 3)
    by_name = {r["filename"]: r for r in body["results"]}
    for name in ("Tony_Blair_2.jpg", "Tony_Blair_3.jpg"):
        result = by_name[name]
        assert result["status"] == "enrolled"
        assert result["face_id"]
        assert result["quality"]["passed"] is True
        x, y, w, h = result["box"]
        assert 30 < x < 125
        assert 30 < y < 125
        assert 50 < w < 200
        assert 50 < h < 200
    assert by_name["notes.txt"]["error"]["code"] == "unsupported_media_type"
    assert by_name["gradient.png"]["error"]["code"] == "no_face"
    assert by_name["broken.jpg"]["error"]["code"] == "invalid_image"
    listed = client.get("/v1/collections/enroll/subjects/Tony_Blair/faces").json()["faces"]
    assert sorted(f["face_id"] for f in listed) == sorted(
        by_name[n]["face_id"] for n in ("Tony_Blair_2.jpg", "Tony_Blair_3.jpg")
    )
    assert all(len(f["source_hash"]) == 64 for f in listed)


def test_enrollment_with_nothing_usable_is_a_problem(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "empty-enroll"})
    files = [("images", ("gradient.png", no_face_photo(), "image/png"))]
    body = assert_problem(enroll(client, "empty-enroll", "nobody", files), 422, "no_face")
    assert body["results"][0]["error"]["code"] == "no_face"
    # The subject was not half-created by the failed request.
    assert client.get("/v1/collections/empty-enroll").json()["face_count"] == 0


def test_enrollment_needs_existing_subject_unless_asked(client: TestClient, lfw_image: LfwImage) -> None:
    client.post("/v1/collections", json={"name": "strict-subjects"})
    response = client.post(
        "/v1/collections/strict-subjects/subjects/ghost/faces", files=files_of(lfw_image, "Tony_Blair", [3])
    )
    body = assert_problem(response, 404, "subject_not_found")
    assert "create_subject=true" in body["detail"]  # the fix, on the route that has it
    # ... and only there: other routes' subject_not_found name no enrollment parameter
    other = assert_problem(
        client.get("/v1/collections/strict-subjects/subjects/ghost"), 404, "subject_not_found"
    )
    assert "create_subject" not in other["detail"]
    assert_problem(
        enroll(client, "missing", "x", files_of(lfw_image, "Tony_Blair", [3])), 404, "collection_not_found"
    )


def test_face_selection_strict_and_largest(client: TestClient, lfw_image: LfwImage) -> None:
    client.post("/v1/collections", json={"name": "groups"})
    photo = group_photo([lfw_image("Gerhard_Schroeder", 1), lfw_image("Hugo_Chavez", 1)])
    files = [("images", ("group.jpg", photo, "image/jpeg"))]
    body = assert_problem(enroll(client, "groups", "someone", files), 422, "multiple_faces")
    assert body["results"][0]["faces_detected"] >= 2
    largest = enroll(client, "groups", "someone", files, face_selection="largest")
    assert largest.status_code == 201
    assert largest.json()["enrolled"] == 1


def test_face_get_and_delete(client: TestClient, gallery: str, lfw_image: LfwImage) -> None:
    added = enroll(client, gallery, "Colin_Powell", files_of(lfw_image, "Colin_Powell", [5])).json()
    face_id = added["results"][0]["face_id"]
    face = client.get(f"/v1/collections/{gallery}/faces/{face_id}").json()
    assert face["subject_id"] == "Colin_Powell"
    assert client.delete(f"/v1/collections/{gallery}/faces/{face_id}").status_code == 204
    assert_problem(client.get(f"/v1/collections/{gallery}/faces/{face_id}"), 404, "face_not_found")
    probe = {"image": lfw_image("Colin_Powell", 5).read_bytes()}
    candidates = client.post(f"/v1/collections/{gallery}/identify", files=probe).json()["faces"][0][
        "candidates"
    ]
    assert face_id not in {c["face_id"] for c in candidates}


# -- identification ----------------------------------------------------------------------------


def test_identify_known_person(client: TestClient, gallery: str, lfw_image: LfwImage) -> None:
    response = client.post(
        f"/v1/collections/{gallery}/identify", files={"image": lfw_image("George_W_Bush", 10).read_bytes()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert face["match"]["subject_id"] == "George_W_Bush"
    subjects = [c["subject_id"] for c in face["candidates"]]
    assert len(subjects) == len(set(subjects)) == 3  # ranked per subject, not per stored face
    distances = [c["distance"] for c in face["candidates"]]
    assert distances == sorted(distances)
    for c in face["candidates"]:
        assert 0.0 <= c["distance"] <= 4.0
        assert c["similarity"] == pytest.approx(1 - c["distance"] / 2, abs=1e-5)
    assert face["match"]["distance"] <= body["threshold"]


def test_unknown_person_comes_back_unknown(client: TestClient, gallery: str, lfw_image: LfwImage) -> None:
    for person in ("Jennifer_Aniston", "Vladimir_Putin", "Hugo_Chavez"):
        response = client.post(
            f"/v1/collections/{gallery}/identify", files={"image": lfw_image(person, 1).read_bytes()}
        )
        face = response.json()["faces"][0]
        assert face["match"] is None, (person, face["candidates"][0])
        assert face["candidates"][0]["distance"] > response.json()["threshold"]


def test_threshold_semantics(client: TestClient, gallery: str, lfw_image: LfwImage) -> None:
    probe = lfw_image("Serena_Williams", 5).read_bytes()
    url = f"/v1/collections/{gallery}/identify"
    strict = client.post(url, params={"threshold": 0.0}, files={"image": probe}).json()
    assert strict["threshold"] == 0.0
    assert strict["faces"][0]["match"] is None
    loose = client.post(url, params={"threshold": 4.0}, files={"image": probe}).json()
    assert loose["faces"][0]["match"] is not None  # every distance is ≤ 4
    for bad in (-0.1, 4.01, "abc"):
        assert_problem(
            client.post(url, params={"threshold": bad}, files={"image": probe}), 422, "validation_error"
        )
    one = client.post(url, params={"top_k": 1}, files={"image": probe}).json()
    assert len(one["faces"][0]["candidates"]) == 1
    assert one["faces"][0]["candidates"][0]["subject_id"] == "Serena_Williams"


def test_identify_every_face_of_a_group(client: TestClient, gallery: str, lfw_image: LfwImage) -> None:
    photo = group_photo(
        [lfw_image("Colin_Powell", 7), lfw_image("Jennifer_Aniston", 2), lfw_image("George_W_Bush", 20)]
    )
    body = client.post(f"/v1/collections/{gallery}/identify", files={"image": photo}).json()
    assert len(body["faces"]) >= 3
    areas = [f["box"][2] * f["box"][3] for f in body["faces"]]
    assert areas == sorted(areas, reverse=True)
    by_left = sorted(body["faces"][:3], key=lambda f: f["box"][0])
    matches = [f["match"]["subject_id"] if f["match"] else None for f in by_left]
    assert matches == ["Colin_Powell", None, "George_W_Bush"]
    capped = client.post(
        f"/v1/collections/{gallery}/identify", params={"max_faces": 1}, files={"image": photo}
    )
    assert len(capped.json()["faces"]) == 1


def test_identify_in_missing_collection_is_404(client: TestClient, lfw_image: LfwImage) -> None:
    image = lfw_image("Tony_Blair", 4).read_bytes()
    assert_problem(
        client.post("/v1/collections/missing/identify", files={"image": image}), 404, "collection_not_found"
    )


def test_identify_without_face_or_in_empty_collection(client: TestClient, lfw_image: LfwImage) -> None:
    client.post("/v1/collections", json={"name": "nobody-here"})
    assert_problem(
        client.post("/v1/collections/nobody-here/identify", files={"image": no_face_photo()}), 422, "no_face"
    )
    body = client.post(
        "/v1/collections/nobody-here/identify", files={"image": lfw_image("Tony_Blair", 4).read_bytes()}
    ).json()
    assert body["faces"][0]["candidates"] == []
    assert body["faces"][0]["match"] is None


# -- verification ------------------------------------------------------------------------------


def test_verify_pair(client: TestClient, lfw_image: LfwImage) -> None:
    same = client.post(
        "/v1/verify",
        files={
            "image_a": lfw_image("Tony_Blair", 1).read_bytes(),
            "image_b": lfw_image("Tony_Blair", 9).read_bytes(),
        },
    ).json()
    assert same["match"] is True
    assert same["distance"] <= same["threshold"]
    different = client.post(
        "/v1/verify",
        files={
            "image_a": lfw_image("Tony_Blair", 1).read_bytes(),
            "image_b": lfw_image("Hugo_Chavez", 1).read_bytes(),
        },
    ).json()
    assert different["match"] is False
    assert different["distance"] > same["distance"]
    assert different["similarity"] == pytest.approx(1 - different["distance"] / 2, abs=1e-5)
    missing = client.post("/v1/verify", files={"image_a": lfw_image("Tony_Blair", 1).read_bytes()})
    assert_problem(missing, 422, "validation_error")
    assert_problem(
        client.post(
            "/v1/verify",
            files={"image_a": lfw_image("Tony_Blair", 1).read_bytes(), "image_b": no_face_photo()},
        ),
        422,
        "no_face",
    )


def test_verify_against_subject(client: TestClient, gallery: str, lfw_image: LfwImage) -> None:
    url = f"/v1/collections/{gallery}/subjects/George_W_Bush/verify"
    same = client.post(url, files={"image": lfw_image("George_W_Bush", 30).read_bytes()}).json()
    assert same["match"] is True
    assert same["face_id"]
    other = client.post(url, files={"image": lfw_image("Serena_Williams", 3).read_bytes()}).json()
    assert other["match"] is False
    assert_problem(
        client.post(
            f"/v1/collections/{gallery}/subjects/nobody/verify",
            files={"image": lfw_image("Tony_Blair", 1).read_bytes()},
        ),
        404,
        "subject_not_found",
    )


# -- input safety ------------------------------------------------------------------------------


def test_image_formats_and_modes(client: TestClient, gallery: str, lfw_image: LfwImage) -> None:
    """Grayscale, alpha and WebP photos of an enrolled person are all identified."""
    with Image.open(lfw_image("George_W_Bush", 40)) as img:
        variants = {
            "gray.png": png_bytes(img.convert("L")),
            "alpha.png": png_bytes(img.convert("RGBA")),
            "photo.webp": _webp(img),
        }
    for name, data in variants.items():
        response = client.post(f"/v1/collections/{gallery}/identify", files={"image": (name, data)})
        assert response.status_code == 200, (name, response.text)
        assert response.json()["faces"][0]["match"]["subject_id"] == "George_W_Bush", name


def _webp(img: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="WEBP", quality=90)
    return buffer.getvalue()


def test_decompression_bomb_is_refused(client: TestClient, gallery: str) -> None:
    bomb = png_bytes(Image.new("L", (12_000, 12_000)))  # 144 Mpx, compresses to a few hundred KB
    assert len(bomb) < 1_000_000
    assert_problem(
        client.post(f"/v1/collections/{gallery}/identify", files={"image": bomb}),
        422,
        "image_too_many_pixels",
    )


def test_upload_size_limits(tmp_path: Path, lfw_image: LfwImage, backend: str) -> None:
    settings = make_settings(tmp_path, backend, max_upload_bytes=20_000, max_images_per_request=2)
    big = jpeg_bytes(Image.effect_noise((400, 400), 64))
    assert len(big) > 20_000
    with TestClient(create_app(settings)) as small:
        small.post("/v1/collections", json={"name": "c"})
        assert_problem(
            small.post("/v1/collections/c/identify", files={"image": big}), 413, "payload_too_large"
        )
        body = enroll(small, "c", "s", [("images", ("big.jpg", big, "image/jpeg"))])
        assert_problem(body, 413, "payload_too_large")
        huge = b"\xff\xd8\xff" + b"\x00" * 200_000
        response = small.post("/v1/collections/c/identify", files={"image": huge}, params={"x": 1})
        assert response.status_code == 413
        too_many = [
            ("images", (f"{i}.jpg", lfw_image("Tony_Blair", 1).read_bytes(), "image/jpeg")) for i in range(3)
        ]
        assert too_many
        assert enroll(small, "c", "s", too_many).status_code in (400, 413)


# -- auth --------------------------------------------------------------------------------------


def test_api_keys(tmp_path: Path, lfw_image: LfwImage, backend: str) -> None:
    settings = make_settings(tmp_path, backend, api_keys=["admin-key", "door-key:front-door"])
    with TestClient(create_app(settings)) as keyed:
        assert_problem(keyed.get("/v1/collections"), 401, "unauthorized")
        assert_problem(keyed.get("/v1/collections", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        admin = {"X-API-Key": "admin-key"}
        door = {"X-API-Key": "door-key"}
        for name in ("front-door", "vault"):
            assert keyed.post("/v1/collections", json={"name": name}, headers=admin).status_code == 201
        assert [c["name"] for c in keyed.get("/v1/collections", headers=door).json()["collections"]] == [
            "front-door"
        ]
        assert keyed.get("/v1/collections/front-door", headers=door).status_code == 200
        assert_problem(keyed.get("/v1/collections/vault", headers=door), 403, "forbidden")
        probe = {"image": lfw_image("Tony_Blair", 1).read_bytes()}
        assert_problem(
            keyed.post("/v1/collections/vault/identify", files=probe, headers=door), 403, "forbidden"
        )
        assert keyed.post("/v1/collections/front-door/identify", files=probe, headers=door).status_code == 200
        assert keyed.get("/healthz").status_code == 200  # probes stay open
        assert keyed.get("/readyz").status_code == 200


# -- operations --------------------------------------------------------------------------------


def test_health_metrics_and_openapi(client: TestClient, gallery: str) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["checks"]["index"] == "in_sync"
    assert ready["checks"]["vector_engine"] == client.app.state.settings.vector_backend  # type: ignore[attr-defined]
    metrics = client.get("/metrics").text
    assert f'faces_index_size{{collection="{gallery}"}}' in metrics
    assert "faces_http_request_duration_seconds_bucket" in metrics
    assert "faces_embeddings_computed_total" in metrics
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/collections",
        "/v1/collections/{collection}",
        "/v1/collections/{collection}/subjects",
        "/v1/collections/{collection}/subjects/{subject_id}",
        "/v1/collections/{collection}/subjects/{subject_id}/faces",
        "/v1/collections/{collection}/faces/{face_id}",
        "/v1/collections/{collection}/identify",
        "/v1/collections/{collection}/calibrate",
        "/v1/verify",
        "/v1/collections/{collection}/subjects/{subject_id}/verify",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(client.put("/v1/collections"), 405, "method_not_allowed")


def test_restart_keeps_everything(tmp_path: Path, lfw_image: LfwImage, backend: str) -> None:
    settings = make_settings(tmp_path, backend)
    with TestClient(create_app(settings)) as first:
        first.post("/v1/collections", json={"name": "durable"})
        enrolled = enroll(
            first, "durable", "Colin_Powell", files_of(lfw_image, "Colin_Powell", [1, 2])
        ).json()
        face_ids = {r["face_id"] for r in enrolled["results"]}
    if backend == "faiss":
        assert list((tmp_path / "index").glob("collection-*.faiss"))
    with TestClient(create_app(settings)) as second:
        listed = second.get("/v1/collections/durable/subjects/Colin_Powell/faces").json()["faces"]
        assert {f["face_id"] for f in listed} == face_ids
        match = second.post(
            "/v1/collections/durable/identify", files={"image": lfw_image("Colin_Powell", 9).read_bytes()}
        )
        assert match.json()["faces"][0]["match"]["subject_id"] == "Colin_Powell"
        assert second.get("/readyz").json()["checks"]["index"] == "in_sync"


def test_default_identify_threshold_follows_the_collection_size(
    client: TestClient, lfw_image: LfwImage
) -> None:
    """The card's ladders read at the store's subject and face counters, kept by every write (on
    each store and vector engine); identify uses the value the collection shows."""
    ladders = ModelCard.load(DEFAULT_MODEL_DIR / "embedder.json").identify_threshold_by_size
    assert ladders is not None

    def shown() -> dict[str, Any]:
        body = client.get("/v1/collections/sized").json()
        threshold: dict[str, Any] = body["identify_threshold"]
        assert threshold["source"] == "model_card_by_size"
        assert (threshold["read_at_subjects"], threshold["read_at_faces"]) == (
            body["subject_count"],
            body["face_count"],
        )
        assert threshold["value"] == round(ladders.at(body["subject_count"], body["face_count"]), 6)
        return threshold

    assert client.post("/v1/collections", json={"name": "sized"}).status_code == 201
    assert (shown()["read_at_subjects"], shown()["read_at_faces"]) == (0, 0)
    assert enroll(client, "sized", "powell", files_of(lfw_image, "Colin_Powell", [1, 2])).status_code == 201
    assert enroll(client, "sized", "serena", files_of(lfw_image, "Serena_Williams", [1])).status_code == 201
    assert client.post("/v1/collections/sized/subjects", json={"subject_id": "nobody"}).status_code == 201
    three = shown()
    assert (three["read_at_subjects"], three["read_at_faces"]) == (3, 3)
    answer = client.post(
        "/v1/collections/sized/identify", files={"image": lfw_image("Colin_Powell", 3).read_bytes()}
    )
    assert (answer.json()["threshold"], answer.json()["threshold_source"]) == (
        three["value"],
        "model_card_by_size",
    )
    assert answer.json()["faces"][0]["match"]["subject_id"] == "powell"
    face_id = client.get("/v1/collections/sized/subjects/powell/faces").json()["faces"][0]["face_id"]
    assert client.delete(f"/v1/collections/sized/faces/{face_id}").status_code == 204
    assert (shown()["read_at_subjects"], shown()["read_at_faces"]) == (3, 2)
    assert client.delete("/v1/collections/sized/subjects/powell").status_code == 204
    assert client.delete("/v1/collections/sized/subjects/nobody").status_code == 204
    assert (shown()["read_at_subjects"], shown()["read_at_faces"]) == (1, 1)
    assert client.delete("/v1/collections/sized").status_code == 204
