"""The compressed index's first stage: compact codes that nominate candidates for exact re-ranking.

Two kinds behind one Protocol, chosen by ``FACES_COMPRESSED_INDEX_CODEC``:

- ``PQ4`` (default, ``pq_fastscan``): 4-bit product quantisation over every face, scanned whole with
  FAISS's SIMD fast-scan kernels: 32 bytes a face at 128-d, no cells, so no face is ever outside
  what a query looks at (SFace embeddings have no cell structure for k-means to exploit);
- ``SQ8`` / ``fp16`` (``ivf_training``): an IVF over scalar-quantised codes, scanning ``nprobe`` of
  ``nlist`` k-means cells: faster per query, but the nearest face is missed when its cell is not probed.

Positions are row numbers in the exact-vector file: codes are appended in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from service.index.ivf_training import CODECS, IvfScalarCodes
from service.index.pq_fastscan import PqFastScanCodes

Codec = Literal["PQ4", "SQ8", "fp16"]


class CandidateCodes(Protocol):
    """Approximate codes for every row position; thread-safe for concurrent searches."""

    codec: str

    @property
    def ntotal(self) -> int:
        """Rows coded (live and tombstoned)."""
        ...

    def add(self, vectors: NDArray[np.float32], positions: NDArray[np.int64]) -> None:
        """Codes for new rows; ``positions`` continue from ``ntotal`` (callers hold the write lock)."""
        ...

    def bulk_add(self, vectors: NDArray[np.float32], positions: NDArray[np.int64]) -> None:
        """``add`` for a large block while building (may take a faster path)."""
        ...

    def search(self, queries: NDArray[np.float32], wanted: int) -> NDArray[np.int64]:
        """The ``wanted`` most promising positions per query by the codes (−1 pads)."""
        ...

    def tune(self, nprobe: int) -> None:
        """Change how much of the codes a query reads (cells, for an IVF); no rebuild."""
        ...

    def params(self) -> dict[str, int | str]:
        """What ``GET /v1/collections/{c}`` shows of the codes."""
        ...

    @property
    def nlist(self) -> int:
        """k-means cells (0: no cells, every code is scanned)."""
        ...

    def write(self, path: Path) -> None:
        """The codes to ``path`` (callers write a temp file and rename)."""
        ...


def train_codes(
    codec: Codec,
    dim: int,
    sample: NDArray[np.float32],
    *,
    nlist: int,
    iterations: int,
    seed: int,
    shards: int = 2,
) -> CandidateCodes:
    """Empty codes of ``codec`` trained on ``sample`` (``shards``: PQ4's side-by-side scans)."""
    if codec == "PQ4":
        return PqFastScanCodes.train(dim, sample, shards)
    return IvfScalarCodes.train(dim, codec, sample, nlist=nlist, iterations=iterations, seed=seed)


def read_codes(codec: str, path: Path, *, nprobe: int) -> CandidateCodes:
    """Codes written by ``CandidateCodes.write``."""
    if codec == "PQ4":
        return PqFastScanCodes.read(path)
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec}")
    return IvfScalarCodes.read(codec, path, nprobe=nprobe)
