"""Exact inner-product search over unit vectors, one FAISS index per collection (the default engine).

The index is a cache of the store: it is rebuilt from it, or loaded from a snapshot only when the
snapshot's revision matches the store's, so a crash can never leave it ahead of or behind the truth.
It lives in the process: one API replica only (see ``milvus_index`` for several).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from service.index.base import EmbeddingSource, ReconcileReport, SearchHits, no_hits

logger = logging.getLogger(__name__)


def gpu_available() -> bool:
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus is not None and get_num_gpus() > 0)


class CollectionIndex:
    """``IndexIDMap2(IndexFlatIP)`` keyed by the store's int64 face pk; thread-safe."""

    def __init__(
        self, dim: int, *, use_gpu: bool = False, index: faiss.Index | None = None, search_threads: int = 1
    ) -> None:
        self.dim = dim
        self._search_threads = search_threads
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
        vectors = _as_unit_rows(vectors, self.dim)
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

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top-k cosine similarities and face pks per query (pk −1 pads when fewer exist)."""
        queries = _as_unit_rows(queries, self.dim)
        if self._use_gpu:
            with self._lock.write():  # the GPU mirror is (re)built lazily: exclusive
                if self.ntotal == 0:
                    return no_hits(len(queries))
                return self._search_gpu(queries, min(k, self.ntotal))
        with self._lock.read():
            if self.ntotal == 0:
                return no_hits(len(queries))
            k = max(1, min(k, self.ntotal))
            # OpenMP's thread count is per calling thread: set it on the worker that searches.
            faiss.omp_set_num_threads(self._search_threads)
            sims, ids = self._index.search(queries, k)
        return np.ascontiguousarray(sims, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)

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

    def save(self, path: Path) -> None:
        """Atomic snapshot: write a temp file, then rename over the old one."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        with self._lock.read():
            faiss.write_index(self._index, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, dim: int, *, use_gpu: bool = False, search_threads: int = 1) -> CollectionIndex:
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"snapshot dim {index.d} != model dim {dim}")
        return cls(dim, use_gpu=use_gpu, index=index, search_threads=search_threads)


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


def _as_unit_rows(vectors: NDArray[np.float32], dim: int) -> NDArray[np.float32]:
    array = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim).copy()
    faiss.normalize_L2(array)
    return array


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    collection_pk: int
    revision: int
    ntotal: int
    dim: int


class IndexRegistry:
    """Every collection's index, kept equal to the store (implements ``base.VectorIndex``)."""

    def __init__(
        self,
        store: EmbeddingSource,
        dim: int,
        snapshot_dir: Path,
        *,
        use_gpu: bool = False,
        search_threads: int = 1,
    ) -> None:
        self._store = store
        self._search_threads = search_threads
        self._dim = dim
        self._dir = snapshot_dir
        self._use_gpu = use_gpu and gpu_available()
        self._indexes: dict[int, CollectionIndex] = {}
        self._lock = threading.Lock()
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
        self.get(collection_pk).add(ids, vectors)
        return 0

    def remove(self, collection_pk: int, ids: NDArray[np.int64]) -> None:
        self.get(collection_pk).remove(ids)

    def search(
        self, collection_pk: int, queries: NDArray[np.float32], k: int, *, visible_after: int = 0
    ) -> SearchHits:
        index = self.find(collection_pk)
        if index is None:
            return no_hits(len(np.atleast_2d(queries)))
        return index.search(queries, k)

    def reconcile(
        self, collection_pks: Sequence[int], *, full: bool = False, suspects: Sequence[int] = ()
    ) -> ReconcileReport:
        """Rebuild any collection whose index differs from the store, or is suspected to."""
        inserted = deleted = 0
        redo = set(self.out_of_sync(collection_pks)) | (set(suspects) & set(collection_pks))
        for pk in sorted(redo):
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

    def _load_or_rebuild(self, pk: int) -> CollectionIndex:
        revision = self._store.collection_revision(pk)
        count = self._store.face_count(pk)
        index_path, manifest_path = self._paths(pk)
        if index_path.exists() and manifest_path.exists():
            try:
                manifest = SnapshotManifest(**json.loads(manifest_path.read_text()))
                if (manifest.revision, manifest.ntotal, manifest.dim) == (revision, count, self._dim):
                    index = CollectionIndex.load(
                        index_path, self._dim, use_gpu=self._use_gpu, search_threads=self._search_threads
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

    def rebuild(self, pk: int) -> CollectionIndex:
        started = time.perf_counter()
        index = self._new_index()
        for ids, vectors in self._store.iter_embeddings(pk):
            index.add(ids, vectors)
        with self._lock:
            self._indexes[pk] = index
        logger.info(
            "collection %d: rebuilt index from the store (%d faces, %.2fs)",
            pk,
            index.ntotal,
            time.perf_counter() - started,
        )
        return index

    def get(self, pk: int) -> CollectionIndex:
        with self._lock:
            index = self._indexes.get(pk)
            if index is None:
                index = self._new_index()
                self._indexes[pk] = index
            return index

    def find(self, pk: int) -> CollectionIndex | None:
        """The collection's index if it has one, without creating it (for read-only paths)."""
        with self._lock:
            return self._indexes.get(pk)

    def drop(self, pk: int) -> None:
        with self._lock:
            self._indexes.pop(pk, None)
        for path in self._paths(pk):
            _remove_snapshot(path)

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
        for pk, index in list(self._indexes.items()):
            revision = self._store.collection_revision(pk)
            if index.ntotal != self._store.face_count(pk):
                continue
            index_path, manifest_path = self._paths(pk)
            index.save(index_path)
            manifest = SnapshotManifest(pk, revision, index.ntotal, self._dim)
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(manifest)))
            tmp.replace(manifest_path)

    def _new_index(self) -> CollectionIndex:
        return CollectionIndex(self._dim, use_gpu=self._use_gpu, search_threads=self._search_threads)

    def _paths(self, pk: int) -> tuple[Path, Path]:
        return self._dir / f"collection-{pk}.faiss", self._dir / f"collection-{pk}.json"


def _pk_from_name(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _remove_snapshot(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
