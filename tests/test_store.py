"""The store behaves the same on SQLite and PostgreSQL (same SQLAlchemy code, real servers)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    text,
)

from service.errors import CollectionExists, CollectionNotFound, FaceNotFound, SubjectExists, SubjectNotFound
from service.main import create_app
from service.settings import Settings
from service.storage.engine import make_engine
from service.storage.records import NewFace
from service.storage.schema import (
    MIGRATIONS,
    MigrationStep,
    faces_table,
    migrate,
    migrate_additive,
    subjects_table,
)
from service.storage.store import FaceStore
from service.testing.synthetic import bulk_insert_synthetic

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaceStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/faces.db"
    else:
        url = request.getfixturevalue("postgres_url")
    face_store = FaceStore.from_url(url)
    yield face_store
    face_store.close()


def face(seed: int, source_hash: str | None = None) -> NewFace:
    vector = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    vector /= np.linalg.norm(vector)
    return NewFace(
        embedding=vector, box=(1.0, 2.0, 3.0, 4.0), quality={"passed": True}, source_hash=source_hash
    )


def test_collections_subjects_faces_roundtrip(store: FaceStore) -> None:
    name = f"c{next(_names)}"
    coll = store.collections.create_collection(name, "desc")
    with pytest.raises(CollectionExists):
        store.collections.create_collection(name)
    store.subjects.create_subject(name, "alice", "Alice", {"team": "red"})
    with pytest.raises(SubjectExists):
        store.subjects.create_subject(name, "alice", None, {})
    with pytest.raises(SubjectNotFound):
        store.faces.add_faces(name, "bob", [face(1)], create_subject=False)

    records = store.faces.add_faces(name, "alice", [face(1, "h1"), face(2, "h2")], create_subject=False)
    store.faces.add_faces(name, "bob", [face(3)], create_subject=True)
    assert [r.source_hash for r in store.faces.list_faces(name, "alice")] == ["h1", "h2"]
    assert store.faces.get_face(name, records[0].face_id).box == (1.0, 2.0, 3.0, 4.0)
    face_ids, vectors = store.faces.subject_embeddings(name, "alice")
    assert face_ids == [r.face_id for r in records]
    np.testing.assert_array_equal(vectors[1], face(2).embedding)

    listed = store.collections.get_collection(name)
    assert (listed.subject_count, listed.face_count, listed.revision) == (2, 3, 2)
    streamed = list(store.faces.iter_embeddings(coll.pk, batch_size=2))
    assert [len(pks) for pks, _ in streamed] == [2, 1]
    assert store.faces.faces_by_pk([r.pk for r in records]) == {r.pk: (r.face_id, "alice") for r in records}

    updated = store.subjects.update_subject(name, "alice", {"metadata": {"team": "blue"}})
    assert (updated.name, updated.metadata, updated.face_count) == ("Alice", {"team": "blue"}, 2)
    subjects, total = store.subjects.list_subjects(name, offset=1, limit=5)
    assert total == 2
    assert [s.subject_id for s in subjects] == ["bob"]

    removed = store.faces.delete_face(name, records[0].face_id)
    assert removed.pk == records[0].pk
    with pytest.raises(FaceNotFound):
        store.faces.get_face(name, records[0].face_id)
    coll_pk, face_pks = store.subjects.delete_subject(name, "alice")
    assert (coll_pk, face_pks) == (coll.pk, [records[1].pk])
    assert store.faces.face_count(coll.pk) == 1
    store.collections.delete_collection(name)
    with pytest.raises(CollectionNotFound):
        store.collections.get_collection(name)


def test_pks_are_never_reused(store: FaceStore) -> None:
    """A deleted face's id must not come back: it is also the FAISS id."""
    name = f"c{next(_names)}"
    store.collections.create_collection(name)
    first = store.faces.add_faces(name, "s", [face(1)], create_subject=True)[0]
    store.faces.delete_face(name, first.face_id)
    second = store.faces.add_faces(name, "s", [face(2)], create_subject=False)[0]
    assert second.pk > first.pk


def test_service_runs_on_postgresql(postgres_url: str, tmp_path: Path, lfw_image: object) -> None:
    settings = Settings(database_url=postgres_url, index_dir=tmp_path / "index")
    photo = lfw_image("Serena_Williams", 1).read_bytes()  # type: ignore[operator]
    probe = lfw_image("Serena_Williams", 7).read_bytes()  # type: ignore[operator]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/collections", json={"name": "pg"}).status_code == 201
        enrolled = client.post(
            "/v1/collections/pg/subjects/serena/faces",
            params={"create_subject": "true"},
            files={"images": ("s.jpg", photo, "image/jpeg")},
        )
        assert enrolled.status_code == 201, enrolled.text
    with TestClient(create_app(settings)) as client:  # restart: index comes back from PostgreSQL
        assert client.get("/readyz").json()["checks"]["index"] == "in_sync"
        match = client.post("/v1/collections/pg/identify", files={"image": probe}).json()["faces"][0]["match"]
        assert match["subject_id"] == "serena"


# -- schema upgrade of databases created before per-collection thresholds ----------------------


def old_schema() -> MetaData:
    """The tables as the first release created them: collections without the threshold columns."""
    old = MetaData()
    id_type = BigInteger().with_variant(Integer(), "sqlite")
    Table(
        "collections",
        old,
        Column("pk", id_type, primary_key=True, autoincrement=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("description", String(1024), nullable=False, default=""),
        Column("revision", BigInteger, nullable=False, default=0),
        Column("created_at", DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    subjects_table.to_metadata(old)
    faces_table.to_metadata(old)
    return old


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a database with nothing in it (a fresh PostgreSQL database on the test server)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    server = request.getfixturevalue("postgres_url")
    name = f"old_schema_{next(_names)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    yield server.rsplit("/", 1)[0] + f"/{name}"


def test_old_database_gains_the_threshold_columns(empty_database: str) -> None:
    engine = make_engine(empty_database)
    old_schema().create_all(engine)
    with engine.begin() as conn:  # a collection, a subject and a face written by the old release
        conn.execute(
            text(
                "INSERT INTO collections (name, description, revision, created_at) "
                "VALUES ('legacy', 'x', 1, :t)"
            ),
            {"t": datetime.now(UTC)},
        )
    engine.dispose()
    store = FaceStore.from_url(empty_database)
    try:
        store.faces.add_faces("legacy", "alice", [face(1)], create_subject=True)
        record = store.collections.get_collection("legacy")
        assert (record.description, record.face_count, record.own_threshold) == ("x", 1, None)
        updated = store.collections.update_collection(
            "legacy", {"identify_threshold": 0.9}, threshold_source="calibration"
        )
        assert updated.own_threshold is not None
        assert (updated.own_threshold.value, updated.own_threshold.source) == (0.9, "calibration")
        assert updated.own_threshold.set_at is not None
        assert store.collections.collection_lookup("legacy").own_threshold == updated.own_threshold
    finally:
        store.close()
    again = FaceStore.from_url(empty_database)  # idempotent: nothing left to add, data intact
    try:
        assert migrate_additive(make_engine(empty_database)) == []
        kept = again.collections.get_collection("legacy").own_threshold
        assert kept is not None
        assert kept.value == 0.9
    finally:
        again.close()


def test_upgrade_refuses_what_it_cannot_add(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/odd.db"
    engine = make_engine(url)
    odd = old_schema()
    odd.remove(odd.tables["faces"])
    Table("faces", odd, Column("pk", Integer, primary_key=True))  # lacks NOT NULL columns
    odd.create_all(engine)
    with pytest.raises(RuntimeError, match="migrate the database by hand"):
        migrate_additive(engine)
    engine.dispose()


def test_migrations_run_in_order_after_the_missing_tables_and_log_only_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/steps.db")
    old_schema().create_all(engine)  # no threshold columns, no face_thumbnails / vector_writes tables
    ran: list[tuple[str, bool]] = []

    def quiet(e: Engine) -> str | None:
        ran.append(("quiet", "vector_writes" in inspect(e).get_table_names()))
        return None

    def loud(e: Engine) -> str | None:
        ran.append(
            ("loud", "identify_threshold" in {c["name"] for c in inspect(e).get_columns("collections")})
        )
        return "did something"

    steps = (*MIGRATIONS, MigrationStep("quiet", quiet), MigrationStep("loud", loud))
    with caplog.at_level(logging.INFO, logger="service.storage.schema"):
        changes = migrate(engine, steps)
    added = ", ".join(
        [f"collections.identify_threshold{end}" for end in ("", "_source", "_set_at")]
        + ["collections.subject_count", "collections.face_count"]
    )
    assert changes == [("additive-columns", f"added columns {added}"), ("loud", "did something")]
    assert ran == [("quiet", True), ("loud", True)]  # in order, after the tables and the columns
    assert "store schema upgraded (loud): did something" in caplog.text
    assert "(quiet)" not in caplog.text
    assert migrate(engine) == []  # every start-up runs them again: nothing left to change
    engine.dispose()


def test_collection_threshold_roundtrip(store: FaceStore) -> None:
    name = f"c{next(_names)}"
    created = store.collections.create_collection(name, "", identify_threshold=1.05)
    assert created.own_threshold is not None
    assert (created.own_threshold.value, created.own_threshold.source) == (1.05, "collection")
    assert created.own_threshold.set_at is not None
    kept = store.collections.update_collection(name, {"description": "new"})
    assert (kept.description, kept.own_threshold) == ("new", created.own_threshold)
    cleared = store.collections.update_collection(name, {"identify_threshold": None})
    assert cleared.own_threshold is None  # value, source and date all cleared
    with pytest.raises(CollectionNotFound):
        store.collections.update_collection("missing-one", {"identify_threshold": 1.0})


def _counted(store: FaceStore, name: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(subjects, faces) as identify's lookup, the collection record and a COUNT over the tables see them."""
    lookup = store.collections.collection_lookup(name)
    record = store.collections.get_collection(name)
    with store.engine.connect() as conn:

        def count(table: str) -> int:
            query = text(f"SELECT count(*) FROM {table} WHERE collection_pk = :pk")
            return int(conn.execute(query, {"pk": lookup.pk}).scalar_one())

        counted = (count("subjects"), count("faces"))
    return (lookup.subject_count, lookup.face_count), (record.subject_count, record.face_count), counted


def test_counters_follow_every_subject_and_face_write(store: FaceStore) -> None:
    name, other = f"c{next(_names)}", f"c{next(_names)}"
    store.collections.create_collection(name)
    store.collections.create_collection(other)
    assert _counted(store, name) == ((0, 0),) * 3
    for i in range(3):
        store.subjects.create_subject(name, f"s{i}", None, {})
    assert _counted(store, name) == ((3, 0),) * 3
    store.faces.add_faces(name, "new", [face(1)], create_subject=True)  # enrolment creates one
    store.faces.add_faces(name, "s0", [face(2), face(3)], create_subject=False)  # faces, no subject
    assert _counted(store, name) == ((4, 3),) * 3
    with pytest.raises(SubjectExists):
        store.subjects.create_subject(name, "s1", None, {})
    with pytest.raises(SubjectNotFound):
        store.faces.add_faces(name, "ghost", [face(4)], create_subject=False)
    with pytest.raises(SubjectNotFound):
        store.subjects.delete_subject(name, "ghost")
    assert _counted(store, name) == ((4, 3),) * 3  # refused writes leave them alone
    new_face = store.faces.list_faces(name, "new")[0]
    store.faces.delete_face(name, new_face.face_id)
    assert _counted(store, name) == ((4, 2),) * 3
    store.subjects.delete_subject(name, "s0")  # with its two faces
    store.subjects.delete_subject(name, "s2")  # without any
    assert _counted(store, name) == ((2, 0),) * 3
    vectors = np.stack([face(10 + i).embedding for i in range(6)])
    bulk_insert_synthetic(store, name, "bulk-", vectors, faces_per_subject=2)
    assert _counted(store, name) == ((5, 6),) * 3
    assert _counted(store, other) == ((0, 0),) * 3  # another collection's counters are its own


def test_subject_counts_are_filled_in_and_repaired_at_start_up(empty_database: str) -> None:
    engine = make_engine(empty_database)
    old_schema().create_all(engine)
    with engine.begin() as conn:  # a collection with two subjects, written by a release before the counter
        conn.execute(
            text(
                "INSERT INTO collections (name, description, revision, created_at) VALUES ('old', '', 0, :t)"
            ),
            {"t": datetime.now(UTC)},
        )
        for subject in ("a", "b"):
            conn.execute(
                text(
                    "INSERT INTO subjects (collection_pk, subject_id, meta, created_at) "
                    "VALUES ((SELECT pk FROM collections WHERE name = 'old'), :s, '{}', :t)"
                ),
                {"s": subject, "t": datetime.now(UTC)},
            )
    engine.dispose()
    store = FaceStore.from_url(empty_database)  # adds the columns and counts
    try:
        assert _counted(store, "old") == ((2, 0),) * 3
        store.faces.add_faces("old", "c", [face(1)], create_subject=True)
        assert _counted(store, "old") == ((3, 1),) * 3
        with store.engine.begin() as conn:  # a row left uncounted (NULL): readers count instead
            conn.execute(text("UPDATE collections SET subject_count = NULL, face_count = NULL"))
        assert _counted(store, "old") == ((3, 1),) * 3
        with store.engine.begin() as conn:  # and counters gone wrong
            conn.execute(text("UPDATE collections SET subject_count = 7, face_count = 9"))
    finally:
        store.close()
    again = FaceStore.from_url(empty_database)  # the start-up step repairs them
    try:
        assert _counted(again, "old") == ((3, 1),) * 3
        assert migrate(again.engine) == []  # nothing left to repair
    finally:
        again.close()
