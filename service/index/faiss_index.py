"""Every collection's index, one per collection: the exact flat index (``flat_index``) or, for big
collections, the compressed one (``compressed_index``) (the default engine).

The index is a cache of the store: it is rebuilt from it, or loaded from a snapshot (``snapshots``)
only when the snapshot's revision matches the store's, so a crash can never leave it ahead of or behind
the truth. It lives in the process: one API replica only (see ``milvus_index`` for several).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.index.base import EmbeddingSource, IndexInfo, ReconcileReport, SearchHits, no_hits
from service.index.compressed_index import CompressedCollectionIndex, CompressedParams
from service.index.flat_index import DEFAULT_BLOCK_THREADS, DEFAULT_MIN_BLOCK, CollectionIndex, gpu_available
from service.index.snapshots import AnyCollectionIndex, SnapshotDir, discard_replaced

__all__ = ["IndexRegistry"]

logger = logging.getLogger(__name__)

# A collection this large is served by the compressed index (PQ4 fast scan + exact re-ranking) instead
# of the exact scan. Below it the exact scan (~40 ms per million faces on a quiet core, 512 MB per
# million) gives the answers by construction and is fast enough; from 1M on the compressed index is
# ~10× faster and gave the exact scan's answer on 100% of 1,500 real-face probes at 1M and 99.7% at
# 10M (README "Big collections").
DEFAULT_COMPRESSED_MIN_FACES = 1_000_000
# Tombstones (deleted rows still in a compressed index) beyond this share trigger a rebuild.
_COMPACT_AT = 0.25

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
        block_threads: int = DEFAULT_BLOCK_THREADS,
        compressed_min_faces: int = DEFAULT_COMPRESSED_MIN_FACES,
        compressed: CompressedParams | None = None,
    ) -> None:
        self._store = store
        self._search_threads = search_threads
        self._min_block = min_block
        self._block_threads = block_threads
        self._compressed_min_faces = compressed_min_faces
        self._compressed = compressed or CompressedParams()
        self._dim = dim
        self._snapshots = SnapshotDir(snapshot_dir, dim)
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
        self._snapshots.directory.mkdir(parents=True, exist_ok=True)
        for pk in collection_pks:
            self._indexes[pk] = self._load_or_rebuild(pk)
        self._snapshots.remove_unused(set(collection_pks), self._indexes)

    def _load_or_rebuild(self, pk: int) -> AnyCollectionIndex:
        revision = self._store.collection_revision(pk)
        count = self._store.face_count(pk)
        if self._wants_compressed(count):
            loaded = self._load_compressed(pk, revision, count)
            if loaded is not None:
                return loaded
            return self.rebuild(pk)
        loaded_exact = self._snapshots.load_exact(
            pk,
            revision,
            count,
            lambda path: self._new_index(CollectionIndex.read_snapshot(path, self._dim)),
        )
        if loaded_exact is not None:
            return loaded_exact
        return self.rebuild(pk)

    def _load_compressed(self, pk: int, revision: int, count: int) -> CompressedCollectionIndex | None:
        return self._snapshots.load_compressed(
            pk, revision, count, self._compressed, search_threads=self._search_threads
        )

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
        discard_replaced(previous, index)
        logger.info(
            "collection %d: rebuilt %s index from the store (%d faces, %.2fs)",
            pk,
            index.kind,
            index.ntotal,
            time.perf_counter() - started,
        )
        return index

    def _build_compressed(self, pk: int) -> CompressedCollectionIndex:
        vectors_path = self._snapshots.new_vectors_path(pk)
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
        discard_replaced(previous, index)
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
        discard_replaced(index, None)
        self._snapshots.remove(pk)

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
        """Persist every index with the store revision it reflects (on clean shutdown; ``snapshots``)."""
        with self._lock:
            indexes = list(self._indexes.items())
        self._snapshots.save_all(indexes, self._store)

    def _new_index(self, index: Any = None) -> CollectionIndex:
        """An exact index with this registry's search options: empty, or around a loaded snapshot."""
        return CollectionIndex(
            self._dim,
            index=index,
            use_gpu=self._use_gpu,
            search_threads=self._search_threads,
            min_block=self._min_block,
            block_threads=self._block_threads,
        )
