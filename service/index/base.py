"""What the domain needs from a vector engine, whichever one is configured.

Two implementations: the embedded FAISS registry (``faiss_index.IndexRegistry``, one index per
process, the default) and Milvus (``milvus_index.MilvusIndex``, one engine shared by every API
replica). Both are caches of the store: the store is written first, the engine second, and any
difference is repaired from the store (``reconcile``) at start-up and periodically.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from service.vectors import as_unit_rows as as_unit_rows  # the engines' normaliser, named here too

# Per query row: cosine similarities and face pks, best first; pk −1 pads rows with fewer hits.
SearchHits = tuple[NDArray[np.float32], NDArray[np.int64]]


class EmbeddingSource(Protocol):
    """What an engine needs from the store to rebuild, verify and repair itself."""

    def collection_revision(self, collection_pk: int) -> int: ...

    def face_count(self, collection_pk: int) -> int: ...

    def iter_embeddings(
        self, collection_pk: int, batch_size: int = ...
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]: ...


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one reconciliation pass changed in the engine (all zero when it was in sync)."""

    inserted: int = 0
    deleted: int = 0
    collections_checked: int = 0

    @property
    def changed(self) -> int:
        return self.inserted + self.deleted


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """What serves one collection's searches (``GET /v1/collections/{c}``, ``/readyz``).

    ``kind``: ``exact`` (flat scan), ``compressed`` (PQ4 or IVF codes, re-ranked exactly) or the
    Milvus index type; ``state``: ``ready``, or ``building`` while a compressed index trains in the background
    (the exact index keeps serving meanwhile)."""

    kind: str
    state: str
    faces: int
    params: dict[str, int | str]


class VectorIndex(Protocol):
    """Exact inner-product search over unit vectors, partitioned by collection, keyed by face pk."""

    @property
    def engine(self) -> str:
        """``faiss`` or ``milvus``: reported by /readyz."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def max_k(self) -> int:
        """The most hits one search may ask for."""
        ...

    @property
    def tracks_writes(self) -> bool:
        """Whether ``add`` returns write timestamps that searches on other replicas must wait for."""
        ...

    def load_all(self, collection_pks: Sequence[int]) -> None:
        """At start-up: make the engine hold exactly what the store holds for these collections."""
        ...

    def create(self, collection_pk: int) -> None: ...

    def drop(self, collection_pk: int) -> None: ...

    def add(self, collection_pk: int, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> int:
        """Returns the engine timestamp that makes the write visible (0: visible at once)."""
        ...

    def remove(self, collection_pk: int, ids: NDArray[np.int64]) -> None: ...

    def search(
        self, collection_pk: int, queries: NDArray[np.float32], k: int, *, visible_after: int = 0
    ) -> SearchHits:
        """Top-k per query row; an unknown or empty collection gives rows with no hits.

        ``visible_after``: an ``add`` timestamp (from any replica) whose write the answer must include.
        """
        ...

    def sizes(self, collection_pks: Sequence[int]) -> dict[int, int]:
        """Vectors held per collection."""
        ...

    def index_info(self, collection_pk: int) -> IndexInfo:
        """Which index serves this collection, with its parameters and training state."""
        ...

    def out_of_sync(self, collection_pks: Sequence[int]) -> list[int]:
        """Collections whose vector count differs from the store's face count."""
        ...

    def reconcile(
        self, collection_pks: Sequence[int], *, full: bool = False, suspects: Sequence[int] = ()
    ) -> ReconcileReport:
        """Repair differences with the store (idempotent; safe on several replicas at once).

        ``collection_pks`` must be every collection the store has: the engine's vectors of any other
        collection are deleted. ``full`` compares every face pk; otherwise counts first, and pks only
        where they differ or where the collection is one of ``suspects`` (writes known to be missed:
        a delete and an insert may leave the count right).
        """
        ...

    def close(self) -> None:
        """On clean shutdown (FAISS writes its snapshots; Milvus closes its connection)."""
        ...


def no_hits(n_queries: int) -> SearchHits:
    return np.full((n_queries, 0), -1.0, dtype=np.float32), np.full((n_queries, 0), -1, dtype=np.int64)


class ReadWriteLock:
    """Many readers or one writer; waiting writers go first so enrollment never starves under load."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
