"""Synthetic galleries loaded straight into the store, for tests and benchmarks.

Test and benchmark support only: the running service never imports this module.
"""

from __future__ import annotations

import uuid

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, insert, select

from service.storage.collections import bump_revision, collection_row, count_subject
from service.storage.engine import utc_now
from service.storage.schema import faces_table, subjects_table
from service.storage.store import FaceStore


def bulk_insert_synthetic(
    store: FaceStore,
    collection: str,
    subject_prefix: str,
    vectors: NDArray[np.float32],
    faces_per_subject: int,
) -> int:
    """Load many vectors at once, ``faces_per_subject`` per made-up subject; returns how many were stored.

    Subjects are named ``{subject_prefix}{i}``; faces get a zero box, no quality and no thumbnail.
    One transaction, one revision bump.
    """
    now = utc_now()
    with store.engine.begin() as conn:
        coll_pk = int(collection_row(conn, collection).pk)
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
        count_subject(conn, coll_pk, n_subjects)
        bump_revision(conn, coll_pk, len(vectors))
    return len(vectors)
