"""Making Milvus hold exactly the store's faces: missing pks inserted, extra or doubled ones removed.

In full at start-up (every pk compared, batch by batch), and by counts every
``FACES_INDEX_RECONCILE_INTERVAL_S`` on every replica, with a full pass for a collection whose count
differs. Repairs are idempotent (delete by pk, then insert), so replicas may run them concurrently;
Milvus 2.3.5 mis-routes ``upsert`` with a partition key (``milvus_index``), so none is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from service.index.base import EmbeddingSource, ReconcileReport
from service.index.milvus_schema import PARTITION_FIELD, PK_FIELD, in_collection

logger = logging.getLogger(__name__)

# Milvus caps a search's topk and a query's offset + limit at 16384.
MAX_WINDOW = 16_384
STORE_BATCH = 8_192  # store rows compared per range query during a full reconcile
_INT64_MAX = 2**63 - 1


class MilvusVectors(Protocol):
    """What a repair needs of the Milvus index (``milvus_index.MilvusIndex``)."""

    def count(self, collection_pk: int) -> int: ...

    def add(self, collection_pk: int, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> int: ...

    def remove(self, collection_pk: int, ids: NDArray[np.int64]) -> None: ...

    def query(self, expr: str, fields: list[str], limit: int | None = MAX_WINDOW) -> list[dict[str, Any]]: ...

    def delete_pks(self, pks: list[int]) -> None: ...


def reconcile(
    engine: MilvusVectors,
    store: EmbeddingSource,
    collection_pks: Sequence[int],
    *,
    full: bool,
    suspects: Sequence[int] = (),
) -> ReconcileReport:
    """``full=False`` (the periodic pass) compares counts and diffs only collections that differ,
    and the ``suspects`` (writes this replica knows Milvus missed)."""
    inserted = deleted = 0
    suspected = set(suspects)
    for pk in collection_pks:
        if not full and pk not in suspected and engine.count(pk) == store.face_count(pk):
            continue
        added, removed = reconcile_collection(engine, store, pk)
        inserted, deleted = inserted + added, deleted + removed
        if added or removed:
            logger.warning(
                "collection %d: Milvus differed from the store; %d inserted, %d deleted",
                pk,
                added,
                removed,
            )
    deleted += delete_orphans(engine, collection_pks)
    return ReconcileReport(inserted, deleted, len(collection_pks))


def reconcile_collection(
    engine: MilvusVectors, store: EmbeddingSource, collection_pk: int
) -> tuple[int, int]:
    """(inserted, deleted) after comparing the collection's pks with the store's, range by range."""
    inserted = deleted = 0
    low = -_INT64_MAX
    for ids, vectors in store.iter_embeddings(collection_pk, batch_size=STORE_BATCH):
        high = int(ids[-1])
        held = pks_in_range(engine, collection_pk, low, high)
        unique, counts = np.unique(held, return_counts=True)
        extra = np.setdiff1d(unique, ids, assume_unique=True)
        doubled = unique[counts > 1]
        redo = np.isin(ids, unique, invert=True) | np.isin(ids, doubled)
        if len(extra) or len(doubled):
            engine.remove(collection_pk, np.concatenate([extra, doubled]))
            deleted += len(extra)
        if redo.any():
            engine.add(collection_pk, ids[redo], vectors[redo])
            inserted += int(np.count_nonzero(np.isin(ids[redo], unique, invert=True)))
        low = high + 1
    while True:  # beyond the store's last pk: deleted faces Milvus still holds
        tail = np.unique(pks_in_range(engine, collection_pk, low, _INT64_MAX))
        if len(tail) == 0:
            return inserted, deleted
        engine.remove(collection_pk, tail)
        deleted += len(tail)


def pks_in_range(engine: MilvusVectors, collection_pk: int, low: int, high: int) -> NDArray[np.int64]:
    """Every pk Milvus holds for the collection in [low, high], duplicates included."""
    expr = f"{in_collection(collection_pk)} and {PK_FIELD} >= {low} and {PK_FIELD} <= {high}"
    rows = engine.query(expr, [PK_FIELD])
    if len(rows) < MAX_WINDOW or low >= high:
        return np.fromiter((int(r[PK_FIELD]) for r in rows), dtype=np.int64, count=len(rows))
    middle = low + (high - low) // 2  # a full window may be truncated: split the range
    first = pks_in_range(engine, collection_pk, low, middle)
    return np.concatenate([first, pks_in_range(engine, collection_pk, middle + 1, high)])


def delete_orphans(engine: MilvusVectors, collection_pks: Sequence[int]) -> int:
    """Vectors of collections the store no longer has (a crash during a collection delete)."""
    expr = (
        f"{PARTITION_FIELD} not in [{', '.join(str(int(pk)) for pk in collection_pks)}]"
        if collection_pks
        else f"{PK_FIELD} >= {-_INT64_MAX}"
    )
    deleted = 0
    while True:
        rows = engine.query(expr, [PK_FIELD])
        if not rows:
            return deleted
        ids = sorted({int(r[PK_FIELD]) for r in rows})
        engine.delete_pks(ids)
        deleted += len(ids)
