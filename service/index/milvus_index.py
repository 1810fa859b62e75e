"""Milvus as the vector engine: one engine shared by every API replica (``FACES_VECTOR_BACKEND=milvus``).

Layout: one Milvus collection (``FACES_MILVUS_COLLECTION``), primary key = the store's face pk
(INT64, never reused), partition key = the store's collection pk, ``FLOAT_VECTOR(dim)`` with metric
IP on unit vectors. The vector index is ``FACES_MILVUS_INDEX``: ``FLAT`` (the default) is the same exact
cosine search as FAISS; ``HNSW`` and ``IVF_FLAT`` are approximate (faster on large galleries, may miss
a neighbour: recall measured on real face embeddings by ``bench/bench_milvus_ann.py``). The index is
built when the Milvus collection is created; a collection that already exists keeps its index (a
warning names the difference) and is searched with the parameters that fit the index it has.

Writes go to the store first, then here: ``insert`` for new faces, ``delete`` by pk. A write that
reached the store but not Milvus (a crash in between, Milvus down) is repaired by ``reconcile``:
in full at start-up (every pk compared, batch by batch), and by counts every
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
moment ago through another replica. Counts and repairs always read Strong.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, get_args

import numpy as np
from numpy.typing import NDArray
from pymilvus import DataType, MilvusClient, MilvusException

from service.errors import VectorEngineUnavailable
from service.index.base import EmbeddingSource, ReconcileReport, SearchHits, as_unit_rows, no_hits

logger = logging.getLogger(__name__)

Consistency = Literal["Customized", "Strong", "Bounded", "Session", "Eventually"]
IndexKind = Literal["FLAT", "HNSW", "IVF_FLAT"]
T = TypeVar("T")

PK_FIELD, PARTITION_FIELD, VECTOR_FIELD = "pk", "collection_pk", "embedding"
# Milvus caps a search's topk and a query's offset + limit at 16384.
MAX_WINDOW = 16_384
INSERT_BATCH = 4_096  # rows per insert call: ~2.5 MB of protobuf at 128-d
STORE_BATCH = 8_192  # store rows compared per range query during a full reconcile
NUM_PARTITIONS = 16
_WRITE_RETRIES = (0.1, 0.4, 1.0)  # seconds between attempts
# After a failed call to a Milvus server, a fresh connection is opened in the background, at most this
# often: a replica must never need a restart after a Milvus outage.
RECONNECT_MIN_INTERVAL_S = 5.0
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class AnnIndex:
    """The Milvus vector index and its knobs: exact ``FLAT``, or approximate ``HNSW`` / ``IVF_FLAT``.

    HNSW: a graph of ``hnsw_m`` links per vector built with ``hnsw_ef_construction`` candidates; a
    search explores ``hnsw_ef`` candidates (raised to k when k is larger: Milvus requires ef >= k).
    IVF_FLAT: ``ivf_nlist`` k-means cells per segment; a search scans the ``ivf_nprobe`` nearest cells
    (at most ``ivf_nlist``). Larger ef / nprobe: higher recall, slower searches.
    """

    kind: IndexKind = "FLAT"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 128
    ivf_nlist: int = 1024
    ivf_nprobe: int = 64

    def build_params(self) -> dict[str, int]:
        if self.kind == "HNSW":
            return {"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}
        if self.kind == "IVF_FLAT":
            return {"nlist": self.ivf_nlist}
        return {}

    def search_params(self, k: int) -> dict[str, int]:
        if self.kind == "HNSW":
            return {"ef": max(self.hnsw_ef, k)}
        if self.kind == "IVF_FLAT":
            return {"nprobe": max(1, min(self.ivf_nprobe, self.ivf_nlist))}
        return {}

    def describe(self) -> str:
        if self.kind == "HNSW":
            return f"HNSW M={self.hnsw_m} efConstruction={self.hnsw_ef_construction} ef={self.hnsw_ef}"
        if self.kind == "IVF_FLAT":
            return f"IVF_FLAT nlist={self.ivf_nlist} nprobe={self.ivf_nprobe}"
        return "FLAT (exact)"


class MilvusIndex:
    """``base.VectorIndex`` on a Milvus server (or milvus-lite, for a local ``*.db`` path)."""

    def __init__(
        self,
        store: EmbeddingSource,
        dim: int,
        *,
        uri: str,
        collection: str = "faces",
        token: str = "",
        db_name: str = "",
        search_consistency: Consistency = "Customized",
        ann: AnnIndex | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._store = store
        self._ann = ann or AnnIndex()  # what the collection is searched with (fitted to what it has)
        self._dim = dim
        self._name = collection
        self._consistency = search_consistency
        self._timeout = timeout_s
        self._uri = uri
        self._connect_args: dict[str, Any] = {
            "uri": uri,
            "token": token,
            "db_name": db_name,
            "timeout": timeout_s,
        }
        # A server (not a milvus-lite file) gets a connection of its own, so that a reconnect
        # really replaces it rather than handing back pymilvus' shared, possibly stale, channel.
        self._remote = "://" in uri
        if self._remote:
            self._connect_args["dedicated"] = True
        self._reconnect_lock = threading.Lock()
        self._reconnecting = False
        self._last_reconnect = 0.0
        try:
            self._client = MilvusClient(**self._connect_args)
            self._ensure_collection()
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

    # -- properties ------------------------------------------------------------------------

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
        return self._uri

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

    # -- schema ----------------------------------------------------------------------------

    def _ensure_collection(self) -> None:
        if self._client.has_collection(self._name):
            self._check_schema(self._client.describe_collection(self._name))
            self._adopt_existing_index()
        else:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(PK_FIELD, DataType.INT64, is_primary=True)
            schema.add_field(PARTITION_FIELD, DataType.INT64, is_partition_key=True)
            schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self._dim)
            index_params = self._client.prepare_index_params()
            index_params.add_index(
                field_name=VECTOR_FIELD,
                index_type=self._ann.kind,
                metric_type="IP",
                params=self._ann.build_params(),
            )
            self._client.create_collection(
                self._name,
                schema=schema,
                index_params=index_params,
                num_partitions=NUM_PARTITIONS,
                consistency_level="Strong",
            )
            logger.info("created Milvus collection %r with a %s index", self._name, self._ann.describe())
        self._client.load_collection(self._name)

    def _check_schema(self, described: dict[str, Any]) -> None:
        fields = {f["name"]: f for f in described.get("fields", [])}
        vector = fields.get(VECTOR_FIELD)
        dim = int((vector or {}).get("params", {}).get("dim", -1))
        partition = fields.get(PARTITION_FIELD, {})
        if PK_FIELD not in fields or dim != self._dim or not partition.get("is_partition_key"):
            raise VectorEngineUnavailable(
                f"Milvus collection {self._name!r} exists with another layout (vector dim {dim}, model "
                f"{self._dim}); set FACES_MILVUS_COLLECTION to a new name or drop it."
            )

    def index_state(self) -> dict[str, Any]:
        """Milvus's description of the vector index: type, build parameters, indexed/pending rows."""
        names = self._client.list_indexes(self._name, field_name=VECTOR_FIELD)
        return dict(self._client.describe_index(self._name, names[0])) if names else {}

    def _adopt_existing_index(self) -> None:
        """Search an existing collection with parameters that fit the index it has; warn on a mismatch.

        The index is not rebuilt here: with several replicas starting at once, each would drop and
        rebuild it. To change it, point ``FACES_MILVUS_COLLECTION`` at a new name (start-up fills it
        from the store) or drop the collection.
        """
        found = self.index_state()
        kind = str(found.get("index_type", "")).upper()
        if kind not in get_args(IndexKind):
            logger.warning(
                "Milvus collection %r has a %s index on %r, not one this service builds (%s); searching "
                "it with default parameters",
                self._name,
                kind or "missing",
                VECTOR_FIELD,
                ", ".join(get_args(IndexKind)),
            )
            return
        built = {key: int(found[key]) for key in ("M", "efConstruction", "nlist") if key in found}
        existing = replace(
            self._ann,
            kind=kind,  # type: ignore[arg-type]  # checked against IndexKind above
            hnsw_m=built.get("M", self._ann.hnsw_m),
            hnsw_ef_construction=built.get("efConstruction", self._ann.hnsw_ef_construction),
            ivf_nlist=built.get("nlist", self._ann.ivf_nlist),
        )
        if existing.build_params() != self._ann.build_params() or existing.kind != self._ann.kind:
            logger.warning(
                "Milvus collection %r already has a %s index; FACES_MILVUS_INDEX asks for %s. The "
                "existing index is kept and searched as it is. To change it, set "
                "FACES_MILVUS_COLLECTION to a new name (start-up fills it from the store) or drop the "
                "collection.",
                self._name,
                existing.describe(),
                self._ann.describe(),
            )
        self._ann = existing

    # -- writes ----------------------------------------------------------------------------

    def create(self, collection_pk: int) -> None:
        """Nothing to do: a collection is a partition-key value, not a Milvus object."""

    def drop(self, collection_pk: int) -> None:
        self._write(lambda: self._client.delete(self._name, filter=_in_collection(collection_pk)))

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
        result = self._client._get_connection().insert_rows(self._name, rows)
        return int(getattr(result, "timestamp", 0) or 0)

    def remove(self, collection_pk: int, ids: NDArray[np.int64]) -> None:
        pks = [int(pk) for pk in np.asarray(ids, dtype=np.int64)]
        for start in range(0, len(pks), MAX_WINDOW):
            chunk = pks[start : start + MAX_WINDOW]
            self._write(lambda chunk=chunk: self._client.delete(self._name, ids=chunk))  # type: ignore[misc]

    def _write(self, call: Callable[[], T]) -> T:
        """A write with a few quick retries; then 503 (the store already holds it: repaired later)."""
        for attempt, pause in enumerate((*_WRITE_RETRIES, None)):
            try:
                return call()
            except MilvusException as exc:
                if pause is None:
                    self._reconnect_soon(exc)
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
                filter=_in_collection(collection_pk),
                output_fields=[],
                search_params={"metric_type": "IP", "params": self._ann.search_params(k)},
                **consistency,
            )
        except MilvusException as exc:
            self._reconnect_soon(exc)
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
        return self._count(_in_collection(collection_pk))

    def _count(self, expr: str) -> int:
        rows = self._query(expr, ["count(*)"], limit=None)
        return int(rows[0]["count(*)"]) if rows else 0

    def _query(self, expr: str, fields: list[str], limit: int | None = MAX_WINDOW) -> list[dict[str, Any]]:
        """A Strong read (counts, repairs); an unreachable engine is a 503, not a 500."""
        extra: dict[str, Any] = {} if limit is None else {"limit": limit}
        try:
            rows = self._client.query(
                self._name, filter=expr, output_fields=fields, consistency_level="Strong", **extra
            )
        except MilvusException as exc:
            self._reconnect_soon(exc)
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
        """Make Milvus hold exactly the store's faces: missing pks inserted, extra or doubled ones fixed.

        ``full=False`` (the periodic pass) compares counts and diffs only collections that differ,
        and the ``suspects`` (writes this replica knows Milvus missed).
        """
        inserted = deleted = 0
        suspected = set(suspects)
        for pk in collection_pks:
            if not full and pk not in suspected and self.count(pk) == self._store.face_count(pk):
                continue
            added, removed = self._reconcile_collection(pk)
            inserted, deleted = inserted + added, deleted + removed
            if added or removed:
                logger.warning(
                    "collection %d: Milvus differed from the store; %d inserted, %d deleted",
                    pk,
                    added,
                    removed,
                )
        deleted += self._delete_orphans(collection_pks)
        return ReconcileReport(inserted, deleted, len(collection_pks))

    def _reconcile_collection(self, collection_pk: int) -> tuple[int, int]:
        inserted = deleted = 0
        low = -_INT64_MAX
        for ids, vectors in self._store.iter_embeddings(collection_pk, batch_size=STORE_BATCH):
            high = int(ids[-1])
            held = self._pks_in_range(collection_pk, low, high)
            unique, counts = np.unique(held, return_counts=True)
            extra = np.setdiff1d(unique, ids, assume_unique=True)
            doubled = unique[counts > 1]
            redo = np.isin(ids, unique, invert=True) | np.isin(ids, doubled)
            if len(extra) or len(doubled):
                self.remove(collection_pk, np.concatenate([extra, doubled]))
                deleted += len(extra)
            if redo.any():
                self.add(collection_pk, ids[redo], vectors[redo])
                inserted += int(np.count_nonzero(np.isin(ids[redo], unique, invert=True)))
            low = high + 1
        while True:  # beyond the store's last pk: deleted faces Milvus still holds
            tail = np.unique(self._pks_in_range(collection_pk, low, _INT64_MAX))
            if len(tail) == 0:
                return inserted, deleted
            self.remove(collection_pk, tail)
            deleted += len(tail)

    def _pks_in_range(self, collection_pk: int, low: int, high: int) -> NDArray[np.int64]:
        """Every pk Milvus holds for the collection in [low, high], duplicates included."""
        expr = f"{_in_collection(collection_pk)} and {PK_FIELD} >= {low} and {PK_FIELD} <= {high}"
        rows = self._query(expr, [PK_FIELD])
        if len(rows) < MAX_WINDOW or low >= high:
            return np.fromiter((int(r[PK_FIELD]) for r in rows), dtype=np.int64, count=len(rows))
        middle = low + (high - low) // 2  # a full window may be truncated: split the range
        first = self._pks_in_range(collection_pk, low, middle)
        return np.concatenate([first, self._pks_in_range(collection_pk, middle + 1, high)])

    def _delete_orphans(self, collection_pks: Sequence[int]) -> int:
        """Vectors of collections the store no longer has (a crash during a collection delete)."""
        expr = (
            f"{PARTITION_FIELD} not in [{', '.join(str(int(pk)) for pk in collection_pks)}]"
            if collection_pks
            else f"{PK_FIELD} >= {-_INT64_MAX}"
        )
        deleted = 0
        while True:
            rows = self._query(expr, [PK_FIELD])
            if not rows:
                return deleted
            ids = sorted({int(r[PK_FIELD]) for r in rows})
            self._write(lambda ids=ids: self._client.delete(self._name, ids=ids))  # type: ignore[misc]
            deleted += len(ids)

    def flush(self) -> None:
        """Seal growing segments (after a bulk load); Milvus also does this by itself over time."""
        self._client.flush(self._name)

    def destroy(self) -> None:
        """Drop the whole Milvus collection, every face collection in it (benchmarks, tests)."""
        self._client.drop_collection(self._name)

    def close(self) -> None:
        self._client.close()

    # -- connection ------------------------------------------------------------------------

    def _reconnect_soon(self, failure: MilvusException) -> None:
        """After a failed call to a server, open a fresh connection in the background.

        pymilvus recovers most broken channels by itself, but a replica was once seen failing every
        call for minutes after Milvus came back until it was restarted (deploy/README.md, Milvus
        smoke test). The request that failed answers 503 at once; the next ones use the new client.
        """
        if not self._remote:
            return
        with self._reconnect_lock:
            now = time.monotonic()
            if self._reconnecting or now - self._last_reconnect < RECONNECT_MIN_INTERVAL_S:
                return
            self._reconnecting = True
            self._last_reconnect = now
        threading.Thread(
            target=self._reconnect, args=(failure.message,), name="milvus-reconnect", daemon=True
        ).start()

    def _reconnect(self, reason: str) -> None:
        try:
            fresh = MilvusClient(**self._connect_args)
        except Exception as exc:  # still unreachable: the next failed call tries again
            logger.warning("Milvus at %s still unreachable (%s); will retry", self._uri, exc)
            return
        finally:
            with self._reconnect_lock:
                self._reconnecting = False
        stale, self._client = self._client, fresh
        with contextlib.suppress(Exception):
            stale.close()
        logger.warning("reconnected to Milvus at %s after a failed call (%s)", self._uri, reason)


def _in_collection(collection_pk: int) -> str:
    return f"{PARTITION_FIELD} == {int(collection_pk)}"


def _hit_pk(hit: Any) -> int:
    """A server 2.3 names the primary key ``id`` in hits; milvus-lite by its field name."""
    value = hit.get(PK_FIELD)
    if value is None:
        value = hit.get("id")
    return int(value)
