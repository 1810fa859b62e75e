"""One collection's exact index: ``IndexIDMap2(IndexFlatIP)`` over unit vectors, searched by FAISS
for a lone query and by a block matrix product when overlapping calls are coalesced (``coalesce``).

The registry (``faiss_index.IndexRegistry``) keeps one per collection below the compressed index's size.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from service.index.base import IndexInfo, ReadWriteLock, SearchHits, no_hits
from service.index.coalesce import QueryCoalescer
from service.vectors import as_unit_rows


def gpu_available() -> bool:
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus is not None and get_num_gpus() > 0)


# Queries scanned together when requests overlap, below which FAISS's own per-query scan is kept:
# one block matrix product costs about as much as two or three single scans (bench_bigindex).
DEFAULT_MIN_BLOCK = 3
_BLOCK_ROWS = 16_384  # gallery rows per matrix product: the (queries × rows) scores stay in cache
# Threads a coalesced block is split over (each its own slabs, on one BLAS thread, heaps merged): a
# block is compute-bound, and the callers it answers are all waiting for it.
DEFAULT_BLOCK_THREADS = 2


@functools.cache
def limit_blas_threads(threads: int) -> None:
    """The block scan's matrix products run on ``search_threads`` BLAS threads, set once per process
    (never toggled around a call: that would race). OpenBLAS's default, every core, measured 4-7×
    slower than one thread for a 32-query block on a busy 2-core host."""
    threadpool_limits(limits=threads, user_api="blas")


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
        block_threads: int = DEFAULT_BLOCK_THREADS,
    ) -> None:
        self.dim = dim
        self._search_threads = search_threads
        self._min_block = min_block
        self._block_threads = max(1, block_threads)
        self._block_pool: ThreadPoolExecutor | None = None  # made by the first block that needs it
        self._queue = QueryCoalescer()
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
        return self._queue.search(queries, k, self._scan)

    @property
    def coalesced_calls(self) -> tuple[int, int]:
        """(block scans that answered several calls, calls they answered) since start."""
        return self._queue.blocks, self._queue.coalesced

    def _scan(self, queries: NDArray[np.float32], k: int) -> SearchHits:
        """The k best of every query: FAISS's own scan for a few queries, else one block scan."""
        with self._lock.read():
            if self.ntotal == 0:
                return no_hits(len(queries))
            k = max(1, min(k, self.ntotal))
            if len(queries) < self._min_block:
                # OpenMP's thread count is per calling thread: set it on the worker that searches.
                faiss.omp_set_num_threads(self._search_threads)
                sims, ids = self._index.search(queries, k)
                return sims, ids
            return self._block_scan(queries, k)

    def _block_scan(self, queries: NDArray[np.float32], k: int) -> SearchHits:
        """Every query against the gallery in one pass: a (queries × rows) matrix product per slab of
        rows, each slab's scores pushed into per-query top-k heaps (FAISS's C++ heaps). The slabs are
        split over ``block_threads`` threads (numpy releases the GIL), whose heaps are then merged.

        Callers hold the read lock: the views below point into FAISS's own storage."""
        n = self.ntotal
        flat: Any = faiss.downcast_index(self._index.index)
        gallery = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
        positions_to_ids = faiss.rev_swig_ptr(self._index.id_map.data(), n)
        slabs = -(-n // _BLOCK_ROWS)
        parts = min(self._block_threads, slabs)
        cuts = [(slabs * i // parts) * _BLOCK_ROWS for i in range(parts)] + [n]
        if parts == 1:
            best_sims, best_positions, heaps = _top_k(queries, gallery, 0, n, k)
        else:
            if self._block_pool is None:
                self._block_pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="block-scan")
            others = [
                self._block_pool.submit(_top_k, queries, gallery, cuts[i], cuts[i + 1], k)
                for i in range(1, parts)
            ]
            best_sims, best_positions, heaps = _top_k(queries, gallery, cuts[0], cuts[1], k)
            for future in others:
                sims, positions, _ = future.result()
                heaps.addn_with_ids(k, faiss.swig_ptr(sims), faiss.swig_ptr(positions), k, 0, len(queries))
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
        params: dict[str, int | str] = {"min_block": self._min_block, "block_threads": self._block_threads}
        return IndexInfo(kind=self.kind, state="ready", faces=self.ntotal, params=params)

    def close(self) -> None:
        """The block threads, if any block was ever split."""
        if self._block_pool is not None:
            self._block_pool.shutdown(wait=False)

    def save(self, path: Path) -> None:
        """Atomic snapshot: write a temp file, then rename over the old one."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        with self._lock.read():
            faiss.write_index(self._index, str(tmp))
        tmp.replace(path)

    @staticmethod
    def read_snapshot(path: Path, dim: int) -> Any:
        """The FAISS index saved by ``save`` (the caller wraps it with its search options)."""
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"snapshot dim {index.d} != model dim {dim}")
        return index


def _top_k(
    queries: NDArray[np.float32], gallery: NDArray[np.float32], start: int, stop: int, k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64], Any]:
    """The k largest inner products of each query over gallery rows [start, stop), slab by slab:
    (similarities, positions, the FAISS heap array over them, not yet reordered)."""
    nq = len(queries)
    best_sims = np.empty((nq, k), dtype=np.float32)
    best_positions = np.empty((nq, k), dtype=np.int64)
    heaps: Any = faiss.float_minheap_array_t()  # keeps the k largest inner products
    heaps.nh, heaps.k = nq, k
    heaps.val, heaps.ids = faiss.swig_ptr(best_sims), faiss.swig_ptr(best_positions)
    heaps.heapify()
    scores = np.empty((nq, _BLOCK_ROWS), dtype=np.float32)
    for first in range(start, stop, _BLOCK_ROWS):
        rows = min(_BLOCK_ROWS, stop - first)
        out = scores if rows == _BLOCK_ROWS else np.empty((nq, rows), dtype=np.float32)
        np.matmul(queries, gallery[first : first + rows].T, out=out)
        heaps.addn(rows, faiss.swig_ptr(out), first, 0, nq)
    return best_sims, best_positions, heaps
