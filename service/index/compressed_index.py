"""A compressed index for big collections: compact codes nominate candidates, which are re-ranked with
the exact vectors, so every returned similarity is the exact fp32 inner product.

Why: an exact scan streams all N×128×4 bytes per query (1M faces: 512 MB, ~40 ms on one core; 10M:
~400 ms and 4.9 GiB of RAM). Here a query scans compact codes (``candidate_codes``: 4-bit PQ fast
scan by default, 32 bytes a face; or an IVF over 8-bit codes), takes the ``rerank`` best approximate
candidates and computes their exact inner products from the fp32 vectors, which live in a file next
to the snapshot and are read through a read-only memory map: only the few pages re-ranking touches
become resident (file-backed, evictable memory), so a 10M collection holds ~0.3 GB of codes in RAM,
not 4.9 GB of vectors.

The codes' labels are row positions in the vector file; ``_pks`` maps a position to the face pk (−1:
deleted). A delete is a tombstone (O(1), never a scan of every list); the rows are dropped for good
when the index is rebuilt (``compact``: the registry rebuilds when tombstones pass a quarter).
The vector file and the position/pk maps are in ``exact_vectors``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

from service.index.base import IndexInfo, ReadWriteLock, SearchHits, as_unit_rows, no_hits
from service.index.candidate_codes import CandidateCodes, Codec, read_codes, train_codes
from service.index.exact_vectors import ExactVectors, GrowableInt64, PkMap
from service.index.ivf_training import default_nlist

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompressedParams:
    """How the compressed index is built and searched (``Settings.compressed_index_*``)."""

    codec: Codec = "PQ4"
    nlist: int = 0  # IVF codecs: 0 = default_nlist(size at training)
    nprobe: int = 128  # IVF codecs: cells scanned per query
    rerank: int = 256  # approximate candidates re-ranked exactly per query (at least 4×k)
    train_sample: int = 100_000  # vectors k-means trains on (at least 39×nlist are used)
    train_iterations: int = 10
    shards: int = 2  # PQ4: codes scanned side by side per query (use the cores a lone query leaves idle)


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


class CompressedCollectionIndex:
    """Candidate codes + exact re-ranking for one collection; thread-safe, searches run concurrently."""

    kind = "compressed"

    def __init__(
        self,
        dim: int,
        codes: CandidateCodes,
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
        self._codes = codes
        self._codes.tune(params.nprobe)
        self._vectors = vectors
        self._pks = GrowableInt64(pks)
        self._live = int(np.count_nonzero(pks >= 0))
        self._by_pk = PkMap.from_positions(pks)
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
        """Streams ``batches`` into the vector file, trains the codes on a sample, then adds them.

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
        nlist = (params.nlist or default_nlist(n)) if params.codec != "PQ4" else 0
        sample_size = min(n, max(params.train_sample, 39 * nlist))
        rng = np.random.default_rng(seed)
        sample_rows = np.sort(rng.choice(n, size=sample_size, replace=False)) if n else np.zeros(0, np.int64)
        sample = vectors.take(sample_rows) if n else np.zeros((0, dim), dtype=np.float32)
        codes = train_codes(
            params.codec,
            dim,
            sample,
            nlist=nlist,
            iterations=params.train_iterations,
            seed=seed,
            shards=params.shards,
        )
        del sample
        trained_s = time.perf_counter() - started
        chunk = 65_536
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            codes.bulk_add(vectors.read(start, stop), np.arange(start, stop, dtype=np.int64))
        logger.info(
            "compressed index: %d faces, %s nlist=%d trained on %d in %.1fs, built in %.1fs",
            n,
            params.codec,
            nlist,
            sample_size,
            trained_s,
            time.perf_counter() - started,
        )
        return cls(dim, codes, vectors, pks, params, trained_on=sample_size, search_threads=search_threads)

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
            self._codes.add(rows, positions)
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
            positions = self._codes.search(queries, wanted)
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
            self._codes.tune(nprobe)

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
                **self._codes.params(),
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
            self._codes.write(tmp)
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
                self._codes.codec,
                self._codes.nlist,
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
        codes = read_codes(manifest.codec, index_path, nprobe=params.nprobe)
        pks = np.load(index_path.with_suffix(".pks.npy"))
        if len(pks) != manifest.rows or codes.ntotal != manifest.rows:
            raise ValueError("compressed snapshot: codes, pks and manifest disagree")
        vectors = ExactVectors(index_path.parent / manifest.vectors_file, dim, rows=manifest.rows)
        loaded = cls(
            dim,
            codes,
            vectors,
            np.asarray(pks, dtype=np.int64),
            dataclasses.replace(params, codec=codes.codec),  # type: ignore[arg-type]
            trained_on=trained_on,
            search_threads=search_threads,
        )
        return loaded, manifest

    def discard(self) -> None:
        """This index was replaced or dropped: its vector file goes (open maps stay readable)."""
        self._vectors.discard()
