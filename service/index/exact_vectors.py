"""The compressed index's exact fp32 vectors, in a file beside its snapshot, and the bookkeeping that maps
a row position to its face pk and back (sized for 10M faces: arrays, not Python dicts).
"""

from __future__ import annotations

import mmap
import os
import weakref
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

_ROW_BYTES = 4  # float32


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


class GrowableInt64:
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


class PkMap:
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
    def from_positions(cls, pks_by_position: NDArray[np.int64]) -> PkMap:
        live = np.flatnonzero(pks_by_position >= 0)
        return cls(pks_by_position[live].astype(np.int64), live.astype(np.int64))

    def add(self, pks: NDArray[np.int64], positions: NDArray[np.int64]) -> None:
        self._tail.update(zip(pks.tolist(), positions.tolist(), strict=True))
        if len(self._tail) >= self._MERGE_AT:
            tail_pks = np.fromiter(self._tail.keys(), dtype=np.int64, count=len(self._tail))
            tail_pos = np.fromiter(self._tail.values(), dtype=np.int64, count=len(self._tail))
            pks = np.concatenate([self._pks, tail_pks])
            merged = PkMap(pks, np.concatenate([self._positions, tail_pos]))
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
