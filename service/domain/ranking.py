"""Search answers from the index's hits: nearest faces within a distance, or the best subjects.

The index answers face pks by similarity; the store says whose they are (a face deleted meanwhile is
never answered). When too few faces or subjects come back, the index is asked again for more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.domain.faces import squared_distance
from service.index.base import VectorIndex
from service.storage.records import FaceRecord
from service.storage.store import FaceStore


@dataclass(frozen=True, slots=True)
class FaceHit:
    """One face of a face-level search (subject's or free-standing), nearest first."""

    face: FaceRecord
    distance: float  # squared L2 in [0, 4]


@dataclass(frozen=True, slots=True)
class Candidate:
    subject_id: str
    face_id: str
    similarity: float  # cosine
    distance: float  # squared L2 in [0, 4]


def search_faces(
    store: FaceStore,
    indexes: VectorIndex,
    collection_pk: int,
    query: NDArray[np.float32],
    max_faces: int,
    max_distance: float,
    exclude_pk: int | None = None,
) -> list[FaceHit]:
    """The ``max_faces`` nearest faces within ``max_distance`` (squared L2), nearest first: every
    face counts, whoever it belongs to (the per-subject ranking is ``search_subjects``)."""
    after = store.vector_writes.vector_write_ts(collection_pk) if indexes.tracks_writes else 0
    k = min(indexes.max_k, max_faces + (1 if exclude_pk is not None else 0) + 8)
    row = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
    while True:
        sims, pks = indexes.search(collection_pk, row, k, visible_after=after)
        hits = [(int(pk), float(sim)) for pk, sim in zip(pks[0], sims[0], strict=True) if pk >= 0]
        within = [(pk, squared_distance(sim)) for pk, sim in hits if pk != exclude_pk]
        within = [(pk, d) for pk, d in within if d <= max_distance]
        records = store.faces.face_hits([pk for pk, _ in within])
        found = [FaceHit(records[pk], d) for pk, d in within if pk in records]
        exhausted = len(hits) < k or k >= indexes.max_k
        # Hits are nearest first: once one lies beyond max_distance, more would not help.
        beyond = len(within) < len([pk for pk, _ in hits if pk != exclude_pk])
        if len(found) >= max_faces or exhausted or beyond:
            return sorted(found, key=lambda h: h.distance)[:max_faces]
        k = min(indexes.max_k, k * 4)


def search_subjects(
    store: FaceStore, indexes: VectorIndex, collection_pk: int, queries: NDArray[np.float32], top_k: int
) -> list[list[Candidate]]:
    """Per query, the ``top_k`` best subjects, each represented by its closest face."""
    rows = np.atleast_2d(queries)
    if len(rows) == 0:
        return []
    max_k = indexes.max_k
    k = min(max_k, max(top_k * 8, 32))
    # Read-your-writes across replicas: as of the last insert any replica acknowledged.
    after = store.vector_writes.vector_write_ts(collection_pk) if indexes.tracks_writes else 0
    sims, pks = indexes.search(collection_pk, rows, k, visible_after=after)
    return [
        _rank_subjects(store, indexes, collection_pk, row, top_k, k, sims[i], pks[i], after)
        for i, row in enumerate(rows)
    ]


def _rank_subjects(
    store: FaceStore,
    indexes: VectorIndex,
    collection_pk: int,
    query: NDArray[np.float32],
    top_k: int,
    k: int,
    sims: NDArray[np.float32],
    pks: NDArray[np.int64],
    after: int,
) -> list[Candidate]:
    """Best face per subject; asks the index for more faces while subjects are missing."""
    while True:
        hits = [(int(pk), float(sim)) for pk, sim in zip(pks, sims, strict=True) if pk >= 0]
        owners = store.faces.faces_by_pk([pk for pk, _ in hits])
        best: dict[str, Candidate] = {}
        for pk, sim in hits:  # the index returns hits best first
            owner = owners.get(pk)
            if owner is None or owner[1] in best:
                continue
            face_id, subject_id = owner
            distance = squared_distance(sim)
            best[subject_id] = Candidate(subject_id, face_id, float(np.clip(sim, -1.0, 1.0)), distance)
        exhausted = len(hits) < k or k >= indexes.max_k
        if len(best) >= top_k or exhausted:
            return sorted(best.values(), key=lambda c: c.distance)[:top_k]
        k = min(indexes.max_k, k * 4)
        more_sims, more_pks = indexes.search(collection_pk, query[None, :], k, visible_after=after)
        sims, pks = more_sims[0], more_pks[0]
