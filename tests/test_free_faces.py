"""Free-standing faces (Rekognition's faces without a user) in the store, and the migration that makes
``faces.subject_pk`` nullable on a database created before them, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    inspect,
    select,
)

from service.storage.engine import make_engine
from service.storage.records import NewFace
from service.storage.schema import face_thumbnails_table, metadata_obj, migrate, subjects_table
from service.storage.store import FaceStore
from tests.postgres import store_url

_Id = BigInteger().with_variant(Integer(), "sqlite")


def old_schema() -> MetaData:
    """The tables as they were before free-standing faces: ``faces.subject_pk NOT NULL``, no
    external_image_id / image_id (the other tables as they are now)."""
    old = MetaData()
    for table in metadata_obj.sorted_tables:
        if table.name != "faces":
            table.to_metadata(old)
    Table(
        "faces",
        old,
        Column("pk", _Id, primary_key=True, autoincrement=True),
        Column("face_id", String(36), nullable=False, unique=True),
        Column("collection_pk", _Id, ForeignKey("collections.pk", ondelete="CASCADE"), nullable=False),
        Column("subject_pk", _Id, ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
        Column("embedding", LargeBinary, nullable=False),
        Column("box", JSON, nullable=False),
        Column("quality", JSON, nullable=False),
        Column("source_hash", String(64), nullable=True),
        Column("source_name", String(512), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Index("ix_faces_collection", "collection_pk", "pk"),
        Index("ix_faces_subject", "subject_pk"),
        sqlite_autoincrement=True,
    )
    return old


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return vector / np.linalg.norm(vector)


def new_face(seed: int, *, thumbnail: bytes | None = None, external: str | None = None) -> NewFace:
    return NewFace(
        embedding=unit(seed),
        box=(1.0, 2.0, 30.0, 40.0),
        quality={"detector_score": 0.9},
        thumbnail=thumbnail,
        external_image_id=external,
        image_id="00000000-0000-4000-8000-000000000000" if external else None,
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_old_database_is_migrated_in_place(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = store_url(kind, request, tmp_path)
    old = old_schema()
    old_engine = make_engine(url)
    old.create_all(old_engine)
    now = datetime.now(UTC)
    # An old release's data: a collection, a subject with two faces (one with a thumbnail), and the
    # newest face deleted again (its pk must never come back).
    with old_engine.begin() as conn:
        conn.execute(
            insert(old.tables["collections"]).values(
                pk=1, name="c", description="", revision=1, created_at=now
            )
        )
        conn.execute(
            insert(old.tables["subjects"]).values(
                pk=1, collection_pk=1, subject_id="alice", meta={}, created_at=now
            )
        )
        for pk in (1, 2):
            conn.execute(
                insert(old.tables["faces"]).values(
                    face_id=f"00000000-0000-4000-8000-00000000000{pk}",
                    collection_pk=1,
                    subject_pk=1,
                    embedding=unit(pk).tobytes(),
                    box=[1.0, 2.0, 30.0, 40.0],
                    quality={},
                    created_at=now,
                )
            )
        conn.execute(insert(old.tables["face_thumbnails"]).values(face_pk=1, jpeg=b"jpeg-1"))
        conn.execute(delete(old.tables["faces"]).where(old.tables["faces"].c.pk == 2))
    assert not {c["name"]: c for c in inspect(old_engine).get_columns("faces")}["subject_pk"]["nullable"]
    old_engine.dispose()

    store = FaceStore.from_url(url)  # the start-up migrations
    try:
        columns = {c["name"]: c for c in inspect(store.engine).get_columns("faces")}
        assert columns["subject_pk"]["nullable"]
        assert {"external_image_id", "image_id"} <= set(columns)
        (survivor,) = store.faces.list_faces("c", "alice")
        assert survivor.face_id == "00000000-0000-4000-8000-000000000001"
        assert store.faces.get_thumbnail("c", survivor.face_id) == b"jpeg-1"
        loose = store.faces.add_faces("c", None, [new_face(3, external="img-3")], create_subject=False)
        assert loose[0].pk > 2  # the AUTOINCREMENT sequence survived the rebuild
        assert loose[0].subject_id is None
        assert store.faces.get_face("c", loose[0].face_id).external_image_id == "img-3"
        # Foreign keys still hold: a subject's deletion takes its faces and their thumbnails.
        store.subjects.delete_subject("c", "alice")
        with store.engine.connect() as conn:
            assert conn.execute(select(face_thumbnails_table.c.face_pk)).all() == []
            assert conn.execute(select(subjects_table.c.pk)).all() == []
        assert [f.face_id for f in store.faces.faces_page("c", after_pk=0, limit=10)] == [loose[0].face_id]
        # Idempotent: a second start-up changes nothing.
        assert migrate(store.engine) == []
    finally:
        store.close()


def test_users_are_subjects_face_by_face(tmp_path: Path) -> None:
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    try:
        store.collections.create_collection("c")
        loose = store.faces.add_faces(
            "c", None, [new_face(i, external=f"e{i}") for i in range(4)], create_subject=False
        )
        ids = [f.face_id for f in loose]
        store.subjects.create_subject("c", "bob", None, {})
        store.subjects.create_subject("c", "eve", None, {})
        assert store.faces.set_faces_subject("c", ids[:2], "bob") == ids[:2]
        assert store.faces.set_faces_subject("c", ids[1:3], "eve") == [ids[2]]  # ids[1] is bob's
        assert [f.face_id for f in store.faces.list_faces("c", "bob")] == ids[:2]
        # Free-standing faces are no subject's: calibration's stream leaves them out.
        pk = store.collections.collection_pk("c")
        labels = np.concatenate([lab for lab, _ in store.faces.iter_subject_embeddings(pk)])
        assert len(labels) == 3
        # DeleteFaces refuses a user's faces; the free one goes.
        _coll, deleted = store.faces.delete_free_faces("c", [ids[0], ids[3]])
        assert [f.face_id for f in deleted] == [ids[3]]
        # DeleteUser keeps the faces, free-standing.
        store.subjects.release_subject("c", "bob")
        faces = store.faces.faces_by_id("c", ids[:2])
        assert {f.subject_id for f in faces.values()} == {None}
        assert store.faces.set_faces_subject("c", ids[2:3], None, only_of="eve") == [ids[2]]
        page = store.faces.faces_page("c", after_pk=0, limit=2)
        rest = store.faces.faces_page("c", after_pk=page[-1].pk, limit=2)
        assert [f.face_id for f in page + rest] == ids[:3]
    finally:
        store.close()
