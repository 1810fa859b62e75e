"""Face thumbnails in the store, on SQLite and PostgreSQL: kept with the face in one transaction,
gone with the face, its subject or its collection, and added to databases made before they existed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from service.errors import FaceNotFound, ThumbnailNotFound
from service.storage.engine import make_engine
from service.storage.records import NewFace
from service.storage.schema import (
    collections_table,
    face_thumbnails_table,
    faces_table,
    metadata_obj,
    subjects_table,
)
from service.storage.store import FaceStore
from tests.postgres import pg_bin, postgres_server

_names = itertools.count()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries are not installed")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/faces.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def face(seed: int, thumbnail: bytes | None) -> NewFace:
    vector = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    vector /= np.linalg.norm(vector)
    return NewFace(embedding=vector, box=(1.0, 2.0, 3.0, 4.0), quality={}, thumbnail=thumbnail)


def thumbnail_rows(store: FaceStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(face_thumbnails_table)).scalar_one())


def test_thumbnails_live_and_die_with_their_faces(database_url: str) -> None:
    store = FaceStore.from_url(database_url)
    name = f"t{next(_names)}"
    try:
        store.collections.create_collection(name)
        before = thumbnail_rows(store)
        a1, _a2 = store.faces.add_faces(
            name, "a", [face(1, b"jpeg-a1"), face(2, b"jpeg-a2")], create_subject=True
        )
        (b1,) = store.faces.add_faces(name, "b", [face(3, b"jpeg-b1")], create_subject=True)
        (c1,) = store.faces.add_faces(name, "c", [face(4, None)], create_subject=True)
        assert thumbnail_rows(store) == before + 3
        assert store.faces.get_thumbnail(name, a1.face_id) == b"jpeg-a1"
        with pytest.raises(ThumbnailNotFound):
            store.faces.get_thumbnail(name, c1.face_id)
        with pytest.raises(FaceNotFound):
            store.faces.get_thumbnail(name, "no-such-face")

        store.faces.delete_face(name, a1.face_id)
        assert thumbnail_rows(store) == before + 2
        with pytest.raises(FaceNotFound):
            store.faces.get_thumbnail(name, a1.face_id)
        store.subjects.delete_subject(name, "a")
        assert thumbnail_rows(store) == before + 1
        assert store.faces.get_thumbnail(name, b1.face_id) == b"jpeg-b1"
        store.collections.delete_collection(name)
        assert thumbnail_rows(store) == before
    finally:
        store.close()


def test_a_database_from_before_thumbnails_gets_the_table(database_url: str) -> None:
    """No migration tool: create_all adds the missing table; old faces simply have no thumbnail."""
    engine = make_engine(database_url)
    face_thumbnails_table.drop(engine, checkfirst=True)  # as a database made by an older release
    metadata_obj.create_all(engine, tables=[collections_table, subjects_table, faces_table])
    old = FaceStore(engine)
    name = f"t{next(_names)}"
    old.collections.create_collection(name)
    (before,) = old.faces.add_faces(name, "s", [face(1, None)], create_subject=True)
    engine.dispose()

    store = FaceStore.from_url(database_url)  # what the service does at start-up
    try:
        (after,) = store.faces.add_faces(name, "s", [face(2, b"jpeg")], create_subject=False)
        assert store.faces.get_thumbnail(name, after.face_id) == b"jpeg"
        with pytest.raises(ThumbnailNotFound):
            store.faces.get_thumbnail(name, before.face_id)
        store.collections.delete_collection(name)
    finally:
        store.close()
