"""Milvus as the vector engine: one engine shared by every API replica (``FACES_VECTOR_BACKEND=milvus``).

Layout (``milvus_schema``): one Milvus collection (``FACES_MILVUS_COLLECTION``), primary key = the
store's face pk (INT64, never reused), partition key = the store's collection pk, ``FLOAT_VECTOR(dim)``
with metric IP on unit vectors. The vector index is ``FACES_MILVUS_INDEX``: ``FLAT`` (the default) is
the same exact cosine search as FAISS; ``HNSW`` and ``IVF_FLAT`` are approximate (faster on large
galleries, may miss a neighbour: recall measured on real face embeddings by
``bench/bench_milvus_ann.py``). The index is built when the Milvus collection is created; a
collection that already exists keeps its index (a warning names the difference) and is searched with
the parameters that fit the index it has.

Writes go to the store first, then here: ``insert`` for new faces, ``delete`` by pk. A write that
reached the store but not Milvus (a crash in between, Milvus down) is repaired by ``reconcile``
(``milvus_reconcile``): in full at start-up (every pk compared, batch by batch), and by counts every
``FACES_INDEX_RECONCILE_INTERVAL_S`` on every replica, with a full pass for a collection whose count
differs. Repairs are idempotent (delete by pk, then insert), so replicas may run them concurrently.

Milvus 2.3.5 routes ``upsert`` rows to the wrong partition when the collection has a partition key
(fixed upstream by milvus-io/milvus#30772, Feb. 2024): rows then vanish from filtered searches.
This module therefore never upserts: a repair is delete-by-pk followed by insert.

Reads: identify searches at ``FACES_MILVUS_SEARCH_CONSISTENCY``. The default, ``Customized``, gives
read-your-writes across replicas cheaply: every acknowledged insert's Milvus timestamp is kept in the
store (``store.vector_writes.record_vector_write``, by the Gallery), and every replica searches with
the latest one as its guarantee timestamp, so Milvus waits only when the collection was written a moment ago.
``Strong`` gives the same guarantee but waits for the proxy's next time tick on every search
(``proxy.timeTickInterval``, 200 ms by default); ``Bounded``/``Eventually`` may miss faces enrolled a
moment ago through another replica. Counts and repairs always read Strong. A failed call to a
server opens a fresh connection in the background (``milvus_connection``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pymilvus import MilvusClient, MilvusException

from service.errors import VectorEngineUnavailable
from service.index.base import EmbeddingSource, IndexInfo, ReconcileReport, SearchHits, no_hits
from service.index.milvus_connection import ENGINE_ERRORS, MilvusConnection
from service.index.milvus_reconcile import MAX_WINDOW, reconcile
from service.index.milvus_schema import (
    PARTITION_FIELD,
    PK_FIELD,
    VECTOR_FIELD,
    AnnIndex,
    ensure_collection,
    in_collection,
    index_state,
)
from service.settings import MILVUS_DEFAULTS, MilvusConsistency, MilvusSettings
from service.vectors import as_unit_rows

__all__ = ["AnnIndex", "Consistency", "MilvusIndex"]

logger = logging.getLogger(__name__)

Consistency = MilvusConsistency
T = TypeVar("T")

INSERT_BATCH = 4_096  # rows per insert call: ~2.5 MB of protobuf at 128-d
_WRITE_RETRIES = (0.1, 0.4, 1.0)  # seconds between attempts


class MilvusIndex:
    """``base.VectorIndex`` on a Milvus server (or milvus-lite, for a local ``*.db`` path)."""

    def __init__(
        self,
        store: EmbeddingSource,
        dim: int,
        *,
        uri: str,
        collection: str = MILVUS_DEFAULTS.collection,
        token: str = MILVUS_DEFAULTS.token,
        db_name: str = MILVUS_DEFAULTS.db_name,
        search_consistency: Consistency = MILVUS_DEFAULTS.search_consistency,
        ann: AnnIndex | None = None,
        timeout_s: float = MILVUS_DEFAULTS.timeout_s,
    ) -> None:
        self._store = store
        self._ann = ann or AnnIndex()  # what the collection is searched with (fitted to what it has)
        self._dim = dim
        self._name = collection
        self._consistency = search_consistency
        try:
            self._connection = MilvusConnection(uri, token=token, db_name=db_name, timeout_s=timeout_s)
            self._ann = ensure_collection(self._client, self._name, dim, self._ann)
        except MilvusException as exc:
            raise VectorEngineUnavailable(f"Milvus at {uri} is not usable: {exc.message}") from exc
        logger.info(
            "vector engine: Milvus %s, collection %r (%d-d, %s, IP), identify consistency %s",
            uri,
            collection,
            dim,
            self._ann.describe(),
            search_consistency,
        )

    @classmethod
    def from_settings(cls, store: EmbeddingSource, dim: int, milvus: MilvusSettings) -> MilvusIndex:
        """The index ``FACES_MILVUS_*`` describe (``Settings.milvus``)."""
        return cls(
            store,
            dim,
            uri=milvus.uri,
            collection=milvus.collection,
            token=milvus.token,
            db_name=milvus.db_name,
            search_consistency=milvus.search_consistency,
            ann=AnnIndex.from_settings(milvus),
            timeout_s=milvus.timeout_s,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def _client(self) -> MilvusClient:
        """The current client (a fresh one after a reconnect)."""
        return self._connection.client

    @property
    def engine(self) -> str:
        return "milvus"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_k(self) -> int:
        return MAX_WINDOW

    @property
    def consistency(self) -> Consistency:
        return self._consistency

    @property
    def uri(self) -> str:
        return self._connection.uri

    @property
    def name(self) -> str:
        """The Milvus collection."""
        return self._name

    @property
    def ann(self) -> AnnIndex:
        """The vector index searched: the configured one, or the one an existing collection has."""
        return self._ann

    @property
    def tracks_writes(self) -> bool:
        return self._consistency == "Customized"

    def index_state(self) -> dict[str, Any]:
        """Milvus's description of the vector index: type, build parameters, indexed/pending rows."""
        return index_state(self._client, self._name)

    # -- writes ----------------------------------------------------------------------------

    def create(self, collection_pk: int) -> None:
        """Nothing to do: a collection is a partition-key value, not a Milvus object."""

    def drop(self, collection_pk: int) -> None:
        self._write(
            lambda: self._client.delete(
                self._name, filter=in_collection(collection_pk), **self._connection.call_timeout
            )
        )

    def add(self, collection_pk: int, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> int:
        """Insert; returns the Milvus timestamp of the last batch (searches as of it include them)."""
        if len(ids) == 0:
            return 0
        rows = as_unit_rows(vectors, self._dim)
        pks = np.asarray(ids, dtype=np.int64)
        written = 0
        for start in range(0, len(pks), INSERT_BATCH):
            end = start + INSERT_BATCH
            batch = [
                {PK_FIELD: int(pk), PARTITION_FIELD: int(collection_pk), VECTOR_FIELD: row}
                for pk, row in zip(pks[start:end], rows[start:end], strict=True)
            ]
            written = max(written, self._write(lambda batch=batch: self._insert(batch)))  # type: ignore[misc]
        return written

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        # MilvusClient.insert drops the mutation's timestamp; the connection under it returns it
        # (pymilvus is pinned; tests/test_milvus_server.py fails if this stops carrying it).
        result = self._client._get_connection().insert_rows(self._name, rows, **self._connection.call_timeout)
        return int(getattr(result, "timestamp", 0) or 0)

    def remove(self, collection_pk: int, ids: NDArray[np.int64]) -> None:
        pks = [int(pk) for pk in np.asarray(ids, dtype=np.int64)]
        for start in range(0, len(pks), MAX_WINDOW):
            chunk = pks[start : start + MAX_WINDOW]
            self.delete_pks(chunk)

    def delete_pks(self, pks: list[int]) -> None:
        """Delete by primary key (at most ``MAX_WINDOW`` at a time), whatever collection they are in."""
        self._write(lambda: self._client.delete(self._name, ids=pks, **self._connection.call_timeout))

    def _write(self, call: Callable[[], T]) -> T:
        """A write with a few quick retries; then 503 (the store already holds it: repaired later)."""
        for attempt, pause in enumerate((*_WRITE_RETRIES, None)):
            try:
                return call()
            except ENGINE_ERRORS as exc:
                self._connection.reconnect_soon(exc)
                if pause is None:
                    raise VectorEngineUnavailable("The vector engine did not accept the change.") from exc
                logger.warning("Milvus write failed (attempt %d): %s; retrying", attempt + 1, exc)
                time.sleep(pause)
        raise AssertionError("unreachable")

    # -- reads -----------------------------------------------------------------------------

    def search(
        self, collection_pk: int, queries: NDArray[np.float32], k: int, *, visible_after: int = 0
    ) -> SearchHits:
        rows = as_unit_rows(queries, self._dim)
        k = max(1, min(k, MAX_WINDOW))
        consistency: dict[str, Any] = {"consistency_level": self._consistency}
        if self._consistency == "Customized":  # as of the last acknowledged write (1: no wait)
            consistency["guarantee_timestamp"] = max(int(visible_after), 1)
        try:
            results = self._client.search(
                self._name,
                data=list(rows),
                anns_field=VECTOR_FIELD,
                limit=k,
                filter=in_collection(collection_pk),
                output_fields=[],
                search_params={"metric_type": "IP", "params": self._ann.search_params(k)},
                **consistency,
                **self._connection.call_timeout,
            )
        except ENGINE_ERRORS as exc:
            self._connection.reconnect_soon(exc)
            raise VectorEngineUnavailable("The vector engine did not answer the search.") from exc
        width = max((len(hits) for hits in results), default=0)
        if width == 0:
            return no_hits(len(rows))
        sims = np.full((len(rows), width), -1.0, dtype=np.float32)
        pks = np.full((len(rows), width), -1, dtype=np.int64)
        for i, hits in enumerate(results):
            for j, hit in enumerate(hits):
                sims[i, j] = float(hit["distance"])
                pks[i, j] = _hit_pk(hit)
        return sims, pks

    def count(self, collection_pk: int) -> int:
        return self._count(in_collection(collection_pk))

    def index_info(self, collection_pk: int) -> IndexInfo:
        """The Milvus index every collection shares (exact when FLAT)."""
        params: dict[str, int | str] = {**self._ann.build_params(), **self._ann.search_params(1)}
        kind = "exact" if self._ann.kind == "FLAT" else self._ann.kind
        return IndexInfo(kind=kind, state="ready", faces=self.count(collection_pk), params=params)

    def _count(self, expr: str) -> int:
        rows = self.query(expr, ["count(*)"], limit=None)
        return int(rows[0]["count(*)"]) if rows else 0

    def query(self, expr: str, fields: list[str], limit: int | None = MAX_WINDOW) -> list[dict[str, Any]]:
        """A Strong read (counts, repairs); an unreachable engine is a 503, not a 500."""
        extra: dict[str, Any] = {} if limit is None else {"limit": limit}
        try:
            rows = self._client.query(
                self._name,
                filter=expr,
                output_fields=fields,
                consistency_level="Strong",
                **extra,
                **self._connection.call_timeout,
            )
        except ENGINE_ERRORS as exc:
            self._connection.reconnect_soon(exc)
            raise VectorEngineUnavailable("The vector engine did not answer.") from exc
        return list(rows)

    def sizes(self, collection_pks: Sequence[int]) -> dict[int, int]:
        return {pk: self.count(pk) for pk in collection_pks}

    def out_of_sync(self, collection_pks: Sequence[int]) -> list[int]:
        """Counts compared with the store; a mismatch is re-checked once to ride over in-flight writes."""
        suspects = [pk for pk in collection_pks if self.count(pk) != self._store.face_count(pk)]
        if suspects:
            time.sleep(0.2)
            suspects = [pk for pk in suspects if self.count(pk) != self._store.face_count(pk)]
        return suspects

    # -- repair ----------------------------------------------------------------------------

    def load_all(self, collection_pks: Sequence[int]) -> None:
        started = time.perf_counter()
        report = self.reconcile(collection_pks, full=True)
        logger.info(
            "Milvus reconciled with the store at start-up: %d collections, %d inserted, %d deleted (%.2fs)",
            report.collections_checked,
            report.inserted,
            report.deleted,
            time.perf_counter() - started,
        )

    def reconcile(
        self, collection_pks: Sequence[int], *, full: bool = False, suspects: Sequence[int] = ()
    ) -> ReconcileReport:
        """Make Milvus hold exactly the store's faces (``milvus_reconcile.reconcile``); ``suspects``:
        collections this replica knows Milvus missed writes of, diffed even when the counts agree."""
        return reconcile(self, self._store, collection_pks, full=full, suspects=suspects)

    def flush(self) -> None:
        """Seal growing segments (after a bulk load); Milvus also does this by itself over time."""
        self._client.flush(self._name, **self._connection.call_timeout)

    def destroy(self) -> None:
        """Drop the whole Milvus collection, every face collection in it (benchmarks, tests)."""
        self._client.drop_collection(self._name)

    def close(self) -> None:
        self._connection.close()


def _hit_pk(hit: Any) -> int:
    """A server 2.3 names the primary key ``id`` in hits; milvus-lite by its field name."""
    value = hit.get(PK_FIELD)
    if value is None:
        value = hit.get("id")
    return int(value)
