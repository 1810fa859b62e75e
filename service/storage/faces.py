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
from sqlalchemy import Column, Engine, Row, Select, delete, func, insert, select, update
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
        subject_id: str | None,
        faces: Sequence[NewFace],
        *,
        create_subject: bool,
        within: InTransaction | None = None,
    ) -> list[FaceRecord]:
        """Persist faces (and the subject when asked; ``subject_id`` None: free-standing faces) in one
        transaction; ``within`` runs in it with the new ``FaceRecord`` list."""
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

    # -- face by face (the Rekognition-compatible API) -------------------------------------------

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
            coll = collection_row(conn, collection)
            query = _faces_query().where(faces_table.c.collection_pk == coll.pk, faces_table.c.pk > after_pk)
            if subject_id is not None:
                owner = subject_pk(conn, collection, subject_id, int(coll.pk))
                query = query.where(faces_table.c.subject_pk == owner)
            if face_ids is not None:
                query = query.where(faces_table.c.face_id.in_(list(face_ids)))
            rows = conn.execute(query.order_by(faces_table.c.pk).limit(limit)).all()
        return [_face_record(row) for row in rows]

    def faces_by_id(
        self, collection: str, face_ids: Sequence[str], *, with_embedding: bool = False
    ) -> dict[str, FaceRecord]:
        """face_id → face, for the ids that exist in the collection."""
        if not face_ids:
            return {}
        with self._engine.connect() as conn:
            coll = collection_row(conn, collection)
            rows = conn.execute(
                _faces_query(with_embedding=with_embedding).where(
                    faces_table.c.collection_pk == coll.pk, faces_table.c.face_id.in_(list(face_ids))
                )
            ).all()
        return {str(row.face_id): _face_record(row) for row in rows}

    def face_hits(self, pks: Sequence[int]) -> dict[int, FaceRecord]:
        """pk → face (a subject's or free-standing), for face-level search hits."""
        if not pks:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(_faces_query().where(faces_table.c.pk.in_([int(pk) for pk in pks]))).all()
        return {int(row.pk): _face_record(row) for row in rows}

    def delete_free_faces(self, collection: str, face_ids: Sequence[str]) -> tuple[int, list[FaceRecord]]:
        """Delete the given faces that exist and belong to no subject (Rekognition's DeleteFaces
        refuses a user's faces); returns (collection pk, the deleted faces)."""
        with self._engine.begin() as conn:
            coll = collection_row(conn, collection)
            rows = conn.execute(
                _faces_query().where(
                    faces_table.c.collection_pk == coll.pk,
                    faces_table.c.face_id.in_(list(face_ids)),
                    faces_table.c.subject_pk.is_(None),
                )
            ).all()
            pks = [int(row.pk) for row in rows]
            if pks:
                conn.execute(delete(faces_table).where(faces_table.c.pk.in_(pks)))
                bump_revision(conn, int(coll.pk), -len(pks))
            return int(coll.pk), [_face_record(row) for row in rows]

    def set_faces_subject(
        self, collection: str, face_ids: Sequence[str], subject_id: str | None, *, only_of: str | None = None
    ) -> list[str]:
        """Put faces under ``subject_id`` (None: make them free-standing) in one transaction.

        Associating changes only faces that are free-standing or already the subject's;
        disassociating (``only_of``) only that subject's faces. Returns the ids now as asked (in pk
        order). The index is unchanged (it holds faces, whoever owns them), so the revision is too.
        """
        with self._engine.begin() as conn:
            coll_pk = int(collection_row(conn, collection).pk)
            target = subject_pk(conn, collection, subject_id, coll_pk) if subject_id is not None else None
            owner = subject_pk(conn, collection, only_of, coll_pk) if only_of is not None else None
            allowed = (
                faces_table.c.subject_pk == owner
                if owner is not None
                else (faces_table.c.subject_pk.is_(None) | (faces_table.c.subject_pk == target))
            )
            where = [
                faces_table.c.collection_pk == coll_pk,
                faces_table.c.face_id.in_(list(face_ids)),
                allowed,
            ]
            chosen = select(faces_table.c.face_id).where(*where).order_by(faces_table.c.pk)
            changed = [str(v) for v in conn.execute(chosen).scalars()]
            if changed:
                conn.execute(update(faces_table).where(*where).values(subject_pk=target))
            return changed

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


def insert_faces(
    conn: Connection,
    collection: str,
    subject_id: str | None,
    faces: Sequence[NewFace],
    *,
    create_subject: bool,
) -> list[FaceRecord]:
    """Insert faces (and the subject when asked; ``subject_id`` None: free-standing faces) inside the
    caller's transaction; bumps the revision."""
    now = utc_now()
    coll_pk = int(collection_row(conn, collection).pk)
    found = (
        conn.execute(
            select(subjects_table.c.pk).where(
                subjects_table.c.collection_pk == coll_pk, subjects_table.c.subject_id == subject_id
            )
        ).scalar_one_or_none()
        if subject_id is not None
        else None
    )
    owner: int | None
    if subject_id is None:
        owner = None
    elif found is None:
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
                external_image_id=face.external_image_id,
                image_id=face.image_id,
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
                external_image_id=face.external_image_id,
                image_id=face.image_id,
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


def _faces_query(*, with_embedding: bool = False) -> Select[Any]:
    """Every column of a face (the embedding only when asked), with the owning subject's id (None
    for a free-standing face: an outer join)."""
    columns: list[Any] = [
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
    return select(*columns).outerjoin(subjects_table, subjects_table.c.pk == faces_table.c.subject_pk)


def _face_record(row: Row[Any]) -> FaceRecord:
    box = tuple(float(v) for v in row.box)
    embedding = getattr(row, "embedding", None)
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
        created_at=aware(row.created_at),
        embedding=np.frombuffer(embedding, dtype=np.float32).copy() if embedding is not None else None,
        external_image_id=row.external_image_id,
        image_id=row.image_id,
    )
