"""What the domain needs from a vector engine, whichever one is configured.

Two implementations: the embedded FAISS registry (``faiss_index.IndexRegistry``, one index per
process, the default) and Milvus (``milvus_index.MilvusIndex``, one engine shared by every API
replica). Both are caches of the store: the store is written first, the engine second, and any
difference is repaired from the store (``reconcile``) at start-up and periodically.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

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


def as_unit_rows(vectors: NDArray[np.float32], dim: int) -> NDArray[np.float32]:
    """C-contiguous float32 rows scaled to unit length (inner product = cosine)."""
    array = np.array(vectors, dtype=np.float32, copy=True).reshape(-1, dim)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    np.divide(array, norms, out=array, where=norms > 0)
    return np.ascontiguousarray(array)


def no_hits(n_queries: int) -> SearchHits:
    return np.full((n_queries, 0), -1.0, dtype=np.float32), np.full((n_queries, 0), -1, dtype=np.int64)
