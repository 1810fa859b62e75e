"""The console's server side (files, headers, the setting) and the face-thumbnail endpoint, through
TestClient with the real models on LFW photos. The page itself runs in tests/test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.console import STATIC_DIR
from service.errors import ThumbnailNotFound
from service.main import create_app
from service.settings import Settings

LfwImage = Callable[[str, int], Path]


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp}/faces.db", index_dir=tmp / "index", **overrides)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("console")))) as test_client:
        yield test_client


def enroll(client: TestClient, collection: str, person: str, photos: list[bytes], **kw: Any) -> Any:
    response = client.post(
        f"/v1/collections/{collection}/subjects/{person}/faces",
        params={"create_subject": "true"},
        files=[("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)],
        **kw,
    )
    assert response.status_code == 201, response.text
    return response.json()


# ---------------------------------------------------------------------------------------- the page


def referenced_files(text: str) -> set[str]:
    """Files a page or module loads: src/href="ui/static/..." and relative ES module imports."""
    found = set(re.findall(r'(?:src|href)="ui/static/([^"]+)"', text))
    found |= {f"js/{m}" for m in re.findall(r'from "\./([^"]+)"', text)}
    found |= {f"js/{m}" for m in re.findall(r'from "\.\./([^"]+)"', text)}
    found |= {f"js/pages/{m}" for m in re.findall(r'from "\./pages/([^"]+)"', text)}
    return found


def test_console_page_and_every_file_it_loads_are_served(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp  # no CDN, no inline script
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/ui/", follow_redirects=False).headers["location"].endswith("/ui")

    # Walk the import graph from the page: every file exists, with the type a browser insists on.
    seen: set[str] = set()
    todo = referenced_files(page.text)
    assert {"console.css", "js/app.js"} <= todo
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        response = client.get(f"/ui/static/{name}")
        assert response.status_code == 200, name
        expected = "text/css" if name.endswith(".css") else "javascript"
        assert expected in response.headers["content-type"], (name, response.headers["content-type"])
        if name.endswith(".js"):
            todo |= referenced_files(response.text) - seen
    shipped = {str(p.relative_to(STATIC_DIR)) for p in STATIC_DIR.rglob("*") if p.suffix in (".js", ".css")}
    assert seen == shipped, "a shipped file is never loaded, or a loaded file is not shipped"


def test_console_loads_nothing_from_elsewhere() -> None:
    """Offline by construction: no absolute URL in any file, and the API is reached only under v1/."""
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"https?://", text), path
            assert "//cdn" not in text, path
    api_module = (STATIC_DIR / "js" / "api.js").read_text()
    assert "new URL(`v1/${path}`, document.baseURI)" in api_module
    fetches = [p for p in STATIC_DIR.rglob("*.js") if "fetch(" in p.read_text()]
    assert [p.name for p in fetches] == ["api.js"]  # one door to the server


def test_console_keeps_the_key_in_session_storage_only() -> None:
    scripts = "\n".join(p.read_text() for p in STATIC_DIR.rglob("*.js"))
    assert "localStorage" not in scripts
    assert "document.cookie" not in scripts
    assert 'headers["X-API-Key"] = key' in scripts


def test_console_can_be_turned_off(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, console_enabled=False))) as off:
        assert off.get("/ui").status_code == 404
        assert off.get("/ui/static/js/app.js").status_code == 404
        assert off.get("/healthz").status_code == 200


def test_console_is_open_but_the_api_it_calls_is_not(tmp_path: Path) -> None:
    """The page is static and public; with keys on, the data behind it needs X-API-Key."""
    with TestClient(create_app(make_settings(tmp_path, api_keys=["secret"]))) as keyed:
        assert keyed.get("/ui").status_code == 200
        assert keyed.get("/ui/static/js/api.js").status_code == 200
        assert keyed.get("/v1/collections").status_code == 401
        assert keyed.get("/v1/collections", headers={"X-API-Key": "secret"}).status_code == 200


def test_console_routes_stay_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]
    assert "/v1/collections/{collection}/faces/{face_id}/thumbnail" in paths


# ---------------------------------------------------------------------------------------- thumbnails


def test_enrollment_keeps_the_aligned_crop_as_a_small_jpeg(client: TestClient, lfw_image: LfwImage) -> None:
    photo = lfw_image("Tony_Blair", 3).read_bytes()
    assert client.post("/v1/collections", json={"name": "thumbs"}).status_code == 201
    body = enroll(client, "thumbs", "Tony_Blair", [photo])
    face_id = body["results"][0]["face_id"]
    response = client.get(f"/v1/collections/thumbs/faces/{face_id}/thumbnail")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert "private" in response.headers["cache-control"]
    assert 1_000 < len(response.content) < 10_000  # a few KB
    thumbnail = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)
    assert thumbnail.shape == (112, 112, 3)
    # It is the aligned face the embedder saw, not a resized photo: compare with the pipeline's crop.
    services = client.app.state.services  # type: ignore[attr-defined]
    faces = asyncio.run(services.engine.analyze(photo))
    crop = faces[0].crop.astype(np.float32)
    assert float(np.abs(thumbnail - crop).mean()) < 4.0
    other = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB").resize((112, 112)), dtype=np.float32)
    assert float(np.abs(thumbnail - other).mean()) > 20.0


def test_thumbnail_goes_with_its_face_and_subject(client: TestClient, lfw_image: LfwImage) -> None:
    photos = [lfw_image("Hugo_Chavez", n).read_bytes() for n in (1, 2)]
    assert client.post("/v1/collections", json={"name": "gone"}).status_code == 201
    ids = [r["face_id"] for r in enroll(client, "gone", "Hugo_Chavez", photos)["results"]]
    url = "/v1/collections/gone/faces/{}/thumbnail"
    assert all(client.get(url.format(i)).status_code == 200 for i in ids)

    assert client.delete(f"/v1/collections/gone/faces/{ids[0]}").status_code == 204
    missing = client.get(url.format(ids[0]))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["code"] == "face_not_found"
    assert client.get(url.format(ids[1])).status_code == 200

    assert client.delete("/v1/collections/gone/subjects/Hugo_Chavez").status_code == 204
    assert client.get(url.format(ids[1])).json()["code"] == "face_not_found"
    assert client.get(url.replace("gone", "nowhere").format(ids[1])).json()["code"] == "collection_not_found"
    # A face id that is not a UUID is refused at the edge, before any lookup.
    assert client.get(url.format("x")).json()["code"] == "validation_error"


def test_thumbnails_turned_off_are_neither_kept_nor_served(tmp_path: Path, lfw_image: LfwImage) -> None:
    photo = lfw_image("Serena_Williams", 1).read_bytes()
    with TestClient(create_app(make_settings(tmp_path, thumbnails_enabled=False))) as off:
        assert off.post("/v1/collections", json={"name": "private"}).status_code == 201
        face_id = enroll(off, "private", "serena", [photo])["results"][0]["face_id"]
        response = off.get(f"/v1/collections/private/faces/{face_id}/thumbnail")
        assert response.status_code == 404
        assert response.json()["code"] == "thumbnails_disabled"
        store = off.app.state.services.gallery.store  # type: ignore[attr-defined]
        with pytest.raises(ThumbnailNotFound):
            store.faces.get_thumbnail("private", face_id)
    # Turned back on: faces enrolled meanwhile have none (404 thumbnail_not_found), new ones do.
    with TestClient(create_app(make_settings(tmp_path))) as on:
        assert on.get(f"/v1/collections/private/faces/{face_id}/thumbnail").json()["code"] == (
            "thumbnail_not_found"
        )
        new_id = enroll(on, "private", "serena", [photo])["results"][0]["face_id"]
        assert on.get(f"/v1/collections/private/faces/{new_id}/thumbnail").status_code == 200


def test_thumbnail_respects_scoped_api_keys(tmp_path: Path, lfw_image: LfwImage) -> None:
    photo = lfw_image("Colin_Powell", 1).read_bytes()
    settings = make_settings(tmp_path, api_keys=["admin", "staff-key:staff"])
    admin = {"X-API-Key": "admin"}
    with TestClient(create_app(settings)) as keyed:
        for name in ("staff", "board"):
            assert keyed.post("/v1/collections", json={"name": name}, headers=admin).status_code == 201
        board_face = enroll(keyed, "board", "colin", [photo], headers=admin)["results"][0]["face_id"]
        staff_face = enroll(keyed, "staff", "colin", [photo], headers=admin)["results"][0]["face_id"]
        staff = {"X-API-Key": "staff-key"}
        allowed = keyed.get(f"/v1/collections/staff/faces/{staff_face}/thumbnail", headers=staff)
        assert allowed.status_code == 200
        denied = keyed.get(f"/v1/collections/board/faces/{board_face}/thumbnail", headers=staff)
        assert denied.status_code == 403
        assert keyed.get(f"/v1/collections/board/faces/{board_face}/thumbnail").status_code == 401
        # A face id of another collection is not reachable through an allowed one.
        crossed = keyed.get(f"/v1/collections/staff/faces/{board_face}/thumbnail", headers=staff)
        assert crossed.json()["code"] == "face_not_found"


# ---------------------------------------------------------------------------------------- subject search


def test_subjects_can_be_searched_by_id_prefix(client: TestClient) -> None:
    assert client.post("/v1/collections", json={"name": "search"}).status_code == 201
    for subject_id in ("alice", "Alina", "al_x", "alxy", "bob"):
        created = client.post("/v1/collections/search/subjects", json={"subject_id": subject_id})
        assert created.status_code == 201

    def ids(**params: Any) -> tuple[list[str], int]:
        page = client.get("/v1/collections/search/subjects", params=params).json()
        return [s["subject_id"] for s in page["items"]], page["total"]

    assert ids(id_prefix="ALI") == (["Alina", "alice"], 2)  # any case, id order
    assert ids(id_prefix="al_") == (["al_x"], 1)  # "_" is a character, not a LIKE wildcard
    assert ids(id_prefix="al%") == ([], 0)
    assert ids(id_prefix="al", limit=2, offset=2) == (["alice", "alxy"], 4)
    assert ids() == (["Alina", "al_x", "alice", "alxy", "bob"], 5)
