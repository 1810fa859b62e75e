"""Exact inner-product search over unit vectors, one FAISS index per collection (the default engine).

The index is a cache of the store: it is rebuilt from it, or loaded from a snapshot only when the
snapshot's revision matches the store's, so a crash can never leave it ahead of or behind the truth.
It lives in the process: one API replica only (see ``milvus_index`` for several).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import faiss
import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from service.index.base import (
    EmbeddingSource,
    IndexInfo,
    ReadWriteLock,
    ReconcileReport,
    SearchHits,
    no_hits,
)
from service.index.compressed_index import CompressedCollectionIndex, CompressedParams
from service.vectors import as_unit_rows

__all__ = ["CollectionIndex", "IndexRegistry", "ReadWriteLock", "gpu_available"]

logger = logging.getLogger(__name__)


def gpu_available() -> bool:
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus is not None and get_num_gpus() > 0)


# Queries scanned together when requests overlap, below which FAISS's own per-query scan is kept:
# one block matrix product costs about as much as two or three single scans (bench_bigindex).
DEFAULT_MIN_BLOCK = 3
_BLOCK_ROWS = 16_384  # gallery rows per matrix product: the (queries × rows) scores stay in cache


@functools.cache
def limit_blas_threads(threads: int) -> None:
    """The block scan's matrix products run on ``search_threads`` BLAS threads, set once per process
    (never toggled around a call: that would race). OpenBLAS's default, every core, measured 4-7×
    slower than one thread for a 32-query block on a busy 2-core host."""
    threadpool_limits(limits=threads, user_api="blas")


@dataclass(slots=True)
class _Waiting:
    """One search call parked in a collection's queue until a scan answers it."""

    queries: NDArray[np.float32]
    k: int
    hits: SearchHits | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(slots=True)
class _Coalescer:
    """Identify calls that arrive while a scan runs wait, then are answered by one pass together.

    No timer: a call that finds the collection idle scans at once (the lone fast path); calls that
    arrive meanwhile queue, and when the scan ends one of them takes the whole queue as one block.
    Nothing process-wide is switched, so concurrent collections do not race."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    pending: list[_Waiting] = field(default_factory=list)
    busy: bool = False
    blocks: int = 0  # scans that answered several calls (for tests and the benchmark)
    coalesced: int = 0  # calls answered by such scans


class CollectionIndex:
    """``IndexIDMap2(IndexFlatIP)`` keyed by the store's int64 face pk; thread-safe."""

    kind = "exact"

    def __init__(
        self,
        dim: int,
        *,
        use_gpu: bool = False,
        index: faiss.Index | None = None,
        search_threads: int = 1,
        min_block: int = DEFAULT_MIN_BLOCK,
    ) -> None:
        self.dim = dim
        self._search_threads = search_threads
        self._min_block = min_block
        self._queue = _Coalescer()
        limit_blas_threads(search_threads)
        # Typed Any: faiss's SWIG wrappers accept numpy arrays its stubs don't declare.
        self._index: Any = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        # CPU FAISS indexes allow concurrent searches but not a search during an add/remove.
        self._lock = ReadWriteLock()
        self._use_gpu = use_gpu and gpu_available()
        self._gpu_resources: Any = None
        self._gpu_flat: Any = None  # mirror of the flat storage, rebuilt lazily after writes
        self._gpu_ids: NDArray[np.int64] | None = None  # position → id, rebuilt with the mirror

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        vectors = as_unit_rows(vectors, self.dim)
        with self._lock.write():
            self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
            self._gpu_flat = None

    def remove(self, ids: NDArray[np.int64]) -> int:
        if len(ids) == 0:
            return 0
        with self._lock.write():
            removed = int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))
            self._gpu_flat = None
            return removed

    def search(self, queries: NDArray[np.float32], k: int) -> SearchHits:
        """Top-k cosine similarities and face pks per query (pk −1 pads when fewer exist)."""
        queries = as_unit_rows(queries, self.dim)
        if self._use_gpu:
            with self._lock.write():  # the GPU mirror is (re)built lazily: exclusive
                if self.ntotal == 0:
                    return no_hits(len(queries))
                return self._search_gpu(queries, min(k, self.ntotal))
        return self._search_coalesced(_Waiting(queries, k))

    @property
    def coalesced_calls(self) -> tuple[int, int]:
        """(block scans that answered several calls, calls they answered) since start."""
        return self._queue.blocks, self._queue.coalesced

    def _search_coalesced(self, me: _Waiting) -> SearchHits:
        queue = self._queue
        with queue.cond:
            queue.pending.append(me)
            while queue.busy and not me.done:
                queue.cond.wait()
            if not me.done:  # idle: this call scans, for itself and whoever queued meanwhile
                queue.busy = True
                batch, queue.pending = queue.pending, []
        if not me.done:
            try:
                self._answer(batch)
            finally:
                with queue.cond:
                    queue.busy = False
                    if len(batch) > 1:
                        queue.blocks += 1
                        queue.coalesced += len(batch)
                    queue.cond.notify_all()
        if me.error is not None:
            raise me.error
        assert me.hits is not None
        return me.hits

    def _answer(self, batch: list[_Waiting]) -> None:
        try:
            queries = batch[0].queries if len(batch) == 1 else np.concatenate([w.queries for w in batch])
            k_max = max(w.k for w in batch)
            with self._lock.read():
                if self.ntotal == 0:
                    sims, ids = no_hits(len(queries))
                else:
                    k_max = max(1, min(k_max, self.ntotal))
                    if len(queries) < self._min_block:
                        # OpenMP's thread count is per calling thread: set it on the worker that searches.
                        faiss.omp_set_num_threads(self._search_threads)
                        sims, ids = self._index.search(queries, k_max)
                    else:
                        sims, ids = self._block_scan(queries, k_max)
            start = 0
            for waiting in batch:
                stop = start + len(waiting.queries)
                k = min(waiting.k, sims.shape[1])
                waiting.hits = (
                    np.ascontiguousarray(sims[start:stop, :k], dtype=np.float32),
                    np.ascontiguousarray(ids[start:stop, :k], dtype=np.int64),
                )
                start = stop
        except BaseException as exc:  # every caller of the block sees the failure, not a hang
            for waiting in batch:
                waiting.error = exc
        finally:
            for waiting in batch:
                waiting.done = True

    def _block_scan(self, queries: NDArray[np.float32], k: int) -> SearchHits:
        """Every query against the gallery in one pass: a (queries × rows) matrix product per slab of
        rows, each slab's scores pushed into per-query top-k heaps (FAISS's C++ heaps).

        Callers hold the read lock: the views below point into FAISS's own storage."""
        n = self.ntotal
        flat: Any = faiss.downcast_index(self._index.index)
        gallery = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
        positions_to_ids = faiss.rev_swig_ptr(self._index.id_map.data(), n)
        nq = len(queries)
        best_sims = np.empty((nq, k), dtype=np.float32)
        best_positions = np.empty((nq, k), dtype=np.int64)
        heaps: Any = faiss.float_minheap_array_t()  # keeps the k largest inner products
        heaps.nh, heaps.k = nq, k
        heaps.val, heaps.ids = faiss.swig_ptr(best_sims), faiss.swig_ptr(best_positions)
        heaps.heapify()
        scores = np.empty((nq, _BLOCK_ROWS), dtype=np.float32)
        for start in range(0, n, _BLOCK_ROWS):
            rows = min(_BLOCK_ROWS, n - start)
            out = scores if rows == _BLOCK_ROWS else np.empty((nq, rows), dtype=np.float32)
            np.matmul(queries, gallery[start : start + rows].T, out=out)
            heaps.addn(rows, faiss.swig_ptr(out), start, 0, nq)
        heaps.reorder()  # best first
        ids = np.where(best_positions >= 0, positions_to_ids[np.clip(best_positions, 0, None)], -1)
        return best_sims, np.ascontiguousarray(ids, dtype=np.int64)

    def _search_gpu(
        self, queries: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        if self._gpu_flat is None:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_flat = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index.index)
            self._gpu_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        sims, positions = self._gpu_flat.search(queries, k)
        assert self._gpu_ids is not None
        ids = np.where(positions >= 0, self._gpu_ids[np.clip(positions, 0, None)], -1)
        return np.ascontiguousarray(sims, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)

    def ids(self) -> NDArray[np.int64]:
        with self._lock.read():
            return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def export(self, start: int, stop: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Copies of the pks and vectors at positions [start, stop) (to build a compressed index)."""
        with self._lock.read():
            stop = min(stop, self.ntotal)
            if start >= stop:
                return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
            flat: Any = faiss.downcast_index(self._index.index)
            n = self.ntotal
            gallery = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
            ids = faiss.rev_swig_ptr(self._index.id_map.data(), n)
            return np.array(ids[start:stop], dtype=np.int64), np.array(gallery[start:stop], dtype=np.float32)

    def info(self) -> IndexInfo:
        params: dict[str, int | str] = {"min_block": self._min_block}
        return IndexInfo(kind=self.kind, state="ready", faces=self.ntotal, params=params)

    def close(self) -> None:
        """Nothing to release (the compressed index closes its vector file)."""

    def save(self, path: Path) -> None:
        """Atomic snapshot: write a temp file, then rename over the old one."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        with self._lock.read():
            faiss.write_index(self._index, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(
        cls,
        path: Path,
        dim: int,
        *,
        use_gpu: bool = False,
        search_threads: int = 1,
        min_block: int = DEFAULT_MIN_BLOCK,
    ) -> CollectionIndex:
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"snapshot dim {index.d} != model dim {dim}")
        return cls(dim, use_gpu=use_gpu, index=index, search_threads=search_threads, min_block=min_block)


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    collection_pk: int
    revision: int
    ntotal: int
    dim: int


# A collection this large is served by the compressed index (IVF-SQ8 + exact re-ranking) instead of
# the exact scan. Below it the exact scan (~40 ms per million faces on a quiet core, 512 MB per
# million) gives the answers by construction; the compressed index measured 87-91% of the exact
# scan's answers at 1M-10M real-face probes (README "Big collections"), so it starts only where an
# exact scan (~150 ms, 2 GB at 4M) becomes impractical.
DEFAULT_COMPRESSED_MIN_FACES = 4_000_000
# Tombstones (deleted rows still in a compressed index) beyond this share trigger a rebuild.
_COMPACT_AT = 0.25

AnyCollectionIndex: TypeAlias = CollectionIndex | CompressedCollectionIndex
_Write = tuple[str, NDArray[np.int64], NDArray[np.float32] | None]


@dataclass(slots=True)
class _Build:
    """A compressed index training in the background while the current index keeps serving; the
    writes made meanwhile are journaled and replayed before the swap."""

    journal: list[_Write] = field(default_factory=list)
    cancelled: bool = False
    thread: threading.Thread | None = None


class IndexRegistry:
    """Every collection's index, kept equal to the store (implements ``base.VectorIndex``).

    Per collection, by size: the exact flat index below ``compressed_min_faces`` faces, the compressed
    index (``compressed_index``) from there on (0: always exact). A collection that grows past the
    threshold keeps its exact index until the compressed one, trained in a background thread from the
    store, is ready; at start-up the choice follows the store's face count."""

    def __init__(
        self,
        store: EmbeddingSource,
        dim: int,
        snapshot_dir: Path,
        *,
        use_gpu: bool = False,
        search_threads: int = 1,
        min_block: int = DEFAULT_MIN_BLOCK,
        compressed_min_faces: int = DEFAULT_COMPRESSED_MIN_FACES,
        compressed: CompressedParams | None = None,
    ) -> None:
        self._store = store
        self._search_threads = search_threads
        self._min_block = min_block
        self._compressed_min_faces = compressed_min_faces
        self._compressed = compressed or CompressedParams()
        self._dim = dim
        self._dir = snapshot_dir
        self._use_gpu = use_gpu and gpu_available()
        self._indexes: dict[int, AnyCollectionIndex] = {}
        self._builds: dict[int, _Build] = {}
        self._lock = threading.Lock()  # guards the two dicts
        self._writes = threading.Lock()  # one write (or one swap) at a time, across collections
        if use_gpu and not self._use_gpu:
            logger.info("FAISS GPU not available; using the CPU flat index")
        elif self._use_gpu:
            logger.info("FAISS GPU search enabled")

    @property
    def engine(self) -> str:
        return "faiss"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_k(self) -> int:
        return 2**31 - 1

    @property
    def tracks_writes(self) -> bool:
        return False  # one process: a write is visible as soon as add returns

    # -- base.VectorIndex ------------------------------------------------------------------

    def create(self, collection_pk: int) -> None:
        self.get(collection_pk)

    def add(self, collection_pk: int, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> int:
        with self._writes:
            index = self.get(collection_pk)
            index.add(ids, vectors)
            self._journal(collection_pk, ("add", np.array(ids, dtype=np.int64), np.array(vectors)))
            if index.kind == "exact" and self._wants_compressed(index.ntotal):
                self._start_build(collection_pk)
        return 0

    def remove(self, collection_pk: int, ids: NDArray[np.int64]) -> None:
        with self._writes:
            index = self.get(collection_pk)
            index.remove(ids)
            self._journal(collection_pk, ("remove", np.array(ids, dtype=np.int64), None))
            if isinstance(index, CompressedCollectionIndex) and index.tombstones > _COMPACT_AT * max(
                1, index.ntotal + index.tombstones
            ):
                self._start_build(collection_pk)  # compaction: the same background rebuild

    def search(
        self, collection_pk: int, queries: NDArray[np.float32], k: int, *, visible_after: int = 0
    ) -> SearchHits:
        index = self.find(collection_pk)
        if index is None:
            return no_hits(len(np.atleast_2d(queries)))
        return index.search(queries, k)

    def index_info(self, collection_pk: int) -> IndexInfo:
        index = self.find(collection_pk)
        if index is None:
            return IndexInfo(kind="exact", state="ready", faces=0, params={})
        info = index.info()
        with self._lock:
            building = collection_pk in self._builds
        if building:  # the current index serves until the compressed one replaces it
            return IndexInfo(info.kind, "building", info.faces, info.params | {"building": "compressed"})
        return info

    def reconcile(
        self, collection_pks: Sequence[int], *, full: bool = False, suspects: Sequence[int] = ()
    ) -> ReconcileReport:
        """Rebuild any collection whose index differs from the store, or is suspected to."""
        inserted = deleted = 0
        redo = set(self.out_of_sync(collection_pks)) | (set(suspects) & set(collection_pks))
        for pk in sorted(redo):
            with self._lock:
                if pk in self._builds:
                    continue  # a background build is replacing it (and replays the journal)
            before = self.sizes([pk])[pk]
            after = self.rebuild(pk).ntotal
            inserted, deleted = inserted + max(0, after - before), deleted + max(0, before - after)
            logger.warning("collection %d: index differed from the store; rebuilt", pk)
        with self._lock:
            orphans = [pk for pk in self._indexes if pk not in set(collection_pks)]
        for pk in orphans:  # collections the store no longer has (a drop that failed)
            deleted += self.sizes([pk])[pk]
            self.drop(pk)
        return ReconcileReport(inserted, deleted, len(collection_pks))

    def close(self) -> None:
        with self._lock:
            builds = list(self._builds.values())
        for build in builds:  # a half-trained index is thrown away: the next start retrains
            build.cancelled = True
        self.save_snapshots()

    def load_all(self, collection_pks: Sequence[int]) -> None:
        """At start-up: load each verified snapshot, rebuild the rest from the store."""
        self._dir.mkdir(parents=True, exist_ok=True)
        for pk in collection_pks:
            self._indexes[pk] = self._load_or_rebuild(pk)
        known = set(collection_pks)
        for stale in self._dir.glob("collection-*.faiss"):
            if _pk_from_name(stale) not in known:
                _remove_snapshot(stale)
        in_use = {
            index.vectors_path.name
            for index in self._indexes.values()
            if isinstance(index, CompressedCollectionIndex)
        }
        for path in self._dir.glob("compressed-*"):
            index = self._indexes.get(_pk_from_name(path))
            compressed = isinstance(index, CompressedCollectionIndex)
            if not compressed or (path.suffix == ".vectors" and path.name not in in_use):
                path.unlink(missing_ok=True)

    def _load_or_rebuild(self, pk: int) -> AnyCollectionIndex:
        revision = self._store.collection_revision(pk)
        count = self._store.face_count(pk)
        if self._wants_compressed(count):
            loaded = self._load_compressed(pk, revision, count)
            if loaded is not None:
                return loaded
            return self.rebuild(pk)
        index_path, manifest_path = self._paths(pk)
        if index_path.exists() and manifest_path.exists():
            try:
                manifest = SnapshotManifest(**json.loads(manifest_path.read_text()))
                if (manifest.revision, manifest.ntotal, manifest.dim) == (revision, count, self._dim):
                    index = CollectionIndex.load(
                        index_path,
                        self._dim,
                        use_gpu=self._use_gpu,
                        search_threads=self._search_threads,
                        min_block=self._min_block,
                    )
                    if index.ntotal == count:
                        logger.info(
                            "collection %d: loaded snapshot (%d faces, revision %d)", pk, count, revision
                        )
                        return index
                logger.info("collection %d: snapshot stale (store revision %d); rebuilding", pk, revision)
            except (ValueError, TypeError, OSError, RuntimeError) as exc:
                logger.warning("collection %d: unreadable snapshot (%s); rebuilding", pk, exc)
        return self.rebuild(pk)

    def _load_compressed(self, pk: int, revision: int, count: int) -> CompressedCollectionIndex | None:
        path = self._compressed_path(pk)
        if not path.exists():
            return None
        try:
            index, manifest = CompressedCollectionIndex.load(
                path, self._dim, self._compressed, search_threads=self._search_threads
            )
        except (ValueError, TypeError, KeyError, OSError, RuntimeError) as exc:
            logger.warning("collection %d: unreadable compressed snapshot (%s); rebuilding", pk, exc)
            return None
        if (manifest.revision, manifest.ntotal) != (revision, count):
            logger.info("collection %d: compressed snapshot stale (revision %d); rebuilding", pk, revision)
            index.discard()
            return None
        logger.info("collection %d: loaded compressed snapshot (%d faces, revision %d)", pk, count, revision)
        return index

    def rebuild(self, pk: int) -> AnyCollectionIndex:
        """The collection's index from the store: exact or compressed by its size (synchronous)."""
        started = time.perf_counter()
        index: AnyCollectionIndex
        if self._wants_compressed(self._store.face_count(pk)):
            index = self._build_compressed(pk)
        else:
            index = self._new_index()
            for ids, vectors in self._store.iter_embeddings(pk):
                index.add(ids, vectors)
        with self._lock:
            previous = self._indexes.get(pk)
            self._indexes[pk] = index
        _discard(previous, index)
        logger.info(
            "collection %d: rebuilt %s index from the store (%d faces, %.2fs)",
            pk,
            index.kind,
            index.ntotal,
            time.perf_counter() - started,
        )
        return index

    def _build_compressed(self, pk: int) -> CompressedCollectionIndex:
        vectors_path = self._dir / f"compressed-{pk}-{time.time_ns()}.vectors"
        return CompressedCollectionIndex.build(
            self._dim,
            vectors_path,
            self._store.iter_embeddings(pk),
            self._compressed,
            search_threads=self._search_threads,
            seed=pk,
        )

    def _wants_compressed(self, faces: int) -> bool:
        return 0 < self._compressed_min_faces <= faces and not self._use_gpu

    def _journal(self, pk: int, write: _Write) -> None:
        with self._lock:
            build = self._builds.get(pk)
        if build is not None:
            build.journal.append(write)

    def _start_build(self, pk: int) -> None:
        """Train a compressed index from the store in the background (callers hold ``_writes``)."""
        with self._lock:
            if pk in self._builds:
                return
            build = self._builds[pk] = _Build()
        # The journal exists before the store is read: a write in between is in both, and replaying
        # it is idempotent (add replaces a pk's vector, remove of an absent pk is a no-op).
        build.thread = threading.Thread(
            target=self._run_build, args=(pk, build), name=f"compressed-index-{pk}", daemon=True
        )
        build.thread.start()
        logger.info("collection %d: building a compressed index in the background", pk)

    def _run_build(self, pk: int, build: _Build) -> None:
        try:
            index = self._build_compressed(pk)
        except Exception:
            logger.exception("collection %d: compressed index build failed; the current index stays", pk)
            with self._lock:
                self._builds.pop(pk, None)
            return
        with self._writes:
            with self._lock:
                current = self._builds.get(pk) is build and not build.cancelled
                self._builds.pop(pk, None) if current else None
            if not current:
                index.discard()
                return
            for kind, ids, vectors in build.journal:
                if kind == "add" and vectors is not None:
                    index.add(ids, vectors)
                else:
                    index.remove(ids)
            with self._lock:
                if pk not in self._indexes:  # dropped meanwhile
                    index.discard()
                    return
                previous = self._indexes[pk]
                self._indexes[pk] = index
        _discard(previous, index)
        logger.info(
            "collection %d: compressed index in service (%d faces, %d writes replayed)",
            pk,
            index.ntotal,
            len(build.journal),
        )

    def wait_for_builds(self, timeout: float | None = None) -> None:
        """Blocks until the background builds running now have finished (tests, benchmarks)."""
        with self._lock:
            threads = [b.thread for b in self._builds.values() if b.thread is not None]
        for thread in threads:
            thread.join(timeout)

    def get(self, pk: int) -> AnyCollectionIndex:
        with self._lock:
            index = self._indexes.get(pk)
            if index is None:
                index = self._new_index()
                self._indexes[pk] = index
            return index

    def find(self, pk: int) -> AnyCollectionIndex | None:
        """The collection's index if it has one, without creating it (for read-only paths)."""
        with self._lock:
            return self._indexes.get(pk)

    def drop(self, pk: int) -> None:
        with self._lock:
            index = self._indexes.pop(pk, None)
            build = self._builds.pop(pk, None)
        if build is not None:
            build.cancelled = True
        _discard(index, None)
        for path in self._paths(pk):
            _remove_snapshot(path)
        for path in self._dir.glob(f"compressed-{pk}[.-]*"):
            path.unlink(missing_ok=True)

    def sizes(self, collection_pks: Sequence[int] | None = None) -> dict[int, int]:
        """Vectors per collection: the given ones (0 when absent), or every loaded index."""
        with self._lock:
            if collection_pks is None:
                return {pk: index.ntotal for pk, index in self._indexes.items()}
            return {pk: self._indexes[pk].ntotal if pk in self._indexes else 0 for pk in collection_pks}

    def out_of_sync(self, collection_pks: Sequence[int] | None = None) -> list[int]:
        """Collections whose index size differs from the store's face count."""
        return [pk for pk, n in self.sizes(collection_pks).items() if n != self._store.face_count(pk)]

    def save_snapshots(self) -> None:
        """Persist every index with the store revision it reflects (on clean shutdown)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            indexes = list(self._indexes.items())
        for pk, index in indexes:
            revision = self._store.collection_revision(pk)
            if index.ntotal != self._store.face_count(pk):
                continue
            if isinstance(index, CompressedCollectionIndex):
                index.save(self._compressed_path(pk), index.manifest(pk, revision))
                for path in self._paths(pk):
                    _remove_snapshot(path)
                continue
            index_path, manifest_path = self._paths(pk)
            index.save(index_path)
            manifest = SnapshotManifest(pk, revision, index.ntotal, self._dim)
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(manifest)))
            tmp.replace(manifest_path)

    def _new_index(self) -> CollectionIndex:
        return CollectionIndex(
            self._dim, use_gpu=self._use_gpu, search_threads=self._search_threads, min_block=self._min_block
        )

    def _paths(self, pk: int) -> tuple[Path, Path]:
        return self._dir / f"collection-{pk}.faiss", self._dir / f"collection-{pk}.json"

    def _compressed_path(self, pk: int) -> Path:
        return self._dir / f"compressed-{pk}.ivf"


def _discard(previous: AnyCollectionIndex | None, replacement: AnyCollectionIndex | None) -> None:
    """A replaced compressed index's vector file goes, unless the replacement uses the same file."""
    if not isinstance(previous, CompressedCollectionIndex):
        return
    same_file = isinstance(replacement, CompressedCollectionIndex) and (
        replacement.vectors_path == previous.vectors_path
    )
    if not same_file:
        previous.discard()


def _pk_from_name(path: Path) -> int:
    """collection-7.faiss, compressed-7.ivf, compressed-7.pks.npy, compressed-7-<ns>.vectors → 7."""
    try:
        return int(path.name.split("-", 2)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return -1


def _remove_snapshot(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
