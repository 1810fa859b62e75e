"""Collections, subjects and faces: the store and the index changed together, store first.

A write is acknowledged only after the store commit and the index update; a crash between the
two is repaired at start-up because the index is rebuilt from (or verified against) the store.
The index is any ``VectorIndex`` (embedded FAISS or Milvus): this module does not know which.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.domain.faces import squared_distance
from service.index.base import ReconcileReport, VectorIndex
from service.storage.records import CollectionRecord, FaceRecord, NewFace, SubjectRecord
from service.storage.store import FaceStore


@dataclass(frozen=True, slots=True)
class FaceHit:
    """One face of a face-level search (subject's or free-standing), nearest first."""

    face: FaceRecord
    distance: float  # squared L2 in [0, 4]


@dataclass(frozen=True, slots=True)
class Candidate:
    subject_id: str
    face_id: str
    similarity: float  # cosine
    distance: float  # squared L2 in [0, 4]


class Gallery:
    """The only writer of the store and the indexes."""

    def __init__(self, store: FaceStore, indexes: VectorIndex) -> None:
        self.store = store
        self.indexes = indexes
        self._write_lock = threading.Lock()

    # -- collections -----------------------------------------------------------------------

    def create_collection(
        self, name: str, description: str, identify_threshold: float | None = None
    ) -> CollectionRecord:
        with self._write_lock:
            record = self.store.collections.create_collection(name, description, identify_threshold)
            self.indexes.create(record.pk)
            return record

    def delete_collection(self, name: str) -> None:
        with self._write_lock:
            pk = self.store.collections.delete_collection(name)
            self.indexes.drop(pk)

    def index_sizes_by_name(self) -> dict[str, int]:
        collections = self.store.collections.list_collections()
        sizes = self.indexes.sizes([c.pk for c in collections])
        return {c.name: sizes.get(c.pk, 0) for c in collections}

    def index_out_of_sync(self) -> list[int]:
        """Collections whose index does not hold exactly the store's faces (for /readyz)."""
        return self.indexes.out_of_sync([c.pk for c in self.store.collections.list_collections()])

    def reconcile_index(self, *, full: bool = False) -> ReconcileReport:
        """Repair the index from the store: writes that reached the store but not the engine."""
        return self.indexes.reconcile([c.pk for c in self.store.collections.list_collections()], full=full)

    # -- subjects --------------------------------------------------------------------------

    def create_subject(
        self, collection: str, subject_id: str, name: str | None, meta: dict[str, Any]
    ) -> SubjectRecord:
        return self.store.subjects.create_subject(collection, subject_id, name, meta)

    def delete_subject(self, collection: str, subject_id: str) -> None:
        with self._write_lock:
            coll_pk, face_pks = self.store.subjects.delete_subject(collection, subject_id)
            self.indexes.remove(coll_pk, np.asarray(face_pks, dtype=np.int64))

    # -- faces -----------------------------------------------------------------------------

    def add_faces(
        self, collection: str, subject_id: str | None, faces: Sequence[NewFace], *, create_subject: bool
    ) -> list[FaceRecord]:
        """Store faces under ``subject_id`` (None: free-standing faces) and index them."""
        with self._write_lock:
            records = self.store.faces.add_faces(collection, subject_id, faces, create_subject=create_subject)
            if records:
                ids = np.fromiter((r.pk for r in records), dtype=np.int64, count=len(records))
                vectors = np.stack([f.embedding for f in faces]).astype(np.float32)
                coll_pk = records[0].collection_pk
                written = self.indexes.add(coll_pk, ids, vectors)
                if written and self.indexes.tracks_writes:  # before the ack: other replicas wait for it
                    self.store.vector_writes.record_vector_write(coll_pk, written)
            return records

    def delete_face(self, collection: str, face_id: str) -> FaceRecord:
        with self._write_lock:
            record = self.store.faces.delete_face(collection, face_id)
            self.indexes.remove(record.collection_pk, np.asarray([record.pk], dtype=np.int64))
            return record

    def delete_free_faces(self, collection: str, face_ids: Sequence[str]) -> list[FaceRecord]:
        """Delete the faces among ``face_ids`` that belong to no subject; returns those deleted."""
        with self._write_lock:
            coll_pk, records = self.store.faces.delete_free_faces(collection, face_ids)
            if records:
                self.indexes.remove(coll_pk, np.asarray([r.pk for r in records], dtype=np.int64))
            return records

    # -- users: subjects seen face by face (the index is unchanged: it holds faces) ----------

    def associate_faces(self, collection: str, subject_id: str, face_ids: Sequence[str]) -> list[str]:
        """Put free-standing faces (or the subject's own) under the subject; returns those now its."""
        with self._write_lock:
            return self.store.faces.set_faces_subject(collection, face_ids, subject_id)

    def disassociate_faces(self, collection: str, subject_id: str, face_ids: Sequence[str]) -> list[str]:
        """Make the subject's faces among ``face_ids`` free-standing; returns those changed."""
        with self._write_lock:
            return self.store.faces.set_faces_subject(collection, face_ids, None, only_of=subject_id)

    def release_subject(self, collection: str, subject_id: str) -> None:
        """Delete a subject, keeping its faces free-standing."""
        with self._write_lock:
            self.store.subjects.release_subject(collection, subject_id)

    # -- search ----------------------------------------------------------------------------

    def search_faces(
        self,
        collection_pk: int,
        query: NDArray[np.float32],
        max_faces: int,
        max_distance: float,
        exclude_pk: int | None = None,
    ) -> list[FaceHit]:
        """The ``max_faces`` nearest faces within ``max_distance`` (squared L2), nearest first: every
        face counts, whoever it belongs to (the per-subject ranking is ``search``)."""
        after = self.store.vector_writes.vector_write_ts(collection_pk) if self.indexes.tracks_writes else 0
        k = min(self.indexes.max_k, max_faces + (1 if exclude_pk is not None else 0) + 8)
        row = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
        while True:
            sims, pks = self.indexes.search(collection_pk, row, k, visible_after=after)
            hits = [(int(pk), float(sim)) for pk, sim in zip(pks[0], sims[0], strict=True) if pk >= 0]
            within = [(pk, squared_distance(sim)) for pk, sim in hits if pk != exclude_pk]
            within = [(pk, d) for pk, d in within if d <= max_distance]
            records = self.store.faces.face_hits([pk for pk, _ in within])
            found = [FaceHit(records[pk], d) for pk, d in within if pk in records]
            exhausted = len(hits) < k or k >= self.indexes.max_k
            # Hits are nearest first: once one lies beyond max_distance, more would not help.
            beyond = len(within) < len([pk for pk, _ in hits if pk != exclude_pk])
            if len(found) >= max_faces or exhausted or beyond:
                return sorted(found, key=lambda h: h.distance)[:max_faces]
            k = min(self.indexes.max_k, k * 4)

    def search(self, collection_pk: int, queries: NDArray[np.float32], top_k: int) -> list[list[Candidate]]:
        """Per query, the ``top_k`` best subjects, each represented by its closest face.

        Takes the key the caller already resolved (``collections.collection_pk``) so that a request looks
        its collection up once; a collection deleted in between searches as empty.
        """
        rows = np.atleast_2d(queries)
        if len(rows) == 0:
            return []
        max_k = self.indexes.max_k
        k = min(max_k, max(top_k * 8, 32))
        # Read-your-writes across replicas: as of the last insert any replica acknowledged.
        after = self.store.vector_writes.vector_write_ts(collection_pk) if self.indexes.tracks_writes else 0
        sims, pks = self.indexes.search(collection_pk, rows, k, visible_after=after)
        return [
            self._rank_subjects(collection_pk, row, top_k, k, sims[i], pks[i], after)
            for i, row in enumerate(rows)
        ]

    def _rank_subjects(
        self,
        collection_pk: int,
        query: NDArray[np.float32],
        top_k: int,
        k: int,
        sims: NDArray[np.float32],
        pks: NDArray[np.int64],
        after: int,
    ) -> list[Candidate]:
        """Best face per subject; asks the index for more faces while subjects are missing."""
        while True:
            hits = [(int(pk), float(sim)) for pk, sim in zip(pks, sims, strict=True) if pk >= 0]
            owners = self.store.faces.faces_by_pk([pk for pk, _ in hits])
            best: dict[str, Candidate] = {}
            for pk, sim in hits:  # the index returns hits best first
                owner = owners.get(pk)
                if owner is None or owner[1] in best:
                    continue
                face_id, subject_id = owner
                distance = squared_distance(sim)
                best[subject_id] = Candidate(subject_id, face_id, float(np.clip(sim, -1.0, 1.0)), distance)
            exhausted = len(hits) < k or k >= self.indexes.max_k
            if len(best) >= top_k or exhausted:
                return sorted(best.values(), key=lambda c: c.distance)[:top_k]
            k = min(self.indexes.max_k, k * 4)
            more_sims, more_pks = self.indexes.search(collection_pk, query[None, :], k, visible_after=after)
            sims, pks = more_sims[0], more_pks[0]
