"""Collections: name, description, face-set revision, counts and the own identify threshold.

``collection_row`` and ``bump_revision`` take an open connection so that the subject and face
repositories can resolve a collection and record a change inside their own transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from service.errors import CollectionExists, CollectionNotFound
from service.storage.engine import InTransaction, aware, utc_now
from service.storage.records import (
    CollectionLookup,
    CollectionRecord,
    OwnThreshold,
    OwnThresholdSource,
    own_threshold,
)
from service.storage.schema import collections_table, faces_table, subjects_table, vector_writes_table


def collection_row(conn: Connection, name: str) -> Row[Any]:
    """The collection's row, or CollectionNotFound."""
    row = conn.execute(select(collections_table).where(collections_table.c.name == name)).first()
    if row is None:
        raise CollectionNotFound(f"Collection '{name}' not found.", collection=name)
    return row


def bump_revision(conn: Connection, coll_pk: int, faces: int) -> None:
    """Record a change to the collection's faces, ``faces`` added (> 0) or removed (< 0): a new
    revision (an index snapshot of the old one is stale) and the face counter, in the writer's
    transaction."""
    conn.execute(
        update(collections_table)
        .where(collections_table.c.pk == coll_pk)
        .values(revision=collections_table.c.revision + 1, face_count=collections_table.c.face_count + faces)
    )


def count_subject(conn: Connection, coll_pk: int, change: int) -> None:
    """Add ``change`` (+n on insert, −n on delete) to the collection's subject counter, inside the
    writer's transaction: the counter and the subjects table commit together (see schema.py)."""
    conn.execute(
        update(collections_table)
        .where(collections_table.c.pk == coll_pk)
        .values(subject_count=collections_table.c.subject_count + change)
    )


def subject_count(conn: Connection, row: Any) -> int:
    """The collection's number of subjects: its counter, or a count where the counter is NULL (a row
    an older release wrote since start-up)."""
    if row.subject_count is not None:
        return int(row.subject_count)
    counted = conn.execute(select(func.count()).where(subjects_table.c.collection_pk == row.pk))
    return int(counted.scalar_one())


def face_count(conn: Connection, row: Any) -> int:
    """The collection's number of faces: its counter, or a count where the counter is NULL."""
    if row.face_count is not None:
        return int(row.face_count)
    counted = conn.execute(select(func.count()).where(faces_table.c.collection_pk == row.pk))
    return int(counted.scalar_one())


class CollectionRepository:
    """Create, read, update and delete collections; one transaction per write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_collection(
        self,
        name: str,
        description: str = "",
        identify_threshold: float | None = None,
        *,
        within: InTransaction | None = None,
    ) -> CollectionRecord:
        """``within`` runs in the same transaction with the new ``CollectionRecord``."""
        now = utc_now()
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
                        name=name,
                        description=description,
                        revision=0,
                        created_at=now,
                        subject_count=0,
                        face_count=0,
                        **own,
                    )
                )
                record = _with_counts(conn, collection_row(conn, name))
                if within is not None:
                    within(conn, record)
        except IntegrityError as exc:
            raise CollectionExists(f"Collection '{name}' already exists.", collection=name) from exc
        return record

    def list_collections(self) -> list[CollectionRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(collections_table).order_by(collections_table.c.name)).all()
            return [_with_counts(conn, row) for row in rows]

    def get_collection(self, name: str) -> CollectionRecord:
        with self._engine.connect() as conn:
            return _with_counts(conn, collection_row(conn, name))

    def collection_pk(self, name: str) -> int:
        """The collection's key without its counts: the cheap existence check for hot paths."""
        return self.collection_lookup(name).pk

    def collection_lookup(self, name: str) -> CollectionLookup:
        """Key, own identify threshold and the counters in one indexed row read (no scan):
        identify's lookup."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    collections_table.c.pk,
                    collections_table.c.identify_threshold,
                    collections_table.c.identify_threshold_source,
                    collections_table.c.identify_threshold_set_at,
                    collections_table.c.subject_count,
                    collections_table.c.face_count,
                ).where(collections_table.c.name == name)
            ).first()
            if row is None:
                raise CollectionNotFound(f"Collection '{name}' not found.", collection=name)
            return CollectionLookup(
                int(row.pk), _own_threshold(row), subject_count(conn, row), face_count(conn, row)
            )

    def update_collection(
        self, name: str, changes: dict[str, Any], *, threshold_source: OwnThresholdSource = "collection"
    ) -> CollectionRecord:
        """Change ``description`` and/or ``identify_threshold`` (None: back to the default)."""
        values: dict[str, Any] = {}
        if "description" in changes:
            values["description"] = changes["description"] or ""
        if "identify_threshold" in changes:
            value = changes["identify_threshold"]
            values["identify_threshold"] = value
            values["identify_threshold_source"] = threshold_source if value is not None else None
            values["identify_threshold_set_at"] = utc_now() if value is not None else None
        with self._engine.begin() as conn:
            row = collection_row(conn, name)
            if values:
                conn.execute(
                    update(collections_table).where(collections_table.c.pk == row.pk).values(**values)
                )
        return self.get_collection(name)

    def delete_collection(self, name: str) -> int:
        """Delete a collection with its subjects and faces; returns its primary key."""
        with self._engine.begin() as conn:
            row = collection_row(conn, name)
            conn.execute(delete(faces_table).where(faces_table.c.collection_pk == row.pk))
            conn.execute(delete(subjects_table).where(subjects_table.c.collection_pk == row.pk))
            conn.execute(delete(vector_writes_table).where(vector_writes_table.c.collection_pk == row.pk))
            conn.execute(delete(collections_table).where(collections_table.c.pk == row.pk))
            return int(row.pk)


def _with_counts(conn: Connection, row: Row[Any]) -> CollectionRecord:
    subjects = subject_count(conn, row)
    faces = face_count(conn, row)
    return CollectionRecord(
        pk=int(row.pk),
        name=str(row.name),
        description=str(row.description or ""),
        created_at=aware(row.created_at),
        revision=int(row.revision),
        subject_count=int(subjects),
        face_count=int(faces),
        own_threshold=_own_threshold(row),
    )


def _own_threshold(row: Any) -> OwnThreshold | None:
    """A collections row (or a select of its threshold columns) as its own-threshold record."""
    set_at = row.identify_threshold_set_at
    return own_threshold(
        row.identify_threshold, row.identify_threshold_source, aware(set_at) if set_at is not None else None
    )
