"""A vector-engine outage, with a fault-injecting engine around the real FAISS index, over HTTP on
real LFW photos: writes are acknowledged as stored (never "503 but stored"), blind retries with an
Idempotency-Key never duplicate, deletes answer what they did, and the stored writes reach the
engine as soon as it answers again. (The same against a real Milvus server: test_milvus_server.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray

from service.api.deps import Services
from service.errors import VectorEngineUnavailable
from service.index.base import ReconcileReport, SearchHits, VectorIndex
from service.main import create_app
from service.settings import Settings

LfwImage = Callable[[str, int], Path]


class FlakyEngine:
    """A ``VectorIndex`` that forwards to a real one, or fails every call while ``down``."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.down = False
        self.calls_while_down = 0

    def _check(self) -> None:
        if self.down:
            self.calls_while_down += 1
            raise VectorEngineUnavailable("The vector engine did not answer (injected).")

    @property
    def engine(self) -> str:
        return self.inner.engine

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def max_k(self) -> int:
        return self.inner.max_k

    @property
    def tracks_writes(self) -> bool:
        return self.inner.tracks_writes

    def load_all(self, collection_pks: Sequence[int]) -> None:
        self._check()
        self.inner.load_all(collection_pks)

    def create(self, collection_pk: int) -> None:
        self._check()
        self.inner.create(collection_pk)

    def drop(self, collection_pk: int) -> None:
        self._check()
        self.inner.drop(collection_pk)

    def add(self, collection_pk: int, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> int:
        self._check()
        return self.inner.add(collection_pk, ids, vectors)

    def remove(self, collection_pk: int, ids: NDArray[np.int64]) -> None:
        self._check()
        self.inner.remove(collection_pk, ids)

    def search(
        self, collection_pk: int, queries: NDArray[np.float32], k: int, *, visible_after: int = 0
    ) -> SearchHits:
        self._check()
        return self.inner.search(collection_pk, queries, k, visible_after=visible_after)

    def sizes(self, collection_pks: Sequence[int]) -> dict[int, int]:
        self._check()
        return self.inner.sizes(collection_pks)

    def out_of_sync(self, collection_pks: Sequence[int]) -> list[int]:
        self._check()
        return self.inner.out_of_sync(collection_pks)

    def reconcile(
        self, collection_pks: Sequence[int], *, full: bool = False, suspects: Sequence[int] = ()
    ) -> ReconcileReport:
        self._check()
        return self.inner.reconcile(collection_pks, full=full, suspects=suspects)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[TestClient, FlakyEngine]]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/faces.db",
        index_dir=tmp_path / "index",
        index_retry_interval_s=0.1,
        index_reconcile_interval_s=0,  # only the pending-write push may repair: that is under test
    )
    with TestClient(create_app(settings)) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        flaky = FlakyEngine(services.gallery.indexes)
        services.gallery.indexes = flaky
        yield client, flaky


def enroll(client: TestClient, person: str, photo: bytes, key: str | None = None) -> Any:
    return client.post(
        f"/v1/collections/office/subjects/{person}/faces",
        params={"create_subject": "true", "face_selection": "largest"},
        files={"images": (f"{person}.jpg", photo, "image/jpeg")},
        headers={"Idempotency-Key": key} if key else {},
    )


def identify(client: TestClient, photo: bytes) -> Any:
    return client.post("/v1/collections/office/identify", files={"image": ("p.jpg", photo, "image/jpeg")})


def test_writes_during_an_outage_are_stored_and_pushed_when_the_engine_is_back(
    outage: tuple[TestClient, FlakyEngine], lfw_image: LfwImage
) -> None:
    client, engine = outage
    assert client.post("/v1/collections", json={"name": "office"}).status_code == 201
    assert enroll(client, "Colin_Powell", lfw_image("Colin_Powell", 1).read_bytes()).status_code == 201
    assert enroll(client, "Tony_Blair", lfw_image("Tony_Blair", 1).read_bytes()).status_code == 201

    engine.down = True
    photo = lfw_image("Serena_Williams", 1).read_bytes()
    first = enroll(client, "Serena_Williams", photo, key="serena-1")
    assert first.status_code == 201, first.text  # stored: acknowledged, with its face id
    assert first.json()["searchable"] is False
    face_id = first.json()["results"][0]["face_id"]
    assert face_id
    for _ in range(2):  # what every HTTP client does after an error: here, nothing new is stored
        retry = enroll(client, "Serena_Williams", photo, key="serena-1")
        assert retry.status_code == 201
        assert retry.json() == first.json()
    faces = client.get("/v1/collections/office/subjects/Serena_Williams/faces").json()["faces"]
    assert [f["face_id"] for f in faces] == [face_id]

    deleted = client.delete("/v1/collections/office/subjects/Tony_Blair")
    assert deleted.status_code == 200, deleted.text  # done in the store, said so: not a 503
    assert deleted.json()["deleted"] == "subject"
    assert deleted.json()["index_pending"] is True
    assert client.get("/v1/collections/office/subjects/Tony_Blair").status_code == 404

    busy = identify(client, lfw_image("Serena_Williams", 2).read_bytes())
    assert busy.status_code == 503
    assert busy.json()["code"] == "index_unavailable"
    assert int(busy.headers["Retry-After"]) >= 1
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["index_pending_writes"] == 2  # one face in, one subject (1 face) out

    engine.down = False  # back: pushed by the pending-write loop, well before any periodic pass
    started = time.monotonic()
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() - started < 5, client.get("/readyz").json()
        time.sleep(0.05)
    assert client.get("/readyz").json()["checks"]["index_pending_writes"] == 0
    match = identify(client, lfw_image("Serena_Williams", 2).read_bytes()).json()["faces"][0]["match"]
    assert match is not None
    assert match["subject_id"] == "Serena_Williams"
    assert match["face_id"] == face_id
    gone = identify(client, lfw_image("Tony_Blair", 2).read_bytes()).json()["faces"][0]["match"]
    assert gone is None or gone["subject_id"] != "Tony_Blair"
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    pk = services.gallery.store.collections.collection_pk("office")
    assert engine.inner.sizes([pk]) == {pk: 2}  # Colin Powell and Serena Williams: once each


def test_face_and_collection_deletes_during_an_outage(
    outage: tuple[TestClient, FlakyEngine], lfw_image: LfwImage
) -> None:
    client, engine = outage
    assert client.post("/v1/collections", json={"name": "office"}).status_code == 201
    enrolled = enroll(client, "Colin_Powell", lfw_image("Colin_Powell", 1).read_bytes())
    face_id = enrolled.json()["results"][0]["face_id"]
    engine.down = True
    deleted = client.delete(f"/v1/collections/office/faces/{face_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] == "face"
    assert client.get(f"/v1/collections/office/faces/{face_id}").status_code == 404
    dropped = client.delete("/v1/collections/office")
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["deleted"] == "collection"
    assert client.get("/v1/collections/office").status_code == 404
    engine.down = False
    started = time.monotonic()
    while client.get("/readyz").json()["checks"]["index_pending_writes"] != 0:
        assert time.monotonic() - started < 5
        time.sleep(0.05)
    assert client.get("/readyz").status_code == 200
    # And with the engine up, deletes are 204 again.
    assert client.post("/v1/collections", json={"name": "office"}).status_code == 201
    face_id = enroll(client, "Colin_Powell", lfw_image("Colin_Powell", 1).read_bytes()).json()["results"][0]
    assert client.delete(f"/v1/collections/office/faces/{face_id['face_id']}").status_code == 204
