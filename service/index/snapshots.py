"""The registry's snapshot directory: per collection, a FAISS file and its manifest (exact index), or
the compressed index's codes, pk map, manifest and vector file.

A snapshot is only a head start: it is loaded when its manifest's revision and size match the store's,
otherwise the collection is rebuilt from the store. Every write is atomic (temp file, then rename).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from service.index.base import EmbeddingSource
from service.index.compressed_index import CompressedCollectionIndex, CompressedParams
from service.index.flat_index import CollectionIndex

logger = logging.getLogger(__name__)

AnyCollectionIndex: TypeAlias = CollectionIndex | CompressedCollectionIndex


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    collection_pk: int
    revision: int
    ntotal: int
    dim: int


class SnapshotDir:
    """Where the registry's snapshots live, and how each is read, written and removed."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = directory
        self._dim = dim

    def paths(self, pk: int) -> tuple[Path, Path]:
        """The exact index's FAISS file and its manifest."""
        return self.directory / f"collection-{pk}.faiss", self.directory / f"collection-{pk}.json"

    def compressed_path(self, pk: int) -> Path:
        return self.directory / f"compressed-{pk}.ivf"

    def new_vectors_path(self, pk: int) -> Path:
        """A fresh vector file for a compressed index being built (the one serving keeps its own)."""
        return self.directory / f"compressed-{pk}-{time.time_ns()}.vectors"

    def remove_unused(self, known: Set[int], indexes: Mapping[int, AnyCollectionIndex]) -> None:
        """At start-up, after loading: the files of collections not ``known``, or no index uses, go."""
        for stale in self.directory.glob("collection-*.faiss"):
            if pk_from_name(stale) not in known:
                remove_snapshot(stale)
        in_use = {
            index.vectors_path.name
            for index in indexes.values()
            if isinstance(index, CompressedCollectionIndex)
        }
        for path in self.directory.glob("compressed-*"):
            index = indexes.get(pk_from_name(path))
            compressed = isinstance(index, CompressedCollectionIndex)
            if not compressed or (path.suffix == ".vectors" and path.name not in in_use):
                path.unlink(missing_ok=True)

    def remove(self, pk: int) -> None:
        """Every snapshot file of a dropped collection."""
        for path in self.paths(pk):
            remove_snapshot(path)
        for path in self.directory.glob(f"compressed-{pk}[.-]*"):
            path.unlink(missing_ok=True)

    def load_exact(
        self, pk: int, revision: int, count: int, load: Callable[[Path], CollectionIndex]
    ) -> CollectionIndex | None:
        """The exact index's snapshot when it matches the store (None: rebuild it)."""
        index_path, manifest_path = self.paths(pk)
        if not (index_path.exists() and manifest_path.exists()):
            return None
        try:
            manifest = SnapshotManifest(**json.loads(manifest_path.read_text()))
            if (manifest.revision, manifest.ntotal, manifest.dim) == (revision, count, self._dim):
                index = load(index_path)
                if index.ntotal == count:
                    logger.info("collection %d: loaded snapshot (%d faces, revision %d)", pk, count, revision)
                    return index
            logger.info("collection %d: snapshot stale (store revision %d); rebuilding", pk, revision)
        except (ValueError, TypeError, OSError, RuntimeError) as exc:
            logger.warning("collection %d: unreadable snapshot (%s); rebuilding", pk, exc)
        return None

    def load_compressed(
        self, pk: int, revision: int, count: int, params: CompressedParams, *, search_threads: int
    ) -> CompressedCollectionIndex | None:
        """The compressed index's snapshot when it matches the store (None: rebuild it)."""
        path = self.compressed_path(pk)
        if not path.exists():
            return None
        try:
            index, manifest = CompressedCollectionIndex.load(
                path, self._dim, params, search_threads=search_threads
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

    def save_all(self, indexes: Iterable[tuple[int, AnyCollectionIndex]], store: EmbeddingSource) -> None:
        """Persist every index with the store revision it reflects (on clean shutdown).

        A snapshot is only a head start for the next start-up. When its directory is full (or
        unwritable) the partial files are removed and the shutdown goes on: the old snapshot's
        manifest no longer matches the store's revision, so that collection is rebuilt from the
        store at the next start-up."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error("index snapshot directory %s unusable (%s): no snapshot saved", self.directory, exc)
            return
        for pk, index in indexes:
            revision = store.collection_revision(pk)
            if index.ntotal != store.face_count(pk):
                continue
            try:
                self._save(pk, index, revision)
            except (OSError, RuntimeError) as exc:  # faiss reports a failed write as RuntimeError
                for partial in self.directory.glob("*.tmp*"):  # this shutdown's half-written files
                    partial.unlink(missing_ok=True)
                logger.error(
                    "index snapshot of collection %d not saved in %s (%s); free space there. It is rebuilt "
                    "from the store at the next start-up.",
                    pk,
                    self.directory,
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
                )

    def _save(self, pk: int, index: AnyCollectionIndex, revision: int) -> None:
        index_path, manifest_path = self.paths(pk)
        if isinstance(index, CompressedCollectionIndex):
            index.save(self.compressed_path(pk), index.manifest(pk, revision))
            for path in self.paths(pk):
                remove_snapshot(path)
            return
        index.save(index_path)
        manifest = SnapshotManifest(pk, revision, index.ntotal, self._dim)
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(manifest)))
        tmp.replace(manifest_path)


def discard_replaced(previous: AnyCollectionIndex | None, replacement: AnyCollectionIndex | None) -> None:
    """A replaced compressed index's vector file goes, unless the replacement uses the same file."""
    if not isinstance(previous, CompressedCollectionIndex):
        return
    same_file = isinstance(replacement, CompressedCollectionIndex) and (
        replacement.vectors_path == previous.vectors_path
    )
    if not same_file:
        previous.discard()


def pk_from_name(path: Path) -> int:
    """collection-7.faiss, compressed-7.ivf, compressed-7.pks.npy, compressed-7-<ns>.vectors → 7."""
    try:
        return int(path.name.split("-", 2)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return -1


def remove_snapshot(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
