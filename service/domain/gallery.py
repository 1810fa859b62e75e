"""Collections, subjects and faces: the store and the index changed together, store first.

A write is acknowledged only after the store commit; the index is updated right after. The store is
the source of truth: when the vector engine (Milvus) does not take the change, the write is still
acknowledged, as stored but not yet searchable (``StoredFaces.searchable``, the API's ``searchable:
false``), never as a failure a client would retry into a duplicate. Such writes are counted
(``pending_writes``, on /readyz) and pushed to the engine as soon as it answers again
(``push_pending``, polled every ``FACES_INDEX_RETRY_INTERVAL_S``), not at the next periodic
reconcile. A crash between the two steps is repaired at start-up: the index is rebuilt from (or
verified against) the store. The index is any ``VectorIndex`` (embedded FAISS or Milvus): this
module does not know which.

``Gallery`` is the API's only way to the store and the index: every write goes through it, and
so do the reads routes and calibration make (thin pass-throughs, so that nothing above the domain
needs to know how the store is laid out). The pending-write bookkeeping is ``pending_writes``, the
search ranking ``ranking``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.domain.pending_writes import PendingWrites
from service.domain.ranking import Candidate, FaceHit, search_faces, search_subjects
from service.errors import VectorEngineUnavailable
from service.index.base import IndexInfo, ReconcileReport, VectorIndex
from service.storage.engine import InTransaction
from service.storage.records import (
    CollectionLookup,
    CollectionRecord,
    FaceRecord,
    NewFace,
    OwnThresholdSource,
    SubjectRecord,
)
from service.storage.store import FaceStore

# The records the gallery hands out are the domain's vocabulary too: the API names them from here,
# never from the storage package.
__all__ = [
    "CollectionLookup",
    "CollectionRecord",
    "FaceRecord",
    "Gallery",
    "NewFace",
    "StoredFaces",
    "SubjectRecord",
]


@dataclass(frozen=True, slots=True)
class StoredFaces:
    """Faces written to the store; ``searchable`` is False while the vector engine has not taken them."""

    records: list[FaceRecord]
    searchable: bool


class Gallery:
    """The only writer of the store and the indexes."""

    def __init__(self, store: FaceStore, indexes: VectorIndex) -> None:
        self.store = store
        self.indexes = indexes
        self._write_lock = threading.Lock()
        self._pending = PendingWrites()

    # -- the vector engine's share of a write ----------------------------------------------

    def pending_writes(self) -> int:
        """Stored writes the engine has not taken yet (this process's; /readyz reports it)."""
        return self._pending.total()

    def push_pending(self) -> ReconcileReport | None:
        """Push pending writes to the engine now (None: nothing pending). Raises
        VectorEngineUnavailable while the engine is still down; the caller tries again later."""
        return self._pending.push(
            self.indexes, lambda: [c.pk for c in self.store.collections.list_collections()]
        )

    # -- collections -----------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        description: str,
        identify_threshold: float | None = None,
        *,
        within: InTransaction | None = None,
    ) -> CollectionRecord:
        with self._write_lock:
            record = self.store.collections.create_collection(
                name, description, identify_threshold, within=within
            )
            self.indexes.create(record.pk)
            return record

    def update_collection(
        self, name: str, changes: Mapping[str, Any], *, threshold_source: OwnThresholdSource = "collection"
    ) -> CollectionRecord:
        """Change ``description`` and/or ``identify_threshold`` (None: back to the service default);
        ``threshold_source`` records who set the threshold ("collection" or "calibration")."""
        return self.store.collections.update_collection(
            name, dict(changes), threshold_source=threshold_source
        )

    def delete_collection(self, name: str) -> bool:
        """True when the engine dropped it too; False: deleted, the engine catches up later."""
        with self._write_lock:
            pk = self.store.collections.delete_collection(name)
            return self._pending.apply(pk, 1, "collection delete", lambda: self.indexes.drop(pk))

    def list_collections(self) -> list[CollectionRecord]:
        return self.store.collections.list_collections()

    def get_collection(self, name: str) -> CollectionRecord:
        return self.store.collections.get_collection(name)

    def collection_pk(self, name: str) -> int:
        """The collection's key (CollectionNotFound when missing): the cheap existence check."""
        return self.store.collections.collection_pk(name)

    def collection_lookup(self, name: str) -> CollectionLookup:
        """Key and own identify threshold in one cheap read: what identify needs first."""
        return self.store.collections.collection_lookup(name)

    def index_sizes_by_name(self) -> dict[str, int]:
        collections = self.store.collections.list_collections()
        sizes = self.indexes.sizes([c.pk for c in collections])
        return {c.name: sizes.get(c.pk, 0) for c in collections}

    def index_info(self, collection_pk: int) -> IndexInfo | None:
        """Which index serves the collection (exact or compressed), its parameters and state; None
        while the vector engine does not answer (the collection itself is read from the store)."""
        try:
            return self.indexes.index_info(collection_pk)
        except VectorEngineUnavailable:
            return None

    def compressed_index_states(self) -> dict[str, dict[str, object]]:
        """Per collection not served by the exact scan: its index kind, state and parameters."""
        states: dict[str, dict[str, object]] = {}
        if self.indexes.engine != "faiss":
            return states
        for collection in self.store.collections.list_collections():
            info = self.indexes.index_info(collection.pk)
            if info.kind != "exact" or info.state != "ready":
                states[collection.name] = {"kind": info.kind, "state": info.state, **info.params}
        return states

    def index_out_of_sync(self) -> list[int]:
        """Collections whose index does not hold exactly the store's faces (for /readyz)."""
        return self.indexes.out_of_sync([c.pk for c in self.store.collections.list_collections()])

    def reconcile_index(self, *, full: bool = False) -> ReconcileReport:
        """Repair the index from the store: writes that reached the store but not the engine."""
        return self.indexes.reconcile([c.pk for c in self.store.collections.list_collections()], full=full)

    # -- subjects --------------------------------------------------------------------------

    def create_subject(
        self,
        collection: str,
        subject_id: str,
        name: str | None,
        meta: dict[str, Any],
        *,
        within: InTransaction | None = None,
    ) -> SubjectRecord:
        return self.store.subjects.create_subject(collection, subject_id, name, meta, within=within)

    def update_subject(self, collection: str, subject_id: str, changes: Mapping[str, Any]) -> SubjectRecord:
        """Change ``name`` and/or ``metadata`` (the keys present in ``changes``)."""
        return self.store.subjects.update_subject(collection, subject_id, dict(changes))

    def delete_subject(self, collection: str, subject_id: str) -> bool:
        """True when the engine dropped its faces too; False: deleted, the engine catches up later
        (a deleted face is never answered meanwhile: hits are resolved through the store)."""
        with self._write_lock:
            coll_pk, face_pks = self.store.subjects.delete_subject(collection, subject_id)
            ids = np.asarray(face_pks, dtype=np.int64)
            return self._pending.apply(
                coll_pk, len(ids), "subject delete", lambda: self.indexes.remove(coll_pk, ids)
            )

    def list_subjects(
        self, collection: str, offset: int, limit: int, id_prefix: str | None = None
    ) -> tuple[list[SubjectRecord], int]:
        """One page of subjects and the total that match ``id_prefix``."""
        return self.store.subjects.list_subjects(collection, offset, limit, id_prefix)

    def get_subject(self, collection: str, subject_id: str) -> SubjectRecord:
        return self.store.subjects.get_subject(collection, subject_id)

    # -- faces -----------------------------------------------------------------------------

    def add_faces(
        self, collection: str, subject_id: str | None, faces: Sequence[NewFace], *, create_subject: bool
    ) -> list[FaceRecord]:
        """Store faces under ``subject_id`` (None: free-standing faces) and index them."""
        return self.store_faces(collection, subject_id, faces, create_subject=create_subject).records

    def store_faces(
        self,
        collection: str,
        subject_id: str | None,
        faces: Sequence[NewFace],
        *,
        create_subject: bool,
        within: InTransaction | None = None,
    ) -> StoredFaces:
        """Store the faces (``within`` runs in their transaction), then index them.

        An engine that does not take them leaves them stored and pending (``searchable`` False)."""
        with self._write_lock:
            records = self.store.faces.add_faces(
                collection, subject_id, faces, create_subject=create_subject, within=within
            )
            if not records:
                return StoredFaces(records, True)
            ids = np.fromiter((r.pk for r in records), dtype=np.int64, count=len(records))
            vectors = np.stack([f.embedding for f in faces]).astype(np.float32)
            coll_pk = records[0].collection_pk
            written: list[int] = []
            indexed = self._pending.apply(
                coll_pk,
                len(records),
                "enrollment",
                lambda: written.append(self.indexes.add(coll_pk, ids, vectors)),
            )
            if indexed and written[0] and self.indexes.tracks_writes:
                # Before the ack: other replicas' searches wait for it.
                self.store.vector_writes.record_vector_write(coll_pk, written[0])
            return StoredFaces(records, indexed)

    def delete_face(self, collection: str, face_id: str) -> bool:
        """True when the engine dropped it too; False: deleted, the engine catches up later."""
        with self._write_lock:
            record = self.store.faces.delete_face(collection, face_id)
            ids = np.asarray([record.pk], dtype=np.int64)
            return self._pending.apply(
                record.collection_pk, 1, "face delete", lambda: self.indexes.remove(record.collection_pk, ids)
            )

    def delete_free_faces(self, collection: str, face_ids: Sequence[str]) -> list[FaceRecord]:
        """Delete the faces among ``face_ids`` that belong to no subject; returns those deleted."""
        with self._write_lock:
            coll_pk, records = self.store.faces.delete_free_faces(collection, face_ids)
            if records:
                ids = np.asarray([r.pk for r in records], dtype=np.int64)
                # An engine that is down catches up later; hits are resolved through the store meanwhile.
                self._pending.apply(
                    coll_pk, len(ids), "face delete", lambda: self.indexes.remove(coll_pk, ids)
                )
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

    def list_faces(self, collection: str, subject_id: str) -> list[FaceRecord]:
        return self.store.faces.list_faces(collection, subject_id)

    def get_face(self, collection: str, face_id: str) -> FaceRecord:
        return self.store.faces.get_face(collection, face_id)

    def get_thumbnail(self, collection: str, face_id: str) -> bytes:
        """The face's aligned JPEG crop (FaceNotFound / ThumbnailNotFound when there is none)."""
        return self.store.faces.get_thumbnail(collection, face_id)

    def subject_embeddings(self, collection: str, subject_id: str) -> tuple[list[str], NDArray[np.float32]]:
        """The subject's face ids and their unit embeddings (one row each): what verify compares."""
        return self.store.faces.subject_embeddings(collection, subject_id)

    def iter_subject_embeddings(
        self, collection_pk: int
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Every embedding of a collection with its owning subject's key, in batches (calibration)."""
        return self.store.faces.iter_subject_embeddings(collection_pk)

    # -- health and lifecycle ----------------------------------------------------------------

    @property
    def vector_engine(self) -> str:
        """Which vector engine serves the index ("faiss", "milvus")."""
        return self.indexes.engine

    def ping_store(self) -> None:
        """One trivial query: raises SQLAlchemyError when the store cannot be reached."""
        self.store.ping()

    def close(self) -> None:
        """At shutdown: the index first (it may flush), then the store's connections."""
        self.indexes.close()
        self.store.close()

    # -- search (``ranking``) --------------------------------------------------------------------

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
        return search_faces(
            self.store, self.indexes, collection_pk, query, max_faces, max_distance, exclude_pk
        )

    def search(self, collection_pk: int, queries: NDArray[np.float32], top_k: int) -> list[list[Candidate]]:
        """Per query, the ``top_k`` best subjects, each represented by its closest face.

        Takes the key the caller already resolved (``collections.collection_pk``) so that a request looks
        its collection up once; a collection deleted in between searches as empty.
        """
        return search_subjects(self.store, self.indexes, collection_pk, queries, top_k)
