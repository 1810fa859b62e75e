"""Unit-length rows: the one normaliser for the model's embeddings and for what the indexes take in.

Every distance in the service is d² = 2 − 2·cos between unit vectors, so each vector is scaled to
unit length once here, wherever it comes from (a zero row stays zero rather than becoming NaN).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def as_unit_rows(vectors: NDArray[np.float32], dim: int) -> NDArray[np.float32]:
    """C-contiguous float32 rows (a copy) scaled to unit length (inner product = cosine)."""
    array = np.array(vectors, dtype=np.float32, copy=True).reshape(-1, dim)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    np.divide(array, norms, out=array, where=norms > 0)
    return np.ascontiguousarray(array)
