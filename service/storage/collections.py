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
from service.storage.records import CollectionLookup, CollectionRecord
from service.storage.schema import collections_table, faces_table, subjects_table, vector_writes_table


def collection_row(conn: Connection, name: str) -> Row[Any]:
    """The collection's row, or CollectionNotFound."""
    row = conn.execute(select(collections_table).where(collections_table.c.name == name)).first()
    if row is None:
        raise CollectionNotFound(f"Collection '{name}' not found.", collection=name)
    return row


def bump_revision(conn: Connection, coll_pk: int) -> None:
    """Record a change to the collection's faces (an index snapshot of the old revision is stale)."""
    conn.execute(
        update(collections_table)
        .where(collections_table.c.pk == coll_pk)
        .values(revision=collections_table.c.revision + 1)
    )


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
                        name=name, description=description, revision=0, created_at=now, **own
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
    subjects = conn.execute(select(func.count()).where(subjects_table.c.collection_pk == row.pk)).scalar_one()
    faces = conn.execute(select(func.count()).where(faces_table.c.collection_pk == row.pk)).scalar_one()
    return CollectionRecord(
        pk=int(row.pk),
        name=str(row.name),
        description=str(row.description or ""),
        created_at=aware(row.created_at),
        revision=int(row.revision),
        subject_count=int(subjects),
        face_count=int(faces),
        identify_threshold=float(row.identify_threshold) if row.identify_threshold is not None else None,
        identify_threshold_source=row.identify_threshold_source,
        identify_threshold_set_at=aware(row.identify_threshold_set_at)
        if row.identify_threshold_set_at is not None
        else None,
    )
