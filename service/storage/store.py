"""The durable store: the source of truth every index is rebuilt from.

SQLite (WAL, synchronous=FULL) by default, PostgreSQL through the same SQLAlchemy Core code.
Every write is one transaction; a face row carries its embedding, so a face is either fully
enrolled or absent, whatever moment the process dies at.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.schema import CreateIndex, CreateTable

from service.errors import (
    CollectionExists,
    CollectionNotFound,
    FaceNotFound,
    SubjectExists,
    SubjectNotFound,
    ThumbnailNotFound,
)
from service.storage.records import CollectionLookup, CollectionRecord, FaceRecord, NewFace, SubjectRecord

logger = logging.getLogger(__name__)

metadata_obj = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")

collections_table = Table(
    "collections",
    metadata_obj,
    Column("pk", _Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("description", String(1024), nullable=False, default=""),
    Column("revision", BigInteger, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The collection's own identify threshold (None: the service default), where it came from
    # ("collection": set by a client, "calibration": by POST .../calibrate) and when.
    # Added after the first release: ``migrate_additive`` adds them to older databases.
    Column("identify_threshold", Float, nullable=True),
    Column("identify_threshold_source", String(16), nullable=True),
    Column("identify_threshold_set_at", DateTime(timezone=True), nullable=True),
    sqlite_autoincrement=True,
)

subjects_table = Table(
    "subjects",
    metadata_obj,
    Column("pk", _Id, primary_key=True, autoincrement=True),
    Column("collection_pk", _Id, ForeignKey("collections.pk", ondelete="CASCADE"), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("name", String(256), nullable=True),
    Column("meta", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("collection_pk", "subject_id", name="uq_subject_per_collection"),
    sqlite_autoincrement=True,
)

faces_table = Table(
    "faces",
    metadata_obj,
    Column("pk", _Id, primary_key=True, autoincrement=True),
    Column("face_id", String(36), nullable=False, unique=True),
    Column("collection_pk", _Id, ForeignKey("collections.pk", ondelete="CASCADE"), nullable=False),
    # NULL: a free-standing face (indexed through the Rekognition-compatible API without a user):
    # stored, listed and searchable face by face, but no subject's (not an identify candidate).
    # Nullable since the Rekognition API; ``relax_face_subject`` upgrades older databases.
    Column("subject_pk", _Id, ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=True),
    Column("embedding", LargeBinary, nullable=False),
    Column("box", JSON, nullable=False),
    Column("quality", JSON, nullable=False),
    Column("source_hash", String(64), nullable=True),
    Column("source_name", String(512), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Rekognition's ExternalImageId (the client's name for the image) and ImageId (one per upload).
    Column("external_image_id", String(255), nullable=True),
    Column("image_id", String(36), nullable=True),
    Index("ix_faces_collection", "collection_pk", "pk"),
    Index("ix_faces_subject", "subject_pk"),
    # Never reuse a pk: FAISS ids and snapshots must not alias a deleted row.
    sqlite_autoincrement=True,
)

# A table of its own (not a column of `faces`): create_all adds a missing table to an existing
# database, never a missing column. Rows go with their face (ON DELETE CASCADE, also on SQLite,
# where make_engine turns foreign keys on).
face_thumbnails_table = Table(
    "face_thumbnails",
    metadata_obj,
    Column(
        "face_pk",
        _Id,
        ForeignKey("faces.pk", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("jpeg", LargeBinary, nullable=False),
)

# The vector engine's timestamp of the last acknowledged insert per collection (Milvus only): every
# replica searches "as of" it, which is read-your-writes across replicas without Strong's wait.
vector_writes_table = Table(
    "vector_writes",
    metadata_obj,
    Column("collection_pk", _Id, ForeignKey("collections.pk", ondelete="CASCADE"), primary_key=True),
    Column("engine_ts", BigInteger, nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite drops the zone; everything we stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets WAL, full fsync on commit and enforced foreign keys."""
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def relax_face_subject(engine: Engine) -> bool:
    """Make ``faces.subject_pk`` nullable on a database made before free-standing faces; True if changed.

    PostgreSQL alters the column in place. SQLite cannot drop NOT NULL: the table is rebuilt in one
    transaction (SQLite's documented procedure: foreign keys off so that dropping the old table
    cascades nowhere, copy, drop, rename, indexes back, foreign-key check, the AUTOINCREMENT
    sequence kept so that no face pk is ever reused). Idempotent.
    """
    columns = {c["name"]: c for c in inspect(engine).get_columns("faces")}
    if columns["subject_pk"]["nullable"]:
        return False
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE faces ALTER COLUMN subject_pk DROP NOT NULL"))
        return True
    ddl = str(CreateTable(faces_table).compile(dialect=engine.dialect)).strip()
    assert ddl.startswith("CREATE TABLE faces ")
    ddl = "CREATE TABLE faces__rebuild " + ddl[len("CREATE TABLE faces ") :]
    present = [c for c in faces_table.columns if c.name in columns]
    names = ", ".join(engine.dialect.identifier_preparer.format_column(c) for c in present)
    indexes = [str(CreateIndex(index).compile(dialect=engine.dialect)) for index in faces_table.indexes]
    with engine.connect() as conn:
        # The raw sqlite3 connection in autocommit mode, so that BEGIN/COMMIT are ours and the DDL is
        # inside the transaction (the driver would otherwise commit before each DDL statement).
        raw = conn.connection.driver_connection
        assert raw is not None
        level = raw.isolation_level
        raw.isolation_level = None
        try:
            raw.execute("PRAGMA foreign_keys=OFF")
            raw.execute("BEGIN IMMEDIATE")
            try:
                seq = raw.execute("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").fetchone()
                raw.execute(ddl)
                raw.execute(f"INSERT INTO faces__rebuild ({names}) SELECT {names} FROM faces")
                raw.execute("DROP TABLE faces")
                raw.execute("ALTER TABLE faces__rebuild RENAME TO faces")
                for statement in indexes:
                    raw.execute(statement)
                if seq is not None:
                    raw.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'faces'", (seq[0],))
                broken = raw.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"faces rebuild would break foreign keys: {broken[:5]}")
                raw.execute("COMMIT")
            except BaseException:
                raw.execute("ROLLBACK")
                raise
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
            raw.isolation_level = level
    return True


def migrate_additive(engine: Engine) -> list[str]:
    """Add the columns the code knows and the database lacks; returns ``table.column`` of each added.

    Only nullable columns without server defaults are added (the kind every later release adds), so
    the upgrade is safe on a live database and idempotent; anything else stops start-up with a clear
    error instead of serving from a schema the code does not understand. Two processes starting at
    once are fine: a column the other one added first is detected and skipped.
    """
    added: list[str] = []
    existing_tables = set(inspect(engine).get_table_names())
    for table in metadata_obj.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspect(engine).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.server_default is not None or column.primary_key:
                raise RuntimeError(
                    f"The database's table {table.name!r} lacks column {column.name!r}, which cannot be "
                    "added automatically; migrate the database by hand."
                )
            preparer = engine.dialect.identifier_preparer
            ddl = (
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
                f"{preparer.format_column(column)} {column.type.compile(dialect=engine.dialect)}"
            )
            try:
                with engine.begin() as conn:
                    conn.execute(text(ddl))
            except DBAPIError:
                again = {c["name"] for c in inspect(engine).get_columns(table.name)}
                if column.name not in again:
                    raise
                continue  # another process added it first
            added.append(f"{table.name}.{column.name}")
    return added


class FaceStore:
    """Collections, subjects and faces (with embeddings), one transaction per write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str) -> FaceStore:
        store = cls(make_engine(url))
        store.create_schema()
        return store

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def create_schema(self) -> None:
        metadata_obj.create_all(self._engine)
        added = migrate_additive(self._engine)
        if added:
            logger.info("store schema upgraded: added columns %s", ", ".join(added))
        if relax_face_subject(self._engine):
            logger.info("store schema upgraded: faces.subject_pk is nullable (free-standing faces)")

    def close(self) -> None:
        self._engine.dispose()

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(select(1))

    # -- collections -------------------------------------------------------------------------

    def create_collection(
        self, name: str, description: str = "", identify_threshold: float | None = None
    ) -> CollectionRecord:
        now = _now()
        own = (
            {
                "identify_threshold": identify_threshold,
                "identify_threshold_source": "collection",
                "identify_threshold_set_at": now,
            }
            if identify_threshold is not None
            else {}
        )
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(collections_table).values(
                        name=name, description=description, revision=0, created_at=now, **own
                    )
                )
        except IntegrityError as exc:
            raise CollectionExists(f"Collection '{name}' already exists.", collection=name) from exc
        return self.get_collection(name)

    def list_collections(self) -> list[CollectionRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(collections_table).order_by(collections_table.c.name)).all()
            return [self._collection_with_counts(conn, row) for row in rows]

    def get_collection(self, name: str) -> CollectionRecord:
        with self._engine.connect() as conn:
            return self._collection_with_counts(conn, self._collection_row(conn, name))

    def collection_pk(self, name: str) -> int:
        """The collection's key without its counts: the cheap existence check for hot paths."""
        return self.collection_lookup(name).pk

    def collection_lookup(self, name: str) -> CollectionLookup:
        """Key and own identify threshold in one indexed row read (no counts): identify's lookup."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    collections_table.c.pk,
                    collections_table.c.identify_threshold,
                    collections_table.c.identify_threshold_source,
                ).where(collections_table.c.name == name)
            ).first()
        if row is None:
            raise CollectionNotFound(f"Collection '{name}' not found.", collection=name)
        return CollectionLookup(
            int(row.pk),
            float(row.identify_threshold) if row.identify_threshold is not None else None,
            row.identify_threshold_source,
        )

    def update_collection(
        self, name: str, changes: dict[str, Any], *, threshold_source: str = "collection"
    ) -> CollectionRecord:
        """Change ``description`` and/or ``identify_threshold`` (None: back to the default)."""
        values: dict[str, Any] = {}
        if "description" in changes:
            values["description"] = changes["description"] or ""
        if "identify_threshold" in changes:
            value = changes["identify_threshold"]
            values["identify_threshold"] = value
            values["identify_threshold_source"] = threshold_source if value is not None else None
            values["identify_threshold_set_at"] = _now() if value is not None else None
        with self._engine.begin() as conn:
            row = self._collection_row(conn, name)
            if values:
                conn.execute(
                    update(collections_table).where(collections_table.c.pk == row.pk).values(**values)
                )
        return self.get_collection(name)

    def delete_collection(self, name: str) -> int:
        """Delete a collection with its subjects and faces; returns its primary key."""
        with self._engine.begin() as conn:
            row = self._collection_row(conn, name)
            conn.execute(delete(faces_table).where(faces_table.c.collection_pk == row.pk))
            conn.execute(delete(subjects_table).where(subjects_table.c.collection_pk == row.pk))
            conn.execute(delete(vector_writes_table).where(vector_writes_table.c.collection_pk == row.pk))
            conn.execute(delete(collections_table).where(collections_table.c.pk == row.pk))
            return int(row.pk)

    def collection_revision(self, collection_pk: int) -> int:
        with self._engine.connect() as conn:
            value = conn.execute(
                select(collections_table.c.revision).where(collections_table.c.pk == collection_pk)
            ).scalar_one()
            return int(value)

    def face_count(self, collection_pk: int) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(faces_table.c.collection_pk == collection_pk)
                ).scalar_one()
            )

    def record_vector_write(self, collection_pk: int, engine_ts: int) -> None:
        """Remember the engine timestamp of an acknowledged write (kept monotonic; replicas race)."""
        table = vector_writes_table
        for _ in range(3):
            with self._engine.begin() as conn:
                current = conn.execute(
                    select(table.c.engine_ts).where(table.c.collection_pk == collection_pk)
                ).scalar_one_or_none()
                if current is not None:
                    conn.execute(
                        update(table)
                        .where(table.c.collection_pk == collection_pk, table.c.engine_ts < engine_ts)
                        .values(engine_ts=engine_ts)
                    )
                    return
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(table).values(collection_pk=collection_pk, engine_ts=engine_ts))
                return
            except IntegrityError:  # another replica inserted it first (or the collection is gone)
                continue

    def vector_write_ts(self, collection_pk: int) -> int:
        """The engine timestamp a search must see (0: no write recorded)."""
        with self._engine.connect() as conn:
            value = conn.execute(
                select(vector_writes_table.c.engine_ts).where(
                    vector_writes_table.c.collection_pk == collection_pk
                )
            ).scalar_one_or_none()
        return int(value or 0)

    # -- subjects ----------------------------------------------------------------------------

    def create_subject(
        self, collection: str, subject_id: str, name: str | None, meta: dict[str, Any]
    ) -> SubjectRecord:
        try:
            with self._engine.begin() as conn:
                coll = self._collection_row(conn, collection)
                self._insert_subject(conn, int(coll.pk), subject_id, name, meta)
        except IntegrityError as exc:
            raise SubjectExists(
                f"Subject '{subject_id}' already exists in '{collection}'.", subject_id=subject_id
            ) from exc
        return self.get_subject(collection, subject_id)

    def list_subjects(
        self, collection: str, offset: int, limit: int, id_prefix: str | None = None
    ) -> tuple[list[SubjectRecord], int]:
        """A page of subjects in id order; ``id_prefix`` keeps those whose id starts with it (any case)."""
        with self._engine.connect() as conn:
            coll = self._collection_row(conn, collection)
            conditions = [subjects_table.c.collection_pk == coll.pk]
            if id_prefix:
                conditions.append(
                    func.lower(subjects_table.c.subject_id).startswith(id_prefix.lower(), autoescape=True)
                )
            total = conn.execute(select(func.count()).where(*conditions)).scalar_one()
            rows = conn.execute(
                self._subjects_query()
                .where(*conditions)
                .order_by(subjects_table.c.subject_id)
                .offset(offset)
                .limit(limit)
            ).all()
            return [self._subject_record(row) for row in rows], int(total)

    def get_subject(self, collection: str, subject_id: str) -> SubjectRecord:
        with self._engine.connect() as conn:
            coll = self._collection_row(conn, collection)
            row = conn.execute(
                self._subjects_query().where(
                    subjects_table.c.collection_pk == coll.pk, subjects_table.c.subject_id == subject_id
                )
            ).first()
            if row is None:
                raise SubjectNotFound(f"Subject '{subject_id}' not found in '{collection}'.")
            return self._subject_record(row)

    def update_subject(self, collection: str, subject_id: str, changes: dict[str, Any]) -> SubjectRecord:
        values: dict[str, Any] = {}
        if "name" in changes:
            values["name"] = changes["name"]
        if "metadata" in changes:
            values["meta"] = changes["metadata"] or {}
        with self._engine.begin() as conn:
            subject_pk = self._subject_pk(conn, collection, subject_id)
            if values:
                conn.execute(update(subjects_table).where(subjects_table.c.pk == subject_pk).values(**values))
        return self.get_subject(collection, subject_id)

    def delete_subject(self, collection: str, subject_id: str) -> tuple[int, list[int]]:
        """Delete a subject and its faces; returns (collection pk, removed face pks)."""
        with self._engine.begin() as conn:
            coll = self._collection_row(conn, collection)
            subject_pk = self._subject_pk(conn, collection, subject_id, coll_pk=int(coll.pk))
            face_pks = [
                int(pk)
                for pk in conn.execute(
                    select(faces_table.c.pk).where(faces_table.c.subject_pk == subject_pk)
                ).scalars()
            ]
            conn.execute(delete(faces_table).where(faces_table.c.subject_pk == subject_pk))
            conn.execute(delete(subjects_table).where(subjects_table.c.pk == subject_pk))
            if face_pks:
                self._bump_revision(conn, int(coll.pk))
            return int(coll.pk), face_pks

    # -- faces -------------------------------------------------------------------------------

    def add_faces(
        self,
        collection: str,
        subject_id: str | None,
        faces: Sequence[NewFace],
        *,
        create_subject: bool,
    ) -> list[FaceRecord]:
        """Persist faces (and the subject when asked) in one transaction; ``subject_id`` None stores
        free-standing faces."""
        now = _now()
        with self._engine.begin() as conn:
            coll = self._collection_row(conn, collection)
            coll_pk = int(coll.pk)
            found = (
                conn.execute(
                    select(subjects_table.c.pk).where(
                        subjects_table.c.collection_pk == coll_pk, subjects_table.c.subject_id == subject_id
                    )
                ).scalar_one_or_none()
                if subject_id is not None
                else None
            )
            subject_pk: int | None
            if subject_id is None:
                subject_pk = None
            elif found is None:
                if not create_subject:
                    raise SubjectNotFound(
                        f"Subject '{subject_id}' not found in '{collection}' "
                        "(pass create_subject=true to create it).",
                    )
                subject_pk = self._insert_subject(conn, coll_pk, subject_id, None, {})
            else:
                subject_pk = int(found)
            records: list[FaceRecord] = []
            for face in faces:
                face_id = str(uuid.uuid4())
                embedding = np.ascontiguousarray(face.embedding, dtype=np.float32)
                result = conn.execute(
                    insert(faces_table).values(
                        face_id=face_id,
                        collection_pk=coll_pk,
                        subject_pk=subject_pk,
                        embedding=embedding.tobytes(),
                        box=list(face.box),
                        quality=face.quality,
                        source_hash=face.source_hash,
                        source_name=face.source_name,
                        created_at=now,
                        external_image_id=face.external_image_id,
                        image_id=face.image_id,
                    )
                )
                pk = result.inserted_primary_key
                assert pk is not None
                if face.thumbnail is not None:
                    conn.execute(
                        insert(face_thumbnails_table).values(face_pk=int(pk[0]), jpeg=face.thumbnail)
                    )
                records.append(
                    FaceRecord(
                        pk=int(pk[0]),
                        face_id=face_id,
                        collection_pk=coll_pk,
                        subject_pk=subject_pk,
                        subject_id=subject_id,
                        box=face.box,
                        quality=face.quality,
                        source_hash=face.source_hash,
                        source_name=face.source_name,
                        created_at=now,
                        embedding=embedding,
                        external_image_id=face.external_image_id,
                        image_id=face.image_id,
                    )
                )
            if records:
                self._bump_revision(conn, coll_pk)
            return records

    def list_faces(self, collection: str, subject_id: str) -> list[FaceRecord]:
        with self._engine.connect() as conn:
            subject_pk = self._subject_pk(conn, collection, subject_id)
            rows = conn.execute(
                self._faces_query(with_embedding=False)
                .where(faces_table.c.subject_pk == subject_pk)
                .order_by(faces_table.c.pk)
            ).all()
            return [self._face_record(row) for row in rows]

    def get_face(self, collection: str, face_id: str) -> FaceRecord:
        with self._engine.connect() as conn:
            coll = self._collection_row(conn, collection)
            row = conn.execute(
                self._faces_query(with_embedding=False).where(
                    faces_table.c.collection_pk == coll.pk, faces_table.c.face_id == face_id
                )
            ).first()
            if row is None:
                raise FaceNotFound(f"Face '{face_id}' not found in '{collection}'.")
            return self._face_record(row)

    def get_thumbnail(self, collection: str, face_id: str) -> bytes:
        """The face's stored JPEG crop; FaceNotFound / ThumbnailNotFound (enrolled without one)."""
        with self._engine.connect() as conn:
            coll = self._collection_row(conn, collection)
            row = conn.execute(
                select(faces_table.c.pk, face_thumbnails_table.c.jpeg)
                .outerjoin(face_thumbnails_table, face_thumbnails_table.c.face_pk == faces_table.c.pk)
                .where(faces_table.c.collection_pk == coll.pk, faces_table.c.face_id == face_id)
            ).first()
        if row is None:
            raise FaceNotFound(f"Face '{face_id}' not found in '{collection}'.")
        if row.jpeg is None:
            raise ThumbnailNotFound(f"Face '{face_id}' was enrolled without a thumbnail.")
        return bytes(row.jpeg)

    def delete_face(self, collection: str, face_id: str) -> FaceRecord:
        with self._engine.begin() as conn:
            coll = self._collection_row(conn, collection)
            row = conn.execute(
                self._faces_query(with_embedding=False).where(
                    faces_table.c.collection_pk == coll.pk, faces_table.c.face_id == face_id
                )
            ).first()
            if row is None:
                raise FaceNotFound(f"Face '{face_id}' not found in '{collection}'.")
            conn.execute(delete(faces_table).where(faces_table.c.pk == row.pk))
            self._bump_revision(conn, int(coll.pk))
            return self._face_record(row)

    def subject_embeddings(self, collection: str, subject_id: str) -> tuple[list[str], NDArray[np.float32]]:
        """The subject's face ids and their embeddings, row-aligned."""
        with self._engine.connect() as conn:
            subject_pk = self._subject_pk(conn, collection, subject_id)
            rows = conn.execute(
                select(faces_table.c.face_id, faces_table.c.embedding)
                .where(faces_table.c.subject_pk == subject_pk)
                .order_by(faces_table.c.pk)
            ).all()
        if not rows:
            return [], np.empty((0, 0), dtype=np.float32)
        vectors = np.stack([np.frombuffer(row.embedding, dtype=np.float32) for row in rows])
        return [str(row.face_id) for row in rows], np.ascontiguousarray(vectors)

    def faces_by_pk(self, pks: Sequence[int]) -> dict[int, tuple[str, str]]:
        """pk → (face_id, subject_id) for search hits."""
        if not pks:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(faces_table.c.pk, faces_table.c.face_id, subjects_table.c.subject_id)
                .join(subjects_table, subjects_table.c.pk == faces_table.c.subject_pk)
                .where(faces_table.c.pk.in_([int(pk) for pk in pks]))
            ).all()
        return {int(row.pk): (str(row.face_id), str(row.subject_id)) for row in rows}

    def iter_embeddings(
        self, collection_pk: int, batch_size: int = 50_000
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Stream (pks, vectors) of a collection in pk order, for index rebuilds."""
        return self._iter_vectors(collection_pk, faces_table.c.pk, batch_size)

    def iter_subject_embeddings(
        self, collection_pk: int, batch_size: int = 50_000
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Stream (owning subject pks, vectors) of a collection's subjects' faces in pk order, for
        calibration (free-standing faces belong to no subject and are left out)."""
        return self._iter_vectors(collection_pk, faces_table.c.subject_pk, batch_size, labelled_only=True)

    def _iter_vectors(
        self, collection_pk: int, label: Column[Any], batch_size: int, *, labelled_only: bool = False
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """(``label`` column, vectors) of a collection's faces in pk order, one keyset page at a time."""
        last = 0
        only = [label.is_not(None)] if labelled_only else []
        while True:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(faces_table.c.pk, label.label("label"), faces_table.c.embedding)
                    .where(faces_table.c.collection_pk == collection_pk, faces_table.c.pk > last, *only)
                    .order_by(faces_table.c.pk)
                    .limit(batch_size)
                ).all()
            if not rows:
                return
            labels = np.fromiter((row.label for row in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(row.embedding for row in rows), dtype=np.float32)
            yield labels, np.ascontiguousarray(vectors.reshape(len(rows), -1))
            last = int(rows[-1].pk)

    # -- faces, face by face (the Rekognition-compatible API) ----------------------------------

    def faces_page(
        self,
        collection: str,
        *,
        after_pk: int,
        limit: int,
        subject_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> list[FaceRecord]:
        """Faces of a collection in pk order after ``after_pk`` (keyset: each face once per walk),
        optionally only a subject's or only the given ids."""
        with self._engine.connect() as conn:
            coll = self._collection_row(conn, collection)
            query = self._faces_query(with_embedding=False).where(
                faces_table.c.collection_pk == coll.pk, faces_table.c.pk > after_pk
            )
            if subject_id is not None:
                query = query.where(
                    faces_table.c.subject_pk == self._subject_pk(conn, collection, subject_id)
                )
            if face_ids is not None:
                query = query.where(faces_table.c.face_id.in_(list(face_ids)))
            rows = conn.execute(query.order_by(faces_table.c.pk).limit(limit)).all()
        return [self._face_record(row) for row in rows]

    def faces_by_id(
        self, collection: str, face_ids: Sequence[str], *, with_embedding: bool = False
    ) -> dict[str, FaceRecord]:
        """face_id → face, for the ids that exist in the collection."""
        if not face_ids:
            return {}
        with self._engine.connect() as conn:
            coll = self._collection_row(conn, collection)
            rows = conn.execute(
                self._faces_query(with_embedding=with_embedding).where(
                    faces_table.c.collection_pk == coll.pk, faces_table.c.face_id.in_(list(face_ids))
                )
            ).all()
        return {str(row.face_id): self._face_record(row) for row in rows}

    def face_hits(self, pks: Sequence[int]) -> dict[int, FaceRecord]:
        """pk → face (subject or free-standing), for face-level search hits."""
        if not pks:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(
                self._faces_query(with_embedding=False).where(faces_table.c.pk.in_([int(pk) for pk in pks]))
            ).all()
        return {int(row.pk): self._face_record(row) for row in rows}

    def delete_free_faces(self, collection: str, face_ids: Sequence[str]) -> tuple[int, list[FaceRecord]]:
        """Delete the given faces that exist and belong to no subject (Rekognition's DeleteFaces
        refuses a user's faces); returns (collection pk, the deleted faces)."""
        with self._engine.begin() as conn:
            coll = self._collection_row(conn, collection)
            rows = conn.execute(
                self._faces_query(with_embedding=False).where(
                    faces_table.c.collection_pk == coll.pk,
                    faces_table.c.face_id.in_(list(face_ids)),
                    faces_table.c.subject_pk.is_(None),
                )
            ).all()
            pks = [int(row.pk) for row in rows]
            if pks:
                conn.execute(delete(faces_table).where(faces_table.c.pk.in_(pks)))
                self._bump_revision(conn, int(coll.pk))
            return int(coll.pk), [self._face_record(row) for row in rows]

    def set_faces_subject(
        self, collection: str, face_ids: Sequence[str], subject_id: str | None, *, only_of: str | None = None
    ) -> list[str]:
        """Put faces under ``subject_id`` (None: make them free-standing) in one transaction.

        Only faces that are free-standing or already the subject's (associate), or that belong to
        ``only_of`` (disassociate) change; returns the ids that did.
        """
        with self._engine.begin() as conn:
            coll = self._collection_row(conn, collection)
            target = self._subject_pk(conn, collection, subject_id, int(coll.pk)) if subject_id else None
            owner = self._subject_pk(conn, collection, only_of, int(coll.pk)) if only_of else None
            allowed = (
                faces_table.c.subject_pk == owner
                if owner is not None
                else (faces_table.c.subject_pk.is_(None) | (faces_table.c.subject_pk == target))
            )
            where = [
                faces_table.c.collection_pk == coll.pk,
                faces_table.c.face_id.in_(list(face_ids)),
                allowed,
            ]
            changed = [str(v) for v in conn.execute(select(faces_table.c.face_id).where(*where)).scalars()]
            if changed:
                conn.execute(update(faces_table).where(*where).values(subject_pk=target))
                self._bump_revision(conn, int(coll.pk))
            return changed

    def subjects_after(self, collection: str, after: str | None, limit: int) -> list[SubjectRecord]:
        """Subjects in id order after ``after`` (keyset: each subject once per walk)."""
        with self._engine.connect() as conn:
            coll = self._collection_row(conn, collection)
            conditions = [subjects_table.c.collection_pk == coll.pk]
            if after is not None:
                conditions.append(subjects_table.c.subject_id > after)
            rows = conn.execute(
                self._subjects_query().where(*conditions).order_by(subjects_table.c.subject_id).limit(limit)
            ).all()
        return [self._subject_record(row) for row in rows]

    def release_subject(self, collection: str, subject_id: str) -> None:
        """Delete a subject but keep its faces, free-standing (Rekognition's DeleteUser)."""
        with self._engine.begin() as conn:
            coll = self._collection_row(conn, collection)
            subject_pk = self._subject_pk(conn, collection, subject_id, coll_pk=int(coll.pk))
            conn.execute(
                update(faces_table).where(faces_table.c.subject_pk == subject_pk).values(subject_pk=None)
            )
            conn.execute(delete(subjects_table).where(subjects_table.c.pk == subject_pk))
            self._bump_revision(conn, int(coll.pk))

    def bulk_insert_synthetic(
        self, collection: str, subject_prefix: str, vectors: NDArray[np.float32], faces_per_subject: int
    ) -> int:
        """Load many vectors at once (benchmarks, migrations); returns how many were stored."""
        now = _now()
        with self._engine.begin() as conn:
            coll_pk = int(self._collection_row(conn, collection).pk)
            n_subjects = (len(vectors) + faces_per_subject - 1) // faces_per_subject
            start = conn.execute(select(func.coalesce(func.max(subjects_table.c.pk), 0))).scalar_one()
            conn.execute(
                insert(subjects_table),
                [
                    {
                        "pk": int(start) + 1 + i,
                        "collection_pk": coll_pk,
                        "subject_id": f"{subject_prefix}{i}",
                        "name": None,
                        "meta": {},
                        "created_at": now,
                    }
                    for i in range(n_subjects)
                ],
            )
            conn.execute(
                insert(faces_table),
                [
                    {
                        "face_id": str(uuid.uuid4()),
                        "collection_pk": coll_pk,
                        "subject_pk": int(start) + 1 + i // faces_per_subject,
                        "embedding": np.ascontiguousarray(vec, dtype=np.float32).tobytes(),
                        "box": [0.0, 0.0, 0.0, 0.0],
                        "quality": {},
                        "source_hash": None,
                        "source_name": None,
                        "created_at": now,
                    }
                    for i, vec in enumerate(vectors)
                ],
            )
            self._bump_revision(conn, coll_pk)
        return len(vectors)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _collection_row(conn: Connection, name: str) -> Row[Any]:
        row = conn.execute(select(collections_table).where(collections_table.c.name == name)).first()
        if row is None:
            raise CollectionNotFound(f"Collection '{name}' not found.", collection=name)
        return row

    @staticmethod
    def _collection_with_counts(conn: Connection, row: Row[Any]) -> CollectionRecord:
        subjects = conn.execute(
            select(func.count()).where(subjects_table.c.collection_pk == row.pk)
        ).scalar_one()
        faces = conn.execute(select(func.count()).where(faces_table.c.collection_pk == row.pk)).scalar_one()
        return CollectionRecord(
            pk=int(row.pk),
            name=str(row.name),
            description=str(row.description or ""),
            created_at=_aware(row.created_at),
            revision=int(row.revision),
            subject_count=int(subjects),
            face_count=int(faces),
            identify_threshold=float(row.identify_threshold) if row.identify_threshold is not None else None,
            identify_threshold_source=row.identify_threshold_source,
            identify_threshold_set_at=_aware(row.identify_threshold_set_at)
            if row.identify_threshold_set_at is not None
            else None,
        )

    def _subject_pk(
        self, conn: Connection, collection: str, subject_id: str, coll_pk: int | None = None
    ) -> int:
        if coll_pk is None:
            coll_pk = int(self._collection_row(conn, collection).pk)
        found = conn.execute(
            select(subjects_table.c.pk).where(
                subjects_table.c.collection_pk == coll_pk, subjects_table.c.subject_id == subject_id
            )
        ).scalar_one_or_none()
        if found is None:
            raise SubjectNotFound(f"Subject '{subject_id}' not found in '{collection}'.")
        return int(found)

    @staticmethod
    def _insert_subject(
        conn: Connection, coll_pk: int, subject_id: str, name: str | None, meta: dict[str, Any]
    ) -> int:
        result = conn.execute(
            insert(subjects_table).values(
                collection_pk=coll_pk, subject_id=subject_id, name=name, meta=meta, created_at=_now()
            )
        )
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    @staticmethod
    def _bump_revision(conn: Connection, coll_pk: int) -> None:
        conn.execute(
            update(collections_table)
            .where(collections_table.c.pk == coll_pk)
            .values(revision=collections_table.c.revision + 1)
        )

    @staticmethod
    def _subjects_query() -> Any:
        face_count = (
            select(func.count())
            .where(faces_table.c.subject_pk == subjects_table.c.pk)
            .correlate(subjects_table)
            .scalar_subquery()
        )
        return select(subjects_table, face_count.label("face_count"))

    @staticmethod
    def _subject_record(row: Row[Any]) -> SubjectRecord:
        return SubjectRecord(
            pk=int(row.pk),
            collection_pk=int(row.collection_pk),
            subject_id=str(row.subject_id),
            name=row.name,
            metadata=dict(row.meta or {}),
            created_at=_aware(row.created_at),
            face_count=int(row.face_count),
        )

    @staticmethod
    def _faces_query(*, with_embedding: bool) -> Any:
        columns = [
            faces_table.c.pk,
            faces_table.c.face_id,
            faces_table.c.collection_pk,
            faces_table.c.subject_pk,
            faces_table.c.box,
            faces_table.c.quality,
            faces_table.c.source_hash,
            faces_table.c.source_name,
            faces_table.c.created_at,
            faces_table.c.external_image_id,
            faces_table.c.image_id,
            subjects_table.c.subject_id,
        ]
        if with_embedding:
            columns.append(faces_table.c.embedding)
        # Outer join: free-standing faces (no subject) are faces too.
        return select(*columns).outerjoin(subjects_table, subjects_table.c.pk == faces_table.c.subject_pk)

    @staticmethod
    def _face_record(row: Row[Any]) -> FaceRecord:
        box = tuple(float(v) for v in row.box)
        return FaceRecord(
            pk=int(row.pk),
            face_id=str(row.face_id),
            collection_pk=int(row.collection_pk),
            subject_pk=int(row.subject_pk) if row.subject_pk is not None else None,
            subject_id=str(row.subject_id) if row.subject_id is not None else None,
            box=(box[0], box[1], box[2], box[3]),
            quality=dict(row.quality or {}),
            source_hash=row.source_hash,
            source_name=row.source_name,
            created_at=_aware(row.created_at),
            external_image_id=row.external_image_id,
            image_id=row.image_id,
            embedding=(
                np.frombuffer(row.embedding, dtype=np.float32).copy() if "embedding" in row._fields else None
            ),
        )
