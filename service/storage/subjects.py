"""Subjects: the people of a collection, with their name, metadata and face count.

``subject_pk`` and ``insert_subject`` take an open connection so that the face repository can
resolve or create a subject inside its own transaction (enrolment with ``create_subject``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, Select, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from service.errors import SubjectExists, SubjectNotFound
from service.storage.collections import bump_revision, collection_row, count_subject
from service.storage.engine import InTransaction, aware, utc_now
from service.storage.records import SubjectRecord
from service.storage.schema import faces_table, subjects_table


def subject_pk(conn: Connection, collection: str, subject_id: str, coll_pk: int | None = None) -> int:
    """The subject's key (``coll_pk``: the collection's, when the caller has it), or a not-found error."""
    if coll_pk is None:
        coll_pk = int(collection_row(conn, collection).pk)
    found = conn.execute(
        select(subjects_table.c.pk).where(
            subjects_table.c.collection_pk == coll_pk, subjects_table.c.subject_id == subject_id
        )
    ).scalar_one_or_none()
    if found is None:
        raise SubjectNotFound(f"Subject '{subject_id}' not found in '{collection}'.")
    return int(found)


def insert_subject(
    conn: Connection, coll_pk: int, subject_id: str, name: str | None, meta: dict[str, Any]
) -> int:
    """Insert a subject row and count it; returns its key (IntegrityError when the id is taken)."""
    result = conn.execute(
        insert(subjects_table).values(
            collection_pk=coll_pk, subject_id=subject_id, name=name, meta=meta, created_at=utc_now()
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    count_subject(conn, coll_pk, +1)
    return int(pk[0])


class SubjectRepository:
    """Create, list, read, update and delete subjects; one transaction per write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_subject(
        self,
        collection: str,
        subject_id: str,
        name: str | None,
        meta: dict[str, Any],
        *,
        within: InTransaction | None = None,
    ) -> SubjectRecord:
        """``within`` runs in the same transaction with the new ``SubjectRecord``."""
        try:
            with self._engine.begin() as conn:
                coll = collection_row(conn, collection)
                pk = insert_subject(conn, int(coll.pk), subject_id, name, meta)
                record = _subject_record(
                    conn.execute(_subjects_query().where(subjects_table.c.pk == pk)).one()
                )
                if within is not None:
                    within(conn, record)
        except IntegrityError as exc:
            raise SubjectExists(
                f"Subject '{subject_id}' already exists in '{collection}'.", subject_id=subject_id
            ) from exc
        return record

    def list_subjects(
        self, collection: str, offset: int, limit: int, id_prefix: str | None = None
    ) -> tuple[list[SubjectRecord], int]:
        """A page of subjects in id order; ``id_prefix`` keeps those whose id starts with it (any case)."""
        with self._engine.connect() as conn:
            coll = collection_row(conn, collection)
            conditions = [subjects_table.c.collection_pk == coll.pk]
            if id_prefix:
                conditions.append(
                    func.lower(subjects_table.c.subject_id).startswith(id_prefix.lower(), autoescape=True)
                )
            total = conn.execute(select(func.count()).where(*conditions)).scalar_one()
            rows = conn.execute(
                _subjects_query()
                .where(*conditions)
                .order_by(subjects_table.c.subject_id)
                .offset(offset)
                .limit(limit)
            ).all()
            return [_subject_record(row) for row in rows], int(total)

    def subjects_after(self, collection: str, after: str | None, limit: int) -> list[SubjectRecord]:
        """Subjects in id order after ``after`` (keyset: each subject once per walk)."""
        with self._engine.connect() as conn:
            coll = collection_row(conn, collection)
            conditions = [subjects_table.c.collection_pk == coll.pk]
            if after is not None:
                conditions.append(subjects_table.c.subject_id > after)
            rows = conn.execute(
                _subjects_query().where(*conditions).order_by(subjects_table.c.subject_id).limit(limit)
            ).all()
        return [_subject_record(row) for row in rows]

    def release_subject(self, collection: str, subject_id: str) -> None:
        """Delete a subject but keep its faces, free-standing (Rekognition's DeleteUser). The index
        holds faces whoever owns them: it and the revision are unchanged."""
        with self._engine.begin() as conn:
            coll = collection_row(conn, collection)
            owner = subject_pk(conn, collection, subject_id, coll_pk=int(coll.pk))
            conn.execute(update(faces_table).where(faces_table.c.subject_pk == owner).values(subject_pk=None))
            conn.execute(delete(subjects_table).where(subjects_table.c.pk == owner))
            count_subject(conn, int(coll.pk), -1)

    def get_subject(self, collection: str, subject_id: str) -> SubjectRecord:
        with self._engine.connect() as conn:
            coll = collection_row(conn, collection)
            row = conn.execute(
                _subjects_query().where(
                    subjects_table.c.collection_pk == coll.pk, subjects_table.c.subject_id == subject_id
                )
            ).first()
            if row is None:
                raise SubjectNotFound(f"Subject '{subject_id}' not found in '{collection}'.")
            return _subject_record(row)

    def update_subject(self, collection: str, subject_id: str, changes: dict[str, Any]) -> SubjectRecord:
        """Change ``name`` and/or ``metadata``."""
        values: dict[str, Any] = {}
        if "name" in changes:
            values["name"] = changes["name"]
        if "metadata" in changes:
            values["meta"] = changes["metadata"] or {}
        with self._engine.begin() as conn:
            pk = subject_pk(conn, collection, subject_id)
            if values:
                conn.execute(update(subjects_table).where(subjects_table.c.pk == pk).values(**values))
        return self.get_subject(collection, subject_id)

    def delete_subject(self, collection: str, subject_id: str) -> tuple[int, list[int]]:
        """Delete a subject and its faces; returns (collection pk, removed face pks)."""
        with self._engine.begin() as conn:
            coll = collection_row(conn, collection)
            pk = subject_pk(conn, collection, subject_id, coll_pk=int(coll.pk))
            face_pks = [
                int(face_pk)
                for face_pk in conn.execute(
                    select(faces_table.c.pk).where(faces_table.c.subject_pk == pk)
                ).scalars()
            ]
            conn.execute(delete(faces_table).where(faces_table.c.subject_pk == pk))
            conn.execute(delete(subjects_table).where(subjects_table.c.pk == pk))
            count_subject(conn, int(coll.pk), -1)
            if face_pks:
                bump_revision(conn, int(coll.pk), -len(face_pks))
            return int(coll.pk), face_pks


def _subjects_query() -> Select[Any]:
    face_count = (
        select(func.count())
        .where(faces_table.c.subject_pk == subjects_table.c.pk)
        .correlate(subjects_table)
        .scalar_subquery()
    )
    return select(subjects_table, face_count.label("face_count"))


def _subject_record(row: Row[Any]) -> SubjectRecord:
    return SubjectRecord(
        pk=int(row.pk),
        collection_pk=int(row.collection_pk),
        subject_id=str(row.subject_id),
        name=row.name,
        metadata=dict(row.meta or {}),
        created_at=aware(row.created_at),
        face_count=int(row.face_count),
    )
