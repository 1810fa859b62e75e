"""A compressed index for big collections: IVF over 8-bit (or fp16) scalar-quantised codes, re-ranked
with the exact vectors, so every returned similarity is the exact fp32 inner product.

Why: an exact scan streams all N×128×4 bytes per query (1M faces: 512 MB, ~40 ms on one core; 10M:
~400 ms and 4.9 GiB of RAM). Here a query scans ``nprobe`` of ``nlist`` k-means cells of 128-byte
codes (1/4 of fp32), takes the ``rerank`` best approximate candidates and computes their exact
inner products from the fp32 vectors, which live in a file next to the snapshot and are read through
a read-only memory map: only the few pages re-ranking touches become resident (file-backed, evictable
memory), so a 10M collection holds ~1.3 GB of codes in RAM, not 4.9 GB of vectors.

The IVF's ids are row positions in the vector file; ``_pks`` maps a position to the face pk (−1:
deleted). A delete is a tombstone (O(1), never a scan of every list); the rows are dropped for good
when the index is rebuilt (``compact``: the registry rebuilds when tombstones pass a quarter).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import mmap
import os
import time
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from numpy.typing import NDArray

from service.index.base import IndexInfo, ReadWriteLock, SearchHits, as_unit_rows, no_hits

logger = logging.getLogger(__name__)

Codec = Literal["SQ8", "fp16"]
_CODECS: dict[str, int] = {"SQ8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}
_ROW_BYTES = 4  # float32


def default_nlist(n: int) -> int:
    """k-means cells: the power of two nearest √n / 1.5, within [64, 8192] (1M → 512, 10M → 2048).

    Fewer, fuller cells than the usual 4·√n: every add assigns its vector by a flat scan of the
    centroids, and on two cores that scan, not the cell scan, is what bounds the build time."""
    target = max(1.0, math.sqrt(max(n, 1)) / 1.5)
    return int(min(8192, max(64, 2 ** round(math.log2(target)))))


@dataclass(frozen=True, slots=True)
class CompressedParams:
    """How the compressed index is built and searched (``Settings.compressed_index_*``)."""

    codec: Codec = "SQ8"
    nlist: int = 0  # 0: default_nlist(size at training)
    nprobe: int = 128
    rerank: int = 256  # approximate candidates re-ranked exactly per query (at least 4×k)
    train_sample: int = 100_000  # vectors k-means trains on (at least 39×nlist are used)
    train_iterations: int = 10


@dataclass(frozen=True, slots=True)
class CompressedManifest:
    collection_pk: int
    revision: int
    ntotal: int  # live faces
    rows: int  # positions written in the vector file (live + tombstones)
    dim: int
    codec: str
    nlist: int
    vectors_file: str  # the fp32 rows, in the snapshot's directory


class ExactVectors:
    """fp32 rows in a file, appended with ``pwrite`` and read through a read-only shared map."""

    def __init__(self, path: Path, dim: int, *, rows: int = 0, create: bool = False) -> None:
        self.path = path
        self.dim = dim
        self._row_bytes = dim * _ROW_BYTES
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        self._fd = os.open(path, flags, 0o644)
        # Closed with the last reference, not by close(): a search may still read the old map after
        # a compaction swapped in a new index (the unlinked file lives on until then).
        self._closer = weakref.finalize(self, os.close, self._fd)
        self.rows = rows
        size = os.fstat(self._fd).st_size
        if size < rows * self._row_bytes:
            self._closer()
            raise ValueError(f"{path}: {size} bytes, fewer than {rows} rows")
        self._capacity = 0
        self._map: mmap.mmap | None = None
        self._view: NDArray[np.float32] = np.zeros((0, dim), dtype=np.float32)
        self._ensure_capacity(max(rows, 1024))

    def _ensure_capacity(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        capacity = max(rows, self._capacity * 2, 1024)
        if os.fstat(self._fd).st_size < capacity * self._row_bytes:
            os.ftruncate(self._fd, capacity * self._row_bytes)  # sparse: no bytes written
        mapping = mmap.mmap(self._fd, capacity * self._row_bytes, prot=mmap.PROT_READ)
        mapping.madvise(mmap.MADV_RANDOM)  # re-ranking reads a few rows: no read-ahead
        self._map, self._capacity = mapping, capacity
        self._view = np.frombuffer(mapping, dtype=np.float32).reshape(capacity, self.dim)

    def append(self, vectors: NDArray[np.float32]) -> NDArray[np.int64]:
        """Writes the rows after the last one; returns their positions (callers hold the write lock)."""
        start = self.rows
        self._ensure_capacity(start + len(vectors))
        data = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        os.pwrite(self._fd, data, start * self._row_bytes)
        self.rows = start + len(vectors)
        return np.arange(start, self.rows, dtype=np.int64)

    def take(self, positions: NDArray[np.int64]) -> NDArray[np.float32]:
        """Rows at ``positions`` (copied out of the map)."""
        return np.asarray(self._view[positions], dtype=np.float32)

    def read(self, start: int, stop: int) -> NDArray[np.float32]:
        """A contiguous block read with ``pread`` (bulk reads stay out of the map: no resident pages)."""
        data = os.pread(self._fd, (stop - start) * self._row_bytes, start * self._row_bytes)
        return np.frombuffer(data, dtype=np.float32).reshape(stop - start, self.dim)

    def flush(self) -> None:
        os.fsync(self._fd)

    def truncate(self) -> None:
        """Drop the spare capacity (a snapshot's file is exactly its rows)."""
        os.ftruncate(self._fd, max(self.rows, self._capacity) * self._row_bytes)

    def discard(self) -> None:
        """Unlink the file; the descriptor and the map close when the last search lets go."""
        self.path.unlink(missing_ok=True)


class CompressedCollectionIndex:
    """IVF-SQ codes + exact re-ranking for one collection; thread-safe, searches run concurrently."""

    kind = "compressed"

    def __init__(
        self,
        dim: int,
        ivf: Any,
        vectors: ExactVectors,
        pks: NDArray[np.int64],
        params: CompressedParams,
        *,
        trained_on: int,
        search_threads: int = 1,
    ) -> None:
        self.dim = dim
        self.params = params
        self.trained_on = trained_on
        self._ivf: Any = ivf
        self._ivf.nprobe = min(params.nprobe, int(ivf.nlist))
        self._vectors = vectors
        self._pks = _GrowableInt64(pks)
        self._live = int(np.count_nonzero(pks >= 0))
        self._by_pk = _PkMap.from_positions(pks)
        self._lock = ReadWriteLock()
        self._search_threads = search_threads

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        dim: int,
        vector_path: Path,
        batches: Iterable[tuple[NDArray[np.int64], NDArray[np.float32]]],
        params: CompressedParams,
        *,
        search_threads: int = 1,
        seed: int = 0,
    ) -> CompressedCollectionIndex:
        """Streams ``batches`` into the vector file, trains k-means on a sample, then adds the codes.

        Memory stays at one batch plus the sample plus the codes: the vectors go to the file first."""
        started = time.perf_counter()
        vectors = ExactVectors(vector_path, dim, create=True)
        pk_parts: list[NDArray[np.int64]] = []
        for ids, block in batches:
            if len(ids):
                vectors.append(as_unit_rows(block, dim))
                pk_parts.append(np.asarray(ids, dtype=np.int64))
        pks = np.concatenate(pk_parts) if pk_parts else np.zeros(0, dtype=np.int64)
        n = len(pks)
        nlist = params.nlist or default_nlist(n)
        sample_size = min(n, max(params.train_sample, 39 * nlist))
        rng = np.random.default_rng(seed)
        sample_rows = np.sort(rng.choice(n, size=sample_size, replace=False)) if n else np.zeros(0, np.int64)
        sample = vectors.take(sample_rows) if n else np.zeros((0, dim), dtype=np.float32)
        ivf = new_ivf(dim, nlist, params.codec)
        train_ivf(ivf, sample, params.train_iterations, seed)
        del sample
        trained_s = time.perf_counter() - started
        chunk = 65_536
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            add_assigned(ivf, vectors.read(start, stop), np.arange(start, stop, dtype=np.int64))
        logger.info(
            "compressed index: %d faces, %s nlist=%d trained on %d in %.1fs, built in %.1fs",
            n,
            params.codec,
            nlist,
            sample_size,
            trained_s,
            time.perf_counter() - started,
        )
        return cls(dim, ivf, vectors, pks, params, trained_on=sample_size, search_threads=search_threads)

    # -- VectorIndex per collection ------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return self._live

    @property
    def tombstones(self) -> int:
        return self._vectors.rows - self._live

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        rows = as_unit_rows(vectors, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock.write():
            self._drop(ids)  # re-adding a pk replaces its vector, as the flat IndexIDMap2 would not: be safe
            positions = self._vectors.append(rows)
            self._ivf.add_with_ids(rows, positions)
            self._pks.extend(ids)
            self._by_pk.add(ids, positions)
            self._live += len(ids)

    def remove(self, ids: NDArray[np.int64]) -> int:
        if len(ids) == 0:
            return 0
        with self._lock.write():
            return self._drop(np.ascontiguousarray(ids, dtype=np.int64))

    def _drop(self, ids: NDArray[np.int64]) -> int:
        positions = self._by_pk.pop(ids)
        if len(positions) == 0:
            return 0
        self._pks.values[positions] = -1
        self._live -= len(positions)
        return len(positions)

    def search(self, queries: NDArray[np.float32], k: int) -> SearchHits:
        """Approximate candidates from the codes, then exact inner products, best first."""
        queries = as_unit_rows(queries, self.dim)
        with self._lock.read():
            if self._live == 0:
                return no_hits(len(queries))
            k = max(1, min(k, self._live))
            # Tombstones take candidate slots: ask for as many more as there are dead rows, in ratio.
            dead_share = self.tombstones / max(1, self._vectors.rows)
            wanted = max(self.params.rerank, 4 * k)
            wanted = min(self._vectors.rows, int(wanted / max(0.25, 1.0 - dead_share)) + 1)
            faiss.omp_set_num_threads(self._search_threads)
            _, positions = self._ivf.search(queries, wanted)
            pks_by_position = self._pks.values
            sims_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
            ids_out = np.full((len(queries), k), -1, dtype=np.int64)
            for row, candidates in enumerate(positions):
                candidates = candidates[candidates >= 0]
                candidates = candidates[pks_by_position[candidates] >= 0]
                if len(candidates) == 0:
                    continue
                candidates = np.sort(candidates)  # file order: neighbouring pages
                exact = self._vectors.take(candidates) @ queries[row]
                best = np.argsort(-exact, kind="stable")[:k]
                sims_out[row, : len(best)] = exact[best]
                ids_out[row, : len(best)] = pks_by_position[candidates[best]]
        return sims_out, ids_out

    def tune(self, *, nprobe: int, rerank: int) -> None:
        """Change the search parameters (no rebuild: they only decide how much of the codes is read)."""
        with self._lock.write():
            self.params = dataclasses.replace(self.params, nprobe=nprobe, rerank=rerank)
            self._ivf.nprobe = min(nprobe, int(self._ivf.nlist))

    def ids(self) -> NDArray[np.int64]:
        with self._lock.read():
            pks = self._pks.values
            return np.sort(pks[pks >= 0])

    def info(self) -> IndexInfo:
        return IndexInfo(
            kind=self.kind,
            state="ready",
            faces=self._live,
            params={
                "codec": self.params.codec,
                "nlist": int(self._ivf.nlist),
                "nprobe": int(self._ivf.nprobe),
                "rerank": self.params.rerank,
                "trained_on": self.trained_on,
                "tombstones": self.tombstones,
            },
        )

    # -- snapshots ---------------------------------------------------------------------------

    def save(self, index_path: Path, manifest: CompressedManifest) -> None:
        """Codes and the position → pk map, atomically; the vector file is synced in place (its
        rows are append-only, and the manifest says how many of them the snapshot covers)."""
        with self._lock.read():
            self._vectors.flush()
            tmp = index_path.with_suffix(".tmp")
            faiss.write_index(self._ivf, str(tmp))
            tmp.replace(index_path)
            pks_path = index_path.with_suffix(".pks.npy")
            tmp_pks = pks_path.with_suffix(".tmp.npy")
            np.save(tmp_pks, self._pks.values)
            tmp_pks.replace(pks_path)
            manifest_path = index_path.with_suffix(".json")
            tmp_manifest = manifest_path.with_suffix(".json.tmp")
            tmp_manifest.write_text(json.dumps(asdict(manifest) | {"trained_on": self.trained_on}))
            tmp_manifest.replace(manifest_path)

    def manifest(self, collection_pk: int, revision: int) -> CompressedManifest:
        with self._lock.read():
            return CompressedManifest(
                collection_pk,
                revision,
                self._live,
                self._vectors.rows,
                self.dim,
                self.params.codec,
                int(self._ivf.nlist),
                self._vectors.path.name,
            )

    @property
    def vectors_path(self) -> Path:
        return self._vectors.path

    @classmethod
    def load(
        cls,
        index_path: Path,
        dim: int,
        params: CompressedParams,
        *,
        search_threads: int = 1,
    ) -> tuple[CompressedCollectionIndex, CompressedManifest]:
        raw = json.loads(index_path.with_suffix(".json").read_text())
        trained_on = int(raw.pop("trained_on", 0))
        manifest = CompressedManifest(**raw)
        if manifest.dim != dim:
            raise ValueError(f"snapshot dim {manifest.dim} != model dim {dim}")
        ivf = faiss.read_index(str(index_path))
        pks = np.load(index_path.with_suffix(".pks.npy"))
        if len(pks) != manifest.rows or int(ivf.ntotal) != manifest.rows:
            raise ValueError("compressed snapshot: codes, pks and manifest disagree")
        vectors = ExactVectors(index_path.parent / manifest.vectors_file, dim, rows=manifest.rows)
        loaded = cls(
            dim,
            ivf,
            vectors,
            np.asarray(pks, dtype=np.int64),
            _with_codec(params, manifest.codec),
            trained_on=trained_on,
            search_threads=search_threads,
        )
        return loaded, manifest

    def discard(self) -> None:
        """This index was replaced or dropped: its vector file goes (open maps stay readable)."""
        self._vectors.discard()


def new_ivf(dim: int, nlist: int, codec: str) -> Any:
    quantizer = faiss.IndexFlatIP(dim)
    metric = faiss.METRIC_INNER_PRODUCT
    ivf: Any = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, _CODECS[codec], metric)
    ivf.own_fields = True
    quantizer.this.disown()  # type: ignore[attr-defined]  # owned by the IVF from now on
    return ivf


def train_ivf(ivf: Any, sample: NDArray[np.float32], iterations: int, seed: int) -> None:
    """Spherical k-means on ``sample`` for the cells, then the scalar quantiser's ranges."""
    nlist = int(ivf.nlist)
    if len(sample) < nlist:  # tiny collection (tests): pad the sample by repeating it
        reps = -(-nlist // max(1, len(sample)))
        sample = np.tile(sample, (reps, 1)) if len(sample) else np.eye(ivf.d, dtype=np.float32)[:1]
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    ivf.quantizer.add(spherical_kmeans(sample, nlist, iterations, seed))
    ivf.sq.train(sample)
    ivf.is_trained = True


def spherical_kmeans(
    sample: NDArray[np.float32], nlist: int, iterations: int, seed: int
) -> NDArray[np.float32]:
    """Unit-length centroids. Assignment is a matrix product per slab (BLAS): FAISS's own k-means
    searches its flat quantiser without BLAS below 128k queries (faiss 1.15), several times slower."""
    rng = np.random.default_rng(seed)
    centroids = np.ascontiguousarray(sample[rng.choice(len(sample), size=nlist, replace=False)])
    for _ in range(iterations):
        labels = assign_cells(centroids, sample)
        columns = [np.bincount(labels, weights=sample[:, j], minlength=nlist) for j in range(sample.shape[1])]
        sums = np.stack(columns, axis=1)  # per-cell sums (np.add.at is ~50× slower)
        counts = np.bincount(labels, minlength=nlist)
        empty = np.flatnonzero(counts == 0)  # re-seeded from random points
        sums[empty] = sample[rng.choice(len(sample), size=len(empty), replace=False)]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.ascontiguousarray(sums / np.maximum(norms, 1e-12), dtype=np.float32)
    return centroids


def assign_cells(centroids: NDArray[np.float32], vectors: NDArray[np.float32]) -> NDArray[np.int64]:
    """The nearest centroid (largest inner product) of each vector, by BLAS matrix products."""
    cells = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), 16_384):
        block = vectors[start : start + 16_384]
        cells[start : start + len(block)] = np.argmax(block @ centroids.T, axis=1)
    return cells


def add_assigned(ivf: Any, vectors: NDArray[np.float32], ids: NDArray[np.int64]) -> None:
    """Bulk add with the cells assigned by ``assign_cells`` (one face at a time: ``add_with_ids``)."""
    nlist, dim = int(ivf.nlist), int(ivf.d)
    quantizer: Any = faiss.downcast_index(ivf.quantizer)
    centroids = faiss.rev_swig_ptr(quantizer.get_xb(), nlist * dim).reshape(nlist, dim)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    cells = assign_cells(centroids, vectors)
    ivf.add_core(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(cells))
    ivf.ntotal = int(ivf.ntotal)  # add_core updates ntotal itself; read back for clarity


def _with_codec(params: CompressedParams, codec: str) -> CompressedParams:
    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec}")
    return CompressedParams(
        codec="SQ8" if codec == "SQ8" else "fp16",
        nlist=params.nlist,
        nprobe=params.nprobe,
        rerank=params.rerank,
        train_sample=params.train_sample,
        train_iterations=params.train_iterations,
    )


class _GrowableInt64:
    """An int64 array with amortised O(1) appends (position → pk)."""

    def __init__(self, initial: NDArray[np.int64]) -> None:
        self._data = np.array(initial, dtype=np.int64, copy=True)
        self._size = len(initial)

    @property
    def values(self) -> NDArray[np.int64]:
        return self._data[: self._size]

    def extend(self, more: NDArray[np.int64]) -> None:
        needed = self._size + len(more)
        if needed > len(self._data):
            grown = np.empty(max(needed, 2 * len(self._data), 1024), dtype=np.int64)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = more
        self._size = needed


class _PkMap:
    """pk → position without a 10M-entry Python dict: sorted arrays plus a small unsorted tail."""

    _MERGE_AT = 4096

    def __init__(self, pks: NDArray[np.int64], positions: NDArray[np.int64]) -> None:
        live = positions >= 0  # popped entries (−1) go at each merge
        pks, positions = pks[live], positions[live]
        order = np.argsort(pks, kind="stable")
        self._pks = pks[order]
        self._positions = positions[order]
        self._tail: dict[int, int] = {}

    @classmethod
    def from_positions(cls, pks_by_position: NDArray[np.int64]) -> _PkMap:
        live = np.flatnonzero(pks_by_position >= 0)
        return cls(pks_by_position[live].astype(np.int64), live.astype(np.int64))

    def add(self, pks: NDArray[np.int64], positions: NDArray[np.int64]) -> None:
        self._tail.update(zip(pks.tolist(), positions.tolist(), strict=True))
        if len(self._tail) >= self._MERGE_AT:
            tail_pks = np.fromiter(self._tail.keys(), dtype=np.int64, count=len(self._tail))
            tail_pos = np.fromiter(self._tail.values(), dtype=np.int64, count=len(self._tail))
            pks = np.concatenate([self._pks, tail_pks])
            merged = _PkMap(pks, np.concatenate([self._positions, tail_pos]))
            self._pks, self._positions, self._tail = merged._pks, merged._positions, {}

    def pop(self, pks: NDArray[np.int64]) -> NDArray[np.int64]:
        """Positions of the pks that are present, removed from the map."""
        found: list[int] = []
        rest = []
        for pk in pks.tolist():
            position = self._tail.pop(pk, None)
            if position is None:
                rest.append(pk)
            else:
                found.append(position)
        if rest and len(self._pks):
            wanted = np.asarray(rest, dtype=np.int64)
            at = np.searchsorted(self._pks, wanted)
            at = at[at < len(self._pks)]
            hit = at[np.isin(self._pks[at], wanted)]
            hit = hit[self._positions[hit] >= 0]
            found.extend(self._positions[hit].tolist())
            self._positions[hit] = -1  # the sorted arrays keep the slot; −1 marks it gone
        return np.asarray(found, dtype=np.int64)
