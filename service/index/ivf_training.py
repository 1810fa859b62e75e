"""Building the compressed index's IVF: the cell count, spherical k-means on a sample (numpy BLAS), the
scalar quantiser, and bulk adds with the cells assigned by matrix products.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

CODECS: dict[str, int] = {"SQ8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}


def default_nlist(n: int) -> int:
    """k-means cells: the power of two nearest √n / 1.5, within [64, 8192] (1M → 512, 10M → 2048).

    Fewer, fuller cells than the usual 4·√n: every add assigns its vector by a flat scan of the
    centroids, and on two cores that scan, not the cell scan, is what bounds the build time."""
    target = max(1.0, math.sqrt(max(n, 1)) / 1.5)
    return int(min(8192, max(64, 2 ** round(math.log2(target)))))


def new_ivf(dim: int, nlist: int, codec: str) -> Any:
    quantizer = faiss.IndexFlatIP(dim)
    metric = faiss.METRIC_INNER_PRODUCT
    ivf: Any = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, CODECS[codec], metric)
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


class IvfScalarCodes:
    """``candidate_codes.CandidateCodes`` over an IVF of scalar-quantised codes (ids: row positions)."""

    def __init__(self, codec: str, ivf: Any, *, nprobe: int) -> None:
        self.codec = codec
        self._ivf = ivf
        self._ivf.nprobe = min(nprobe, int(ivf.nlist))

    @classmethod
    def train(
        cls, dim: int, codec: str, sample: NDArray[np.float32], *, nlist: int, iterations: int, seed: int
    ) -> IvfScalarCodes:
        ivf = new_ivf(dim, nlist, codec)
        train_ivf(ivf, sample, iterations, seed)
        return cls(codec, ivf, nprobe=1)

    @classmethod
    def read(cls, codec: str, path: Path, *, nprobe: int) -> IvfScalarCodes:
        return cls(codec, faiss.read_index(str(path)), nprobe=nprobe)

    @property
    def ntotal(self) -> int:
        return int(self._ivf.ntotal)

    @property
    def nlist(self) -> int:
        return int(self._ivf.nlist)

    def add(self, vectors: NDArray[np.float32], positions: NDArray[np.int64]) -> None:
        self._ivf.add_with_ids(vectors, positions)

    def bulk_add(self, vectors: NDArray[np.float32], positions: NDArray[np.int64]) -> None:
        add_assigned(self._ivf, vectors, positions)

    def search(self, queries: NDArray[np.float32], wanted: int) -> NDArray[np.int64]:
        _, positions = self._ivf.search(queries, wanted)
        return np.asarray(positions, dtype=np.int64)

    def tune(self, nprobe: int) -> None:
        self._ivf.nprobe = min(nprobe, self.nlist)

    def params(self) -> dict[str, int | str]:
        return {"codec": self.codec, "nlist": self.nlist, "nprobe": int(self._ivf.nprobe)}

    def write(self, path: Path) -> None:
        faiss.write_index(self._ivf, str(path))
