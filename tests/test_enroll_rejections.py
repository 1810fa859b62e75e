"""What an enrollment answers when no image could be enrolled, and the top-k bound: code and README agree."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.helpers import no_face_photo

LfwImage = Callable[[str, int], Path]
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("rejections")
    settings = Settings(
        database_url=f"sqlite:///{tmp}/faces.db",
        index_dir=tmp / "index",
        execution_provider="cpu",
        max_top_k=3,
    )
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/v1/collections", json={"name": "c"}).status_code == 201
        yield test_client


def _enroll(client: TestClient, files: list[Any]) -> Any:
    return client.post("/v1/collections/c/subjects/s/faces", params={"create_subject": "true"}, files=files)


def test_one_shared_rejection_answers_with_its_own_status(client: TestClient) -> None:
    response = _enroll(client, [("images", ("notes.txt", b"just text", "text/plain"))])
    assert response.status_code == 415
    body = response.json()
    assert body["code"] == "unsupported_media_type"
    assert body["results"][0]["error"]["code"] == "unsupported_media_type"
    assert client.get("/v1/collections/c/subjects/s").status_code == 404


def test_mixed_rejections_answer_422_no_image_enrolled(client: TestClient) -> None:
    files = [
        ("images", ("notes.txt", b"just text", "text/plain")),
        ("images", ("gradient.png", no_face_photo(), "image/png")),
    ]
    response = _enroll(client, files)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "no_image_enrolled"
    assert [r["error"]["code"] for r in body["results"]] == ["unsupported_media_type", "no_face"]
    assert body["rejected"] == 2


def test_readme_says_what_the_code_does() -> None:
    readme = README.read_text(encoding="utf-8")
    enrollment = readme[readme.index("**Enrollment**") : readme.index("**Errors**")]
    assert "415" in enrollment
    assert "no_image_enrolled" in enrollment
    errors = readme[readme.index("**Errors**") : readme.index("**Input safety")]
    for code in ("not_found", "no_image_enrolled", "request_too_many_pixels", "server_busy"):
        assert re.search(rf"\b{code}\b", errors), code


def test_max_top_k_setting_bounds_top_k(client: TestClient, lfw_image: LfwImage) -> None:
    photo = lfw_image("Colin_Powell", 1).read_bytes()
    response = client.post("/v1/collections/c/identify", params={"top_k": 4}, files={"image": photo})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "top_k" in response.json()["detail"]
    assert (
        client.post("/v1/collections/c/identify", params={"top_k": 3}, files={"image": photo}).status_code
        == 200
    )
