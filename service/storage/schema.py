"""The store's tables and the migrations that bring an older database up to them.

Every table is defined here, and so is every change to a database the code finds at start-up:
``migrate`` creates missing tables, then runs ``MIGRATIONS`` in order. A step is a function of the
engine that returns what it changed (a short phrase, logged) or None when there was nothing to
do. Every step must be idempotent (it runs at every start-up) and safe when two processes start at
once against the same database (detect what the other one did first, never fail on it). To change
the schema, change the table here and append a step to ``MIGRATIONS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

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
    String,
    Table,
    UniqueConstraint,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from service.storage.subject_repair import MetadataBounds, repair_subjects

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
    # Bumped by every change to the collection's faces: an index snapshot is valid for one revision.
    Column("revision", BigInteger, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The collection's own identify threshold (None: the service default), where it came from
    # ("collection": set by a client, "calibration": by POST .../calibrate) and when.
    # Added after the first release: ``migrate_additive`` adds them to older databases.
    Column("identify_threshold", Float, nullable=True),
    Column("identify_threshold_source", String(16), nullable=True),
    Column("identify_threshold_set_at", DateTime(timezone=True), nullable=True),
    # The numbers of subjects and faces, kept by every subject and face write in its own transaction
    # (``collections.count_subject``, ``collections.bump_revision``): identify reads them with the row
    # (the default identify threshold depends on them) instead of counting. NULL in a database from
    # before they existed until the ``counters`` step fills them; readers count when they find NULL.
    Column("subject_count", BigInteger, nullable=True),
    Column("face_count", BigInteger, nullable=True),
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
    # Nullable since the Rekognition API; the "nullable-face-subject" step upgrades older databases.
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


# Idempotency-Key records (service/domain/idempotency.py): one row per (caller, key) until it expires.
# The row of a completed request is written in the transaction of the write it answers for, so a
# crash never leaves a stored face without its key record, nor a key record without its face.
# Times are epoch milliseconds: compared in SQL the same way on every dialect. A new table: created
# by ``migrate`` (create_all) on an older database, no migration step needed.
idempotency_keys_table = Table(
    "idempotency_keys",
    metadata_obj,
    Column("caller", String(64), primary_key=True),
    Column("idem_key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("token", String(32), nullable=False),  # which attempt holds the key
    Column("state", String(16), nullable=False),  # "in_flight" | "done"
    Column("status", Integer, nullable=True),
    Column("body", JSON, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=False),  # an in-flight attempt presumed dead after
    Column("expires_ms", BigInteger, nullable=False),
    Index("ix_idempotency_keys_expires", "expires_ms"),
)


# -- migrations ----------------------------------------------------------------------------------


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


def _add_missing_columns(engine: Engine) -> str | None:
    added = migrate_additive(engine)
    return f"added columns {', '.join(added)}" if added else None


def relax_face_subject(engine: Engine) -> str | None:
    """Make ``faces.subject_pk`` nullable on a database made before free-standing faces.

    PostgreSQL alters the column in place. SQLite cannot drop NOT NULL: the table is rebuilt in one
    transaction (SQLite's documented procedure: foreign keys off so that dropping the old table
    cascades nowhere, copy, drop, rename, indexes back, foreign-key check, the AUTOINCREMENT
    sequence kept so that no face pk is ever reused). Idempotent; a second process that finds the
    work done does nothing.
    """
    columns = {c["name"]: c for c in inspect(engine).get_columns("faces")}
    if columns["subject_pk"]["nullable"]:
        return None
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE faces ALTER COLUMN subject_pk DROP NOT NULL"))
        return "faces.subject_pk is nullable"
    ddl = str(CreateTable(faces_table).compile(dialect=engine.dialect)).strip()
    assert ddl.startswith("CREATE TABLE faces ")
    ddl = "CREATE TABLE faces__rebuild " + ddl[len("CREATE TABLE faces ") :]
    preparer = engine.dialect.identifier_preparer
    names = ", ".join(preparer.format_column(c) for c in faces_table.columns if c.name in columns)
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
                info = raw.execute("PRAGMA table_info(faces)").fetchall()
                if not any(row[1] == "subject_pk" and row[3] for row in info):  # another process did it
                    raw.execute("ROLLBACK")
                    return None
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
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
            raw.isolation_level = level
    return "faces.subject_pk is nullable (table rebuilt)"


def _recount(engine: Engine) -> str | None:
    """Set ``collections.subject_count`` / ``face_count`` where they differ from the subjects and
    faces tables (NULL after the columns were added; writes by an older release that did not keep
    them). One read when nothing is off, the usual start-up.

    Each stale collection is fixed in its own transaction. On PostgreSQL its row is locked first
    (``FOR UPDATE``): every writer changes a table and then its counters in this row before
    committing, so a write whose +1 already landed is waited for and counted (the count, a new
    statement, sees it), and one that has not reached the row yet is not counted and adds its +1 to
    the recounted value after. SQLite runs one writer at a time and the update is one statement.
    """
    subjects = (
        select(func.count())
        .where(subjects_table.c.collection_pk == collections_table.c.pk)
        .correlate(collections_table)
        .scalar_subquery()
    )
    faces = (
        select(func.count())
        .where(faces_table.c.collection_pk == collections_table.c.pk)
        .correlate(collections_table)
        .scalar_subquery()
    )
    stale = or_(
        collections_table.c.subject_count.is_(None),
        collections_table.c.face_count.is_(None),
        collections_table.c.subject_count != subjects,
        collections_table.c.face_count != faces,
    )
    with engine.connect() as conn:
        pks = [int(pk) for pk in conn.execute(select(collections_table.c.pk).where(stale)).scalars()]
    fixed = 0
    for pk in pks:
        with engine.begin() as conn:
            if engine.dialect.name != "sqlite":
                row = select(collections_table.c.pk).where(collections_table.c.pk == pk)
                conn.execute(row.with_for_update())
            fixed += conn.execute(
                update(collections_table)
                .where(collections_table.c.pk == pk, stale)
                .values(subject_count=subjects, face_count=faces)
            ).rowcount
    return f"recounted the subjects and faces of {fixed} collection(s)" if fixed else None


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """One named change to an existing database; ``apply`` returns what it changed, or None."""

    name: str
    apply: Callable[[Engine], str | None]


def _repair_subjects(bounds: MetadataBounds) -> Callable[[Engine], str | None]:
    def apply(engine: Engine) -> str | None:
        repaired = repair_subjects(engine, subjects_table, collections_table, bounds)
        return f"repaired {repaired} subject(s) that could not be served" if repaired else None

    return apply


def migrations(subject_bounds: MetadataBounds | None = None) -> tuple[MigrationStep, ...]:
    """The steps, run in this order at every start-up after the missing tables are created; append
    new ones. ``subject_bounds``: the metadata the service accepts (default: only what no
    configuration can serve is repaired; see service/storage/subject_repair.py)."""
    return (
        MigrationStep("additive-columns", _add_missing_columns),
        MigrationStep("nullable-face-subject", relax_face_subject),
        MigrationStep("counters", _recount),
        MigrationStep("repair-unservable-subjects", _repair_subjects(subject_bounds or MetadataBounds())),
    )


MIGRATIONS: tuple[MigrationStep, ...] = migrations()


def migrate(engine: Engine, steps: tuple[MigrationStep, ...] = MIGRATIONS) -> list[tuple[str, str]]:
    """Create missing tables, then run every step in order; returns (step name, change) of each change."""
    metadata_obj.create_all(engine)
    changes: list[tuple[str, str]] = []
    for step in steps:
        change = step.apply(engine)
        if change:
            logger.info("store schema upgraded (%s): %s", step.name, change)
            changes.append((step.name, change))
    return changes
