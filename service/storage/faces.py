"""Faces: each enrolled face with its embedding, its optional thumbnail, and the streams indexes read.

A face row carries its embedding, so a face is either fully enrolled or absent. This repository is
also what the vector indexes rebuild and verify themselves from (``service.index.base.EmbeddingSource``):
the collection's face-set revision, its face count and its embeddings in pk order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Column, Engine, Row, Select, delete, func, insert, select
from sqlalchemy.engine import Connection

from service.errors import FaceNotFound, SubjectNotFound, ThumbnailNotFound
from service.storage.collections import bump_revision, collection_row
from service.storage.engine import InTransaction, aware, utc_now
from service.storage.records import FaceRecord, NewFace
from service.storage.schema import collections_table, face_thumbnails_table, faces_table, subjects_table
from service.storage.subjects import insert_subject, subject_pk


class FaceRepository:
    """Add, read and delete faces and thumbnails; stream embeddings; one transaction per write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_faces(
        self,
        collection: str,
        subject_id: str,
        faces: Sequence[NewFace],
        *,
        create_subject: bool,
        within: InTransaction | None = None,
    ) -> list[FaceRecord]:
        """Persist faces (and the subject when asked) in one transaction; ``within`` runs in it with
        the new ``FaceRecord`` list."""
        with self._engine.begin() as conn:
            records = insert_faces(conn, collection, subject_id, faces, create_subject=create_subject)
            if within is not None:
                within(conn, records)
            return records

    def list_faces(self, collection: str, subject_id: str) -> list[FaceRecord]:
        with self._engine.connect() as conn:
            owner = subject_pk(conn, collection, subject_id)
            rows = conn.execute(
                _faces_query().where(faces_table.c.subject_pk == owner).order_by(faces_table.c.pk)
            ).all()
            return [_face_record(row) for row in rows]

    def get_face(self, collection: str, face_id: str) -> FaceRecord:
        with self._engine.connect() as conn:
            return _face_record(_face_row(conn, collection, face_id))

    def get_thumbnail(self, collection: str, face_id: str) -> bytes:
        """The face's stored JPEG crop; FaceNotFound / ThumbnailNotFound (enrolled without one)."""
        with self._engine.connect() as conn:
            coll = collection_row(conn, collection)
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
        """Delete one face (its thumbnail goes with it); returns what was deleted."""
        with self._engine.begin() as conn:
            row = _face_row(conn, collection, face_id)
            conn.execute(delete(faces_table).where(faces_table.c.pk == row.pk))
            bump_revision(conn, int(row.collection_pk), -1)
            return _face_record(row)

    def subject_embeddings(self, collection: str, subject_id: str) -> tuple[list[str], NDArray[np.float32]]:
        """The subject's face ids and their embeddings, row-aligned."""
        with self._engine.connect() as conn:
            owner = subject_pk(conn, collection, subject_id)
            rows = conn.execute(
                select(faces_table.c.face_id, faces_table.c.embedding)
                .where(faces_table.c.subject_pk == owner)
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

    # -- what the vector indexes read (service.index.base.EmbeddingSource) ----------------------

    def collection_revision(self, collection_pk: int) -> int:
        """The collection's face-set revision: bumped by every face write in it."""
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

    def iter_embeddings(
        self, collection_pk: int, batch_size: int = 50_000
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Stream (pks, vectors) of a collection in pk order, for index rebuilds."""
        return self._iter_vectors(collection_pk, faces_table.c.pk, batch_size)

    def iter_subject_embeddings(
        self, collection_pk: int, batch_size: int = 50_000
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Stream (owning subject pks, vectors) of a collection in pk order, for calibration."""
        return self._iter_vectors(collection_pk, faces_table.c.subject_pk, batch_size)

    def _iter_vectors(
        self, collection_pk: int, label: Column[Any], batch_size: int
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """(``label`` column, vectors) of a collection's faces in pk order, one keyset page at a time."""
        last = 0
        while True:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(faces_table.c.pk, label.label("label"), faces_table.c.embedding)
                    .where(faces_table.c.collection_pk == collection_pk, faces_table.c.pk > last)
                    .order_by(faces_table.c.pk)
                    .limit(batch_size)
                ).all()
            if not rows:
                return
            labels = np.fromiter((row.label for row in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(row.embedding for row in rows), dtype=np.float32)
            yield labels, np.ascontiguousarray(vectors.reshape(len(rows), -1))
            last = int(rows[-1].pk)


def insert_faces(
    conn: Connection, collection: str, subject_id: str, faces: Sequence[NewFace], *, create_subject: bool
) -> list[FaceRecord]:
    """Insert faces (and the subject when asked) inside the caller's transaction; bumps the revision."""
    now = utc_now()
    coll_pk = int(collection_row(conn, collection).pk)
    found = conn.execute(
        select(subjects_table.c.pk).where(
            subjects_table.c.collection_pk == coll_pk, subjects_table.c.subject_id == subject_id
        )
    ).scalar_one_or_none()
    if found is None:
        if not create_subject:
            raise SubjectNotFound(
                f"Subject '{subject_id}' not found in '{collection}' "
                "(pass create_subject=true to create it).",
            )
        owner = insert_subject(conn, coll_pk, subject_id, None, {})
    else:
        owner = int(found)
    records: list[FaceRecord] = []
    for face in faces:
        face_id = str(uuid.uuid4())
        embedding = np.ascontiguousarray(face.embedding, dtype=np.float32)
        result = conn.execute(
            insert(faces_table).values(
                face_id=face_id,
                collection_pk=coll_pk,
                subject_pk=owner,
                embedding=embedding.tobytes(),
                box=list(face.box),
                quality=face.quality,
                source_hash=face.source_hash,
                source_name=face.source_name,
                created_at=now,
            )
        )
        pk = result.inserted_primary_key
        assert pk is not None
        if face.thumbnail is not None:
            conn.execute(insert(face_thumbnails_table).values(face_pk=int(pk[0]), jpeg=face.thumbnail))
        records.append(
            FaceRecord(
                pk=int(pk[0]),
                face_id=face_id,
                collection_pk=coll_pk,
                subject_pk=owner,
                subject_id=subject_id,
                box=face.box,
                quality=face.quality,
                source_hash=face.source_hash,
                source_name=face.source_name,
                created_at=now,
                embedding=embedding,
            )
        )
    if records:
        bump_revision(conn, coll_pk, len(records))
    return records


def _face_row(conn: Connection, collection: str, face_id: str) -> Row[Any]:
    """The face's row (with its subject id) in the named collection, or a not-found error."""
    coll = collection_row(conn, collection)
    row = conn.execute(
        _faces_query().where(faces_table.c.collection_pk == coll.pk, faces_table.c.face_id == face_id)
    ).first()
    if row is None:
        raise FaceNotFound(f"Face '{face_id}' not found in '{collection}'.")
    return row


def _faces_query() -> Select[Any]:
    """Every column of a face but its embedding, with the owning subject's id."""
    return select(
        faces_table.c.pk,
        faces_table.c.face_id,
        faces_table.c.collection_pk,
        faces_table.c.subject_pk,
        faces_table.c.box,
        faces_table.c.quality,
        faces_table.c.source_hash,
        faces_table.c.source_name,
        faces_table.c.created_at,
        subjects_table.c.subject_id,
    ).join(subjects_table, subjects_table.c.pk == faces_table.c.subject_pk)


def _face_record(row: Row[Any]) -> FaceRecord:
    box = tuple(float(v) for v in row.box)
    return FaceRecord(
        pk=int(row.pk),
        face_id=str(row.face_id),
        collection_pk=int(row.collection_pk),
        subject_pk=int(row.subject_pk),
        subject_id=str(row.subject_id),
        box=(box[0], box[1], box[2], box[3]),
        quality=dict(row.quality or {}),
        source_hash=row.source_hash,
        source_name=row.source_name,
        created_at=aware(row.created_at),
    )
